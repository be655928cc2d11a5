package main

import (
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"time"
)

type results struct {
	Label      string    `json:"label,omitempty"`
	Keystore   string    `json:"keystore"`
	Names      int       `json:"names"`
	GoVersion  string    `json:"go_version"`
	GOMAXPROCS int       `json:"gomaxprocs"`
	Start      time.Time `json:"start"`
	Seconds    float64   `json:"seconds"`
	LoadAvg    [2]string `json:"loadavg"` // /proc/loadavg at start and end
	// OtherCPU is, per step, the CPU time other processes used, as a
	// percentage of the machine's capacity: other work skews every figure.
	OtherCPU  map[string]float64 `json:"other_cpu_percent"`
	Attempts  map[string]int     `json:"attempts"` // per step; above 1 when a step was disturbed
	Open      openResult         `json:"open"`
	Cold      coldResult         `json:"cold"`
	ColdDisk  *coldResult        `json:"cold_disk,omitempty"`
	Warm      warmResult         `json:"warm"`
	ColdSign  signResult         `json:"cold_sign"`
	ColdSignD *signResult        `json:"cold_sign_disk,omitempty"`
	Heap      heapResult         `json:"heap"`
	Notes     []string           `json:"notes,omitempty"`
}

// dist summarises latencies in nanoseconds (nearest-rank percentiles).
type dist struct {
	N      int     `json:"n"`
	MeanNs float64 `json:"mean_ns"`
	P50Ns  int64   `json:"p50_ns"`
	P90Ns  int64   `json:"p90_ns"`
	P99Ns  int64   `json:"p99_ns"`
	MaxNs  int64   `json:"max_ns"`
}

