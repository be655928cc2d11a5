package keystore_test

// Benchmarks of the read path on a real file system. bench/keystore.sh
// measures the same figures over a 1,000,000-tenant keystore; see
// bench/RESULTS.md.
//
//	go test -run '^$' -bench . ./keystore

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/bulkfile"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

const benchDomain = "keyedge.test"

// generated returns a fixture holding n ECDSA P-256 tenants named
// t<i>.keyedge.test, written with testpki.CA.GenerateTenants through bulk
// (unsynced) storage, and their names in a fixed random order. Every
// file is then read once, so they are in the page cache as for a node
// that has served them before, and the first read after writing (which
// under relatime also updates the inode's atime) is not timed.
func generated(b *testing.B, n int) (*fixture, []string) {
	b.Helper()
	f := newFixture(b)
	bulk := bulkfile.New(f.dir)
	w := f.open(b, keystore.Options{Storage: bulk})
	spec := testpki.TenantSpec{Count: n, Domain: benchDomain, Origin: "http://127.0.0.1:1"}
	if err := f.ca.GenerateTenants(context.Background(), w, spec, nil); err != nil {
		b.Fatal(err)
	}
	if err := bulk.Sync(); err != nil {
		b.Fatal(err)
	}
	w.Close()
	err := filepath.WalkDir(f.dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			_, err = os.ReadFile(path)
		}
		return err
	})
	if err != nil {
		b.Fatal(err)
	}
	names := make([]string, n)
	for i := range names {
		names[i] = testpki.TenantName(i, benchDomain)
	}
	mrand.New(mrand.NewPCG(1, 2)).Shuffle(n, func(i, j int) { names[i], names[j] = names[j], names[i] })
	return f, names
}

// metricSum sums the samples of a counter or gauge family carrying the
// label name=value (all samples when name is ""). Gathering runs the
// caches' pending maintenance first.
func metricSum(b testing.TB, reg *prometheus.Registry, family, name, value string) float64 {
	b.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		b.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != family {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := name == ""
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == name && l.GetValue() == value
			}
			if match {
				sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

// coldStores opens Stores on f so that every lookup of a name in names
// misses: a new Store (opened with the timer stopped) after each pass.
// The previous Store is closed, or kept (with its cache) if keep is set.
type coldStores struct {
	b      *testing.B
	f      *fixture
	names  []string
	opts   keystore.Options
	keep   bool
	s      *keystore.Store
	regs   []*prometheus.Registry
	next   int
	stores []*keystore.Store
}

// name returns the next name to look up, and the Store it has not been
// looked up on.
func (c *coldStores) name() (*keystore.Store, string) {
	if c.s == nil || c.next == len(c.names) {
		c.b.StopTimer()
		if c.s != nil && !c.keep {
			c.s.Close()
			c.stores = c.stores[:0]
		}
		opts := c.opts
		opts.Registerer = prometheus.NewRegistry()
		c.regs = append(c.regs, opts.Registerer.(*prometheus.Registry))
		c.s = c.f.open(c.b, opts)
		c.stores = append(c.stores, c.s)
		c.next = 0
		c.b.StartTimer()
	}
	c.next++
	return c.s, c.names[c.next-1]
}

// checkMisses fails the benchmark unless every one of n lookups was a
// miss, i.e. read the name file and the record from storage.
func (c *coldStores) checkMisses(n int) {
	var misses, hits float64
	for _, reg := range c.regs {
		misses += metricSum(c.b, reg, "keyedge_keystore_lookups_total", "result", "miss")
		hits += metricSum(c.b, reg, "keyedge_keystore_lookups_total", "result", "hit")
	}
	if int(misses) != n || hits != 0 {
		c.b.Fatalf("%d lookups: %v misses, %v hits; a cold benchmark must miss every time", n, misses, hits)
	}
}

// BenchmarkLookupWarm looks up names that are cached: no storage access.
func BenchmarkLookupWarm(b *testing.B) {
	const tenants = 1000
	f, names := generated(b, tenants)
	reg := prometheus.NewRegistry()
	s := f.open(b, keystore.Options{Registerer: reg})
	ctx := context.Background()
	for _, n := range names {
		if _, err := s.Lookup(ctx, n); err != nil {
			b.Fatal(err)
		}
	}
	misses := metricSum(b, reg, "keyedge_keystore_lookups_total", "result", "miss")
	defer func() {
		if m := metricSum(b, reg, "keyedge_keystore_lookups_total", "result", "miss"); m != misses {
			b.Fatalf("%v warm lookups read storage", m-misses)
		}
	}()

	b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			if _, err := s.Lookup(ctx, names[i]); err != nil {
				b.Fatal(err)
			}
			if i++; i == len(names) {
				i = 0
			}
		}
	})
	b.Run(fmt.Sprintf("tenants=%d/parallel", tenants), func(b *testing.B) {
		b.ReportAllocs()
		var g atomic.Int64
		b.RunParallel(func(pb *testing.PB) {
			i := int(g.Add(1)*7919) % len(names)
			for pb.Next() {
				if _, err := s.Lookup(ctx, names[i]); err != nil {
					b.Error(err)
					return
				}
				if i++; i == len(names) {
					i = 0
				}
			}
		})
	})
}

