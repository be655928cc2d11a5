package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
)

// WriteJSON writes r to path, indented.
func WriteJSON(path string, r *Result) error {
	data, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(data, '\n'), 0o644)
}

// ReadJSON reads a Result written by WriteJSON.
func ReadJSON(path string) (*Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r := new(Result)
	if err := json.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// WriteText writes r as a human-readable table.
func WriteText(w io.Writer, r *Result) {
	proto := "HTTP/1.1"
	switch {
	case r.HTTP2:
		proto = "HTTP/2"
	case r.HTTP3:
		proto = "HTTP/3"
	}
	dist := r.Dist
	if r.Dist == DistZipf {
		dist = fmt.Sprintf("zipf s=%g", r.ZipfS)
	}
	curves := "crypto/tls defaults"
	if len(r.Curves) > 0 {
		curves = strings.Join(r.Curves, ",")
	}
	if r.Label != "" || r.Scenario != "" {
		fmt.Fprintf(w, "%s  %s\n", r.Label, r.Scenario)
	}
	unit := "req/s"
	if r.Mode == ModeKeyless {
		unit = "signatures/s"
		fmt.Fprintf(w, "edgebench keyless to key server %s: %s key, concurrency %d\n", r.Addr, r.SignKey, r.Concurrency)
	} else {
		fmt.Fprintf(w, "edgebench %s (%s) to %s: %d names (%s, seed %d), concurrency %d, curves %s\n",
			r.Mode, proto, r.Addr, r.Names, dist, r.Seed, r.Concurrency, curves)
	}
	row := func(k, format string, a ...any) { fmt.Fprintf(w, "  %-14s %s\n", k, fmt.Sprintf(format, a...)) }
	if r.TLSVersion != "" || len(r.AcceptedCertKeys) > 0 {
		row("client offers", "%s; accepts certificate keys %s", cmp.Or(r.TLSVersion, "TLS 1.2 and 1.3"),
			cmp.Or(strings.Join(r.AcceptedCertKeys, ", "), "any"))
	}
	row("wall time", "%.2f s", r.Seconds)
	row("requests", "%d ok, %d errors, %d aborted", r.Requests, r.Errs(), r.Aborted)
	row("rate", "%.1f %s", r.Rate, unit)
	var errs []string
	for _, k := range ErrorKinds {
		errs = append(errs, fmt.Sprintf("%s %d", k, r.Errors[k]))
	}
	row("errors", "%s", strings.Join(errs, ", "))
	if len(r.Statuses) > 0 {
		var ss []string
		for _, code := range slices.Sorted(maps.Keys(r.Statuses)) {
			ss = append(ss, fmt.Sprintf("%d ×%d", code, r.Statuses[code]))
		}
		row("statuses", "%s", strings.Join(ss, ", "))
	}
	row("latency ms", "%s", percentileRow(r.Latency))
	row("handshake ms", "%s", percentileRow(r.Handshake))
	if r.Mode != ModeKeyless {
		row("handshakes", "%d (%.1f/s): %s; %s; %s; certificates %s", r.Handshakes, r.HandshakeRate,
			countList(r.Groups), countList(r.Versions), countList(r.Protocols), countList(r.CertKeys))
	}
	if r.Mode == ModeResumed {
		row("resumed", "%d of %d handshakes (%.1f%%); %d offered a session", r.Resumed, r.Handshakes, 100*r.ResumedShare, r.ResumeOffered)
	}
	if len(r.ServerPIDs) > 0 {
		row("server cpu", "%.2f s (%.2f cores, pids %v): %.0f requests and %.0f handshakes per server CPU-second",
			r.ServerCPU, r.ServerCores, r.ServerPIDs, r.RequestsPerServerCPU, r.HandshakesPerServerCPU)
	}
	if r.OriginCPU > 0 {
		row("origin cpu", "%.2f s (%.2f cores)", r.OriginCPU, r.OriginCPU/r.Seconds)
	}
	row("client cpu", "%.2f s (%.2f cores, GOMAXPROCS %d)", r.ClientCPU, r.ClientCores, r.ClientProcs)
	if len(r.CPUs) > 0 {
		var cs []string
		for _, c := range r.CPUs {
			cs = append(cs, fmt.Sprintf("%s %.0f%% (softirq %.0f%%)", c.CPU, 100*c.Busy, 100*c.Softirq))
		}
		row("cpus busy", "%s; other processes %.2f cores", strings.Join(cs, ", "), r.OtherCores)
	}
	for _, k := range slices.Sorted(maps.Keys(r.Metrics)) {
		if strings.HasSuffix(k, "_sum") {
			row("server metric", "%s +%.4g", k, r.Metrics[k])
		} else {
			row("server metric", "%s +%.0f", k, r.Metrics[k])
		}
	}
	for _, k := range ErrorKinds {
		if s, ok := r.ErrorSamples[k]; ok {
			row("first "+k, "%s", s)
		}
	}
	for _, s := range r.Warnings {
		row("warning", "%s", s)
	}
}

func percentileRow(p Percentiles) string {
	if p.Count == 0 {
		return "(none)"
	}
	return fmt.Sprintf("p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (mean %.3f, n=%d)",
		p.P50, p.P90, p.P99, p.P999, p.Max, p.Mean, p.Count)
}

// countList formats a count map, largest first.
func countList(m map[string]int64) string {
	if len(m) == 0 {
		return "none"
	}
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b))
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