func summarise(ds []time.Duration) dist {
	if len(ds) == 0 {
		return dist{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	rank := func(q float64) int64 { return int64(s[max(int(math.Ceil(q*float64(len(s))))-1, 0)]) }
	return dist{N: len(s), MeanNs: float64(sum) / float64(len(s)), P50Ns: rank(.50), P90Ns: rank(.90), P99Ns: rank(.99), MaxNs: int64(s[len(s)-1])}
}

func (b *bench) print(w io.Writer) {
	r := &b.res
	fmt.Fprintf(w, "keystore %s: %d tenants; %s, GOMAXPROCS %d; %.1fs\n", r.Keystore, r.Names, r.GoVersion, r.GOMAXPROCS, r.Seconds)
	if r.Label != "" {
		fmt.Fprintf(w, "label: %s\n", r.Label)
	}
	fmt.Fprintf(w, "load average: %s at start, %s at end\n", r.LoadAvg[0], r.LoadAvg[1])
	fmt.Fprintf(w, "CPU used by other processes, %% of the machine (attempts):")
	for _, st := range slices.Sorted(maps.Keys(r.OtherCPU)) {
		fmt.Fprintf(w, " %s %.1f (%d);", st, r.OtherCPU[st], r.Attempts[st])
	}
	fmt.Fprintln(w)
	pc := "page cache warm"
	if b.cfg.dropCaches {
		pc = "page cache warm (a second run with it dropped is below)"
	}
	fmt.Fprintf(w, "cold figures: %s\n\n", pc)
	fmt.Fprintf(w, "%-46s %10s %10s %10s %10s %10s\n", "figure", "p50", "p90", "p99", "max", "mean")
	row := func(name string, d dist) {
		fmt.Fprintf(w, "%-46s %10s %10s %10s %10s %10s\n", name, fmtNs(d.P50Ns), fmtNs(d.P90Ns), fmtNs(d.P99Ns), fmtNs(d.MaxNs), fmtNs(d.MeanNs))
	}
	o := r.Open
	fmt.Fprintf(w, "%-46s %10s %10s %10s %10s %10s\n", fmt.Sprintf("Open (%d runs; p50 = median)", o.Runs), fmtNs(o.MedianNs), "", "", fmtNs(o.MaxNs), "")
	fmt.Fprintf(w, "%-46s %10s\n", "Open, first of the process", fmtNs(o.FirstNs))
	if o.AfterDropNs != 0 {
		fmt.Fprintf(w, "%-46s %10s\n", "Open, page cache dropped", fmtNs(o.AfterDropNs))
	}
	row(fmt.Sprintf("cold lookup, page cache warm (n=%d)", r.Cold.Lookup.N), r.Cold.Lookup)
	if r.ColdDisk != nil {
		row(fmt.Sprintf("cold lookup, page cache dropped (n=%d)", r.ColdDisk.Lookup.N), r.ColdDisk.Lookup)
		if r.ColdDisk.DiskReads > 0 {
			fmt.Fprintf(w, "  %.1f disk reads per lookup\n", r.ColdDisk.DiskReads)
		}
	}
	wm := r.Warm
	fmt.Fprintf(w, "%-46s %10s %10s %10s %10s %10s\n", fmt.Sprintf("warm lookup (batches of %d, %d names)", wm.BatchSize, wm.Names),
		fmtNs(wm.BatchP50Ns), "", fmtNs(wm.BatchP99Ns), fmtNs(wm.BatchMaxNs), fmtNs(wm.MeanNs))
	fmt.Fprintf(w, "%-46s %10s %10s %10s %10s %10s\n", fmt.Sprintf("warm lookup, %d goroutines (wall / lookups)", wm.Goroutines), "", "", "", "", fmtNs(wm.ParallelNsOp))
	for _, sr := range []*signResult{&r.ColdSign, r.ColdSignD} {
		if sr == nil {
			continue
		}
		pc := "page cache " + sr.PageCache
		row(fmt.Sprintf("cold lookup+key+sign, %s (n=%d)", pc, sr.Total.N), sr.Total)
		row("  of which lookup", sr.Lookup)
		row("  of which PrivateKey (read, unseal, parse)", sr.KeyOpen)
		row("  of which ECDSA P-256 sign", sr.Sign)
		if sr.DiskReads > 0 {
			fmt.Fprintf(w, "  %.1f disk reads per lookup+key+sign\n", sr.DiskReads)
		}
	}
	h := r.Heap
	fmt.Fprintf(w, "\nwarm lookup allocations: %.1f allocs, %.0f B per lookup\n", wm.AllocsPerOp, wm.BytesPerOp)
	fmt.Fprintf(w, "heap: %d ECDSA tenants cached (%d certs, %d names; filled in %s): %s live heap, %s per tenant\n",
		h.Tenants, h.CertEntries, h.NameEntries, fmtNs(h.LoadNs), fmtBytes(float64(h.HeapDeltaBytes)), fmtBytes(h.BytesPerTenant))
	fmt.Fprintf(w, "      Cert.size() estimate (cache_bytes gauge / certs): %s per cert (measured minus estimate: %+.0f B)\n",
		fmtBytes(h.EstBytesPerCert), h.BytesPerTenant-h.EstBytesPerCert)
	if h.KeyTenants > 0 {
		fmt.Fprintf(w, "      opened private key: +%s per tenant (%d tenants), not counted by Cert.size()\n", fmtBytes(h.KeyBytesPerTen), h.KeyTenants)
	}
	fmt.Fprintf(w, "      process RSS: %s with the empty Store, %s with the tenants and keys loaded\n", fmtBytes(float64(h.RSSBeforeBytes)), fmtBytes(float64(h.RSSAfterBytes)))
	for _, n := range r.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
	// One line for scripts: figures in ns and bytes.
	fmt.Fprintf(w, "summary: tenants=%d open_median_ns=%d open_first_ns=%d cold_p50_ns=%d cold_p99_ns=%d", r.Names, o.MedianNs, o.FirstNs, r.Cold.Lookup.P50Ns, r.Cold.Lookup.P99Ns)
	if r.ColdDisk != nil {
		fmt.Fprintf(w, " open_dropped_ns=%d cold_disk_p50_ns=%d cold_disk_p99_ns=%d cold_disk_reads=%.2f", o.AfterDropNs, r.ColdDisk.Lookup.P50Ns, r.ColdDisk.Lookup.P99Ns, r.ColdDisk.DiskReads)
	}
	fmt.Fprintf(w, " warm_mean_ns=%.0f warm_batch_p99_ns=%.0f warm_parallel_ns=%.0f sign_p50_ns=%d sign_p99_ns=%d heap_bytes_per_tenant=%.0f est_bytes_per_cert=%.0f key_bytes_per_tenant=%.0f\n",
		wm.MeanNs, wm.BatchP99Ns, wm.ParallelNsOp, r.ColdSign.Total.P50Ns, r.ColdSign.Total.P99Ns, h.BytesPerTenant, h.EstBytesPerCert, h.KeyBytesPerTen)
}

func fmtNs[T int64 | float64](v T) string {
	ns := float64(v)
	switch {
	case ns == 0:
		return "-"
	case ns < 1e3:
		return fmt.Sprintf("%.0f ns", ns)
	case ns < 1e6:
		return fmt.Sprintf("%.1f µs", ns/1e3)
	case ns < 1e9:
		return fmt.Sprintf("%.2f ms", ns/1e6)
	}
	return fmt.Sprintf("%.2f s", ns/1e9)
}

func fmtBytes(v float64) string {
	switch {
	case v >= 1<<30:
		return fmt.Sprintf("%.2f GiB", v/(1<<30))
	case v >= 1<<20:
		return fmt.Sprintf("%.1f MiB", v/(1<<20))
	case v >= 1<<10:
		return fmt.Sprintf("%.2f KiB", v/(1<<10))
	}
	return fmt.Sprintf("%.0f B", v)
}