// BenchmarkLookupCold looks up a name no Store has cached, with its files
// in the page cache: one name file and one record read and parsed.
func BenchmarkLookupCold(b *testing.B) {
	const tenants = 20000
	f, names := generated(b, tenants)
	b.Run(fmt.Sprintf("tenants=%d", tenants), func(b *testing.B) {
		c := &coldStores{b: b, f: f, names: names}
		ctx := context.Background()
		b.ReportAllocs()
		n := 0
		for b.Loop() {
			s, name := c.name()
			if _, err := s.Lookup(ctx, name); err != nil {
				b.Fatal(err)
			}
			n++
		}
		b.StopTimer()
		c.checkMisses(n)
	})
}

// BenchmarkLookupColdWithKey is a cold tenant's first handshake signing
// cost: a cold lookup, the first PrivateKey (read the sealed key, open
// it, parse it) and one ECDSA P-256 signature. "format=envelope" opens
// keys as keyedge writes them (an AEAD under a data key decapsulated
// once per Store), "format=legacy" the same tenants' keys as written
// before envelope encryption (one ML-KEM-768+X25519 HPKE decapsulation
// each), in the same run. cpu-ns/op is the process's CPU time per
// lookup (getrusage), which on a shared machine varies less than the
// wall time ns/op.
func BenchmarkLookupColdWithKey(b *testing.B) {
	const tenants = 10000
	f, names := generated(b, tenants)
	legacy := *f
	legacy.dir = b.TempDir()
	if err := os.CopyFS(legacy.dir, os.DirFS(f.dir)); err != nil {
		b.Fatal(err)
	}
	if err := keystore.DowngradeKeys(legacy.dir, f.fleet); err != nil {
		b.Fatal(err)
	}
	digest := sha256.Sum256([]byte("handshake transcript"))
	for _, format := range []struct {
		name string
		f    *fixture
	}{{"envelope", f}, {"legacy", &legacy}} {
		b.Run(fmt.Sprintf("tenants=%d/format=%s", tenants, format.name), func(b *testing.B) {
			c := &coldStores{b: b, f: format.f, names: names}
			ctx := context.Background()
			b.ReportAllocs()
			n := 0
			cpu := cpuTime(b)
			for b.Loop() {
				s, name := c.name()
				e, err := s.Lookup(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				key, err := e.Certs[0].PrivateKey(ctx)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
				n++
			}
			b.ReportMetric(float64(cpuTime(b)-cpu)/float64(n), "cpu-ns/op")
			b.StopTimer()
			c.checkMisses(n)
		})
	}
}

// cpuTime is the CPU time (user and system) this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCachedCertHeap loads one ECDSA tenant per iteration into a
// Store bounded far above what it holds, and reports the live heap the
// cached tenants hold (B/tenant: certs and names caches together) beside
// the Cert.size() estimate the byte bound counts (est-B/cert, from the
// keyedge_keystore_cache_bytes gauge). In "+key" each tenant's private
// key is opened too, as after a first local signature. Each pass over
// the tenants uses a new Store and keeps the old ones, so b.N beyond
// the pool still adds distinct cached entries (plus a few KiB of fixed
// Store overhead per pass).
func BenchmarkCachedCertHeap(b *testing.B) {
	const tenants = 10000
	f, names := generated(b, tenants)
	for _, withKey := range []bool{false, true} {
		sub := "ecdsa"
		if withKey {
			sub = "ecdsa+key"
		}
		b.Run(sub, func(b *testing.B) {
			c := &coldStores{b: b, f: f, names: names, keep: true, opts: keystore.Options{
				// MaxBytes/MaxEntries, the minimum weight of an entry, is
				// 1 KiB: below any Cert.size(), so the cache_bytes gauge
				// is the sum of the estimates.
				MaxEntries: 64 * tenants,
				MaxBytes:   64 << 10 * tenants,
			}}
			ctx := context.Background()
			c.name() // the first Store's fixed heap is not counted
			c.next = 0
			var before, after runtime.MemStats
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&before)
			n := 0
			for b.Loop() {
				s, name := c.name()
				e, err := s.Lookup(ctx, name)
				if err != nil {
					b.Fatal(err)
				}
				if withKey {
					if _, err := e.Certs[0].PrivateKey(ctx); err != nil {
						b.Fatal(err)
					}
				}
				n++
			}
			b.StopTimer()
			c.checkMisses(n)
			var nCerts, nNames, est, evictions float64
			for _, reg := range c.regs {
				nCerts += metricSum(b, reg, "keyedge_keystore_cache_entries", "cache", "certs")
				nNames += metricSum(b, reg, "keyedge_keystore_cache_entries", "cache", "names")
				est += metricSum(b, reg, "keyedge_keystore_cache_bytes", "", "")
				evictions += metricSum(b, reg, "keyedge_keystore_cache_evictions_total", "", "")
			}
			if int(nCerts) != n || int(nNames) != n || evictions != 0 {
				b.Fatalf("%d tenants loaded, caches hold %v certs and %v names (%v evictions)", n, nCerts, nNames, evictions)
			}
			runtime.GC()
			runtime.GC()
			runtime.ReadMemStats(&after)
			runtime.KeepAlive(c.stores)
			b.ReportMetric(float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/float64(n), "B/tenant")
			b.ReportMetric(est/nCerts, "est-B/cert")
		})
	}
}