// spread is the median, minimum and maximum of some runs' figures.
type spread struct{ med, lo, hi float64 }

func spreadOf(xs []float64) spread {
	if len(xs) == 0 {
		return spread{}
	}
	s := slices.Sorted(slices.Values(xs))
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return spread{med, s[0], s[n-1]}
}

func (s spread) format(prec int) string {
	return fmt.Sprintf("%.*f (%.*f–%.*f)", prec, s.med, prec, s.lo, prec, s.hi)
}

// groupRuns groups results by scenario and label, scenarios in the order
// they first appear, labels within a scenario likewise.
func groupRuns(results []*Result) []*group {
	var groups []*group
	find := func(r *Result) *group {
		for _, g := range groups {
			if g.scenario == r.Scenario && g.label == r.Label {
				return g
			}
		}
		g := &group{scenario: r.Scenario, label: r.Label}
		groups = append(groups, g)
		return g
	}
	for _, r := range results {
		g := find(r)
		g.runs = append(g.runs, r)
	}
	order := make(map[string]int)
	for i, g := range groups {
		if _, ok := order[g.scenario]; !ok {
			order[g.scenario] = i
		}
	}
	slices.SortStableFunc(groups, func(a, b *group) int {
		return cmp.Compare(order[a.scenario], order[b.scenario])
	})
	return groups
}

func rate(r *Result) float64 { return r.Rate }

// perCPU is what a run made per server CPU-second: handshakes in the
// handshake modes, requests (signatures) in the others.
func perCPU(r *Result) float64 {
	if r.Mode == ModeHandshake || r.Mode == ModeResumed {
		return r.HandshakesPerServerCPU
	}
	return r.RequestsPerServerCPU
}

// group is the runs of one scenario and label.
type group struct {
	scenario, label string
	runs            []*Result
}

func (g *group) figure(f func(*Result) float64) spread {
	xs := make([]float64, len(g.runs))
	for i, r := range g.runs {
		xs[i] = f(r)
	}
	return spreadOf(xs)
}

// cpusBusy is the median busy share of each CPU over the runs.
func (g *group) cpusBusy() string {
	var names []string
	for _, r := range g.runs {
		for _, c := range r.CPUs {
			if !slices.Contains(names, c.CPU) {
				names = append(names, c.CPU)
			}
		}
	}
	var parts []string
	for _, name := range names {
		s := g.figure(func(r *Result) float64 {
			for _, c := range r.CPUs {
				if c.CPU == name {
					return c.Busy
				}
			}
			return 0
		})
		parts = append(parts, fmt.Sprintf("%s %.0f%%", name, 100*s.med))
	}
	if len(parts) == 0 {
		return "–"
	}
	return strings.Join(parts, ", ")
}

// Summarize writes a markdown table of runs grouped by scenario and
// label, in the order they first appear: the median of each figure and,
// for rates, the min–max spread over the runs. Then, per scenario, the
// ratio of every other label's medians to the first label's.
//
// With maxOther > 0, runs during which other processes used more than
// maxOther cores (Result.OtherCores) are left out of their group's
// figures, unless every run of the group was; the runs column says how
// many were kept, and the runs left out are listed after the tables.
func Summarize(w io.Writer, results []*Result, maxOther float64) {
	runsOf := func(g *group) string { return fmt.Sprint(len(g.runs)) }
	var disturbed []*Result
	if maxOther > 0 {
		key := func(r *Result) [2]string { return [2]string{r.Scenario, r.Label} }
		hasQuiet := make(map[[2]string]bool)
		for _, r := range results {
			if r.OtherCores <= maxOther {
				hasQuiet[key(r)] = true
			} else {
				disturbed = append(disturbed, r)
			}
		}
		// A group whose runs were all disturbed keeps them all.
		var quiet []*Result
		for _, r := range results {
			if r.OtherCores <= maxOther || !hasQuiet[key(r)] {
				quiet = append(quiet, r)
			}
		}
		totals := make(map[[2]string]int)
		for _, r := range results {
			totals[[2]string{r.Scenario, r.Label}]++
		}
		kept := quiet
		defer func() {
			if len(disturbed) == 0 {
				return
			}
			fmt.Fprintf(w, "\nRuns during which other processes used more than %.2f cores:\n\n", maxOther)
			for _, r := range disturbed {
				note := "left out"
				if slices.Contains(kept, r) {
					note = "kept: every run of its group was disturbed"
				}
				fmt.Fprintf(w, "- %s, %s, started %s: %.2f cores, %.0f req/s (%s)\n", r.Scenario, r.Label,
					r.Start.UTC().Format("15:04:05"), r.OtherCores, r.Rate, note)
			}
		}()
		results = quiet
		runsOf = func(g *group) string {
			return fmt.Sprintf("%d of %d", len(g.runs), totals[[2]string{g.scenario, g.label}])
		}
	}
	groups := groupRuns(results)
	fmt.Fprintln(w, "| scenario | label | runs | req/s median (min–max) | per server CPU-s median (min–max) | server cores | client cores | CPUs busy | other load (cores) | handshake p50 / p99 ms | request p50 / p99 ms | group | certificate | resumed | keystore misses/run | errors |")
	fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---|---:|---:|---:|")
	for _, g := range groups {
		hs := "–"
		if m := g.runs[0].Mode; m == ModeHandshake || m == ModeResumed {
			hs = fmt.Sprintf("%.2f / %.2f", g.figure(func(r *Result) float64 { return r.Handshake.P50 }).med,
				g.figure(func(r *Result) float64 { return r.Handshake.P99 }).med)
		}
		var errs int64
		groupsSeen, certsSeen := make(map[string]int64), make(map[string]int64)
		for _, r := range g.runs {
			errs += r.Errs()
			for k, v := range r.Groups {
				groupsSeen[k] += v
			}
			for k, v := range r.CertKeys {
				certsSeen[k] += v
			}
		}
		resumed := "–"
		if g.runs[0].Mode == ModeResumed {
			resumed = fmt.Sprintf("%.0f%%", 100*g.figure(func(r *Result) float64 { return r.ResumedShare }).med)
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %.2f | %.2f | %s | %.2f | %s | %.2f / %.2f | %s | %s | %s | %.0f | %d |\n",
			g.scenario, g.label, runsOf(g),
			g.figure(rate).format(0), g.figure(perCPU).format(0),
			g.figure(func(r *Result) float64 { return r.ServerCores }).med,
			g.figure(func(r *Result) float64 { return r.ClientCores }).med,
			g.cpusBusy(),
			g.figure(func(r *Result) float64 { return r.OtherCores }).med,
			hs,
			g.figure(func(r *Result) float64 { return r.Latency.P50 }).med,
			g.figure(func(r *Result) float64 { return r.Latency.P99 }).med,
			shareList(groupsSeen), shareList(certsSeen), resumed,
			g.figure(func(r *Result) float64 { return r.Metrics[`keyedge_keystore_lookups_total{result="miss"}`] }).med,
			errs)
	}

	var ratios []string
	first := make(map[string]*group)
	for _, g := range groups {
		base, ok := first[g.scenario]
		if !ok {
			first[g.scenario] = g
			continue
		}
		ratio := func(f func(*Result) float64) string {
			b := base.figure(f).med
			if b == 0 {
				return "–"
			}
			return fmt.Sprintf("%.3f", g.figure(f).med/b)
		}
		ratios = append(ratios, fmt.Sprintf("| %s | %s / %s | %s | %s | %s | %s |", g.scenario, g.label, base.label,
			ratio(rate), ratio(perCPU),
			ratio(func(r *Result) float64 { return r.Latency.P50 }),
			ratio(func(r *Result) float64 { return r.Latency.P99 })))
	}
	if len(ratios) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "| scenario | ratio of medians | req/s | per server CPU-s | request p50 | request p99 |")
		fmt.Fprintln(w, "|---|---|---:|---:|---:|---:|")
		for _, l := range ratios {
			fmt.Fprintln(w, l)
		}
	}
}

// shareList formats the groups negotiated with their share, largest first.
func shareList(m map[string]int64) string {
	var total int64
	for _, v := range m {
		total += v
	}
	if total == 0 {
		return "none"
	}
	keys := slices.SortedFunc(maps.Keys(m), func(a, b string) int {
		return cmp.Or(cmp.Compare(m[b], m[a]), cmp.Compare(a, b))
	})
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %.0f%%", k, 100*float64(m[k])/float64(total)))
	}
	return strings.Join(parts, ", ")
}
