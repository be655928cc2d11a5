package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/keystore"
)

// filterFile is where FileStorage keeps the name filter.
const filterFile = "namefilter"

// unknownNames returns n distinct names no tenant of tenantNames has,
// some under a tenant's domain, some not.
func unknownNames(n int) []string {
	names := make([]string, n)
	for i := range names {
		switch i % 3 {
		case 0:
			names[i] = fmt.Sprintf("u%d.t%d.example.com", i, i%50) // beside a tenant
		case 1:
			names[i] = fmt.Sprintf("x%d.example.com", i)
		default:
			names[i] = fmt.Sprintf("flood-%d.example.net", i)
		}
	}
	return names
}

// tenantNames stores 50 tenants t<i>.example.com, every 10th with a
// wildcard, through s.
func tenantNames(t testing.TB, f *fixture, s *keystore.Store) {
	t.Helper()
	var bs []*keystore.Bundle
	for i := range 50 {
		names := []string{fmt.Sprintf("t%d.example.com", i)}
		if i%10 == 0 {
			names = append(names, fmt.Sprintf("*.w%d.example.com", i))
		}
		bs = append(bs, f.bundle(t, "", names...))
	}
	put(t, s, bs...)
}

// lookupAll looks up every name and fails unless each is unknown.
func lookupAll(t testing.TB, s *keystore.Store, names []string) {
	t.Helper()
	for _, n := range names {
		if _, err := s.Lookup(context.Background(), n); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("Lookup(%s) = %v, want ErrNotFound", n, err)
		}
	}
}

// TestUnknownNameFlood: 20,000 distinct unknown names cost storage at
// most 1% of a read each, and every tenant is still found.
func TestUnknownNameFlood(t *testing.T) {
	f := newFixture(t)
	tenantNames(t, f, f.open(t, keystore.Options{}))
	cs := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
	s := f.open(t, keystore.Options{Storage: cs})

	const n = 20_000
	start, heads := time.Now(), cs.count("changes")
	lookupAll(t, s, unknownNames(n))
	if reads := cs.count("names"); reads > n/100 {
		t.Errorf("%d distinct unknown names read %d name files, want ≤ %d", n, reads, n/100)
	}
	// Refused names catch up with the journal, each catch-up one read of
	// its head, at most every PollInterval/10 (50ms): a bound in time,
	// not in names. Polls add one every 500ms.
	heads = cs.count("changes") - heads
	if limit := int(time.Since(start)/(50*time.Millisecond)) + int(time.Since(start)/(500*time.Millisecond)) + 2; heads > limit {
		t.Errorf("%d unknown names read the journal head %d times in %v, want ≤ %d", n, heads, time.Since(start), limit)
	}
	t.Logf("%d distinct unknown names: %d name reads, %d journal head reads, %d other reads, in %v",
		n, cs.count("names"), heads, cs.count("certs")+cs.count(filterFile), time.Since(start))
	for _, name := range []string{"t0.example.com", "t49.example.com", "anything.w10.example.com"} {
		if _, err := s.Lookup(context.Background(), name); err != nil {
			t.Errorf("Lookup(%s) after the flood: %v", name, err)
		}
	}
}

// TestFilterFollowsOtherWriter: a tenant another process stores appears
// on a reader that had just been told it did not exist, without restart.
func TestFilterFollowsOtherWriter(t *testing.T) {
	f := newFixture(t)
	writer := f.open(t, keystore.Options{})
	tenantNames(t, f, writer)
	reader := f.open(t, keystore.Options{PollInterval: 20 * time.Millisecond})
	for _, name := range []string{"late.example.com", "a.late-wild.example.com"} {
		if _, err := reader.Lookup(context.Background(), name); !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("before the write: Lookup(%s) = %v, want ErrNotFound", name, err)
		}
	}
	put(t, writer, f.bundle(t, "", "late.example.com", "*.late-wild.example.com"))
	for _, name := range []string{"late.example.com", "a.late-wild.example.com"} {
		eventually(t, 10*time.Second, name+" visible on the reader", func() bool {
			_, err := reader.Lookup(context.Background(), name)
			return err == nil
		})
	}
}

// TestConcurrentWritersKeepFilter: writers on two Stores sharing the
// storage add names at once; a node opened afterwards finds every one.
func TestConcurrentWritersKeepFilter(t *testing.T) {
	f := newFixture(t)
	writers := []*keystore.Store{f.open(t, keystore.Options{}), f.open(t, keystore.Options{})}
	var wg sync.WaitGroup
	for w, s := range writers {
		bs := make([]*keystore.Bundle, 20)
		for i := range bs {
			bs[i] = f.bundle(t, "", fmt.Sprintf("w%d-%d.example.com", w, i))
		}
		wg.Go(func() {
			for _, b := range bs {
				if _, err := s.Put(context.Background(), b); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	cs := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
	reader := f.open(t, keystore.Options{Storage: cs})
	for w := range writers {
		for i := range 20 {
			if _, err := reader.Lookup(context.Background(), fmt.Sprintf("w%d-%d.example.com", w, i)); err != nil {
				t.Errorf("w%d-%d: %v", w, i, err)
			}
		}
	}
	lookupAll(t, reader, unknownNames(1000))
	if reads := cs.count("names"); reads > 40+10 {
		t.Errorf("40 tenants and 1,000 unknown names read %d name files, want about 40", reads)
	}
}

// TestFilterGrows: past its capacity the filter is rebuilt larger, still
// holding every name and still keeping unknown names away from storage.
func TestFilterGrows(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	name := func(i int) string { return fmt.Sprintf("g%d.example.com", i) }
	const perCert, total = 10, 1500 // past the smallest filter's 1,024
	var bs []*keystore.Bundle
	for i := 0; i < total; i += perCert {
		var names []string
		for j := i; j < i+perCert; j++ {
			names = append(names, name(j))
		}
		bs = append(bs, f.bundle(t, "", names...))
		if len(bs) == 25 {
			put(t, w, bs...)
			bs = bs[:0]
		}
	}
	cs := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
	reader := f.open(t, keystore.Options{Storage: cs})
	for i := range total {
		if _, err := reader.Lookup(context.Background(), name(i)); err != nil {
			t.Fatalf("%s: %v", name(i), err)
		}
	}
	before := cs.count("names")
	lookupAll(t, reader, unknownNames(10_000))
	if reads := cs.count("names") - before; reads > 100 {
		t.Errorf("10,000 unknown names read %d name files from a grown filter, want ≤ 100", reads)
	}
}

// TestWithoutFilter: a keystore whose filter is missing (written before
// it existed) or corrupt hides no tenant: lookups read storage, writes
// still succeed, and RebuildNameFilter restores filtering on every node.
func TestWithoutFilter(t *testing.T) {
	for _, tc := range []struct {
		name  string
		spoil func(path string) error
	}{
		{"missing", os.Remove},
		{"corrupt", func(path string) error {
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			data[len(data)/2] ^= 0x10
			return os.WriteFile(path, data, 0o600)
		}},
		{"truncated", func(path string) error { return os.Truncate(path, 100) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t)
			w := f.open(t, keystore.Options{})
			tenantNames(t, f, w)
			if err := tc.spoil(filepath.Join(f.dir, filterFile)); err != nil {
				t.Fatal(err)
			}
			log := &logCounter{}
			cs := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
			reader := f.open(t, keystore.Options{Storage: cs, PollInterval: 20 * time.Millisecond, Logger: slog.New(log)})

			put(t, w, f.bundle(t, "", "after.example.com"))
			for _, name := range []string{"t3.example.com", "a.w20.example.com", "after.example.com"} {
				eventually(t, 10*time.Second, name+" found without a filter", func() bool {
					_, err := reader.Lookup(context.Background(), name)
					return err == nil
				})
			}
			if _, err := f.open(t, keystore.Options{}).Lookup(context.Background(), "after.example.com"); err != nil {
				t.Fatalf("a node opened after a write without filter: %v", err)
			}
			before := cs.count("names")
			lookupAll(t, reader, unknownNames(100))
			if reads := cs.count("names") - before; reads < 100 {
				t.Fatalf("without a filter 100 unknown names read %d name files: something is filtering on a filter it cannot trust", reads)
			}
			if !log.contains("no usable name filter") {
				t.Errorf("reading without a filter was not logged; log:\n%s", log.text())
			}

			n, err := w.RebuildNameFilter(context.Background(), nil)
			if err != nil {
				t.Fatal(err)
			}
			if n != 56 { // 50 tenants, 5 wildcards, after.example.com
				t.Errorf("RebuildNameFilter counted %d names, want 56", n)
			}
			eventually(t, 10*time.Second, "the reader loads the rebuilt filter", func() bool {
				before := cs.count("names")
				lookupAll(t, reader, []string{fmt.Sprintf("probe-%d.example.org", before)})
				return cs.count("names") == before
			})
			before = cs.count("names")
			lookupAll(t, reader, unknownNames(1000))
			if reads := cs.count("names") - before; reads > 10 {
				t.Errorf("after rebuild 1,000 unknown names read %d name files, want ≤ 10", reads)
			}
			for _, name := range []string{"t3.example.com", "a.w20.example.com", "after.example.com"} {
				if _, err := reader.Lookup(context.Background(), name); err != nil {
					t.Errorf("after rebuild: Lookup(%s): %v", name, err)
				}
			}
		})
	}
}

// BenchmarkLookupUnknown: what an unknown name costs with the filter
// (no storage read) and without it (a read of the name and its
// wildcard, as before the filter existed). Each iteration uses a new
// name, so the negative cache never answers.
func BenchmarkLookupUnknown(b *testing.B) {
	for _, filtered := range []bool{true, false} {
		b.Run(map[bool]string{true: "filtered", false: "read"}[filtered], func(b *testing.B) {
			f := newFixture(b)
			tenantNames(b, f, f.open(b, keystore.Options{}))
			if !filtered {
				if err := os.Remove(filepath.Join(f.dir, filterFile)); err != nil {
					b.Fatal(err)
				}
			}
			s := f.open(b, keystore.Options{})
			names := unknownNames(b.N)
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				if _, err := s.Lookup(context.Background(), names[i]); !errors.Is(err, keystore.ErrNotFound) {
					b.Fatal(err)
				}
			}
		})
	}
}

// text returns everything logged so far.
func (l *logCounter) text() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func (l *logCounter) contains(s string) bool { return strings.Contains(l.text(), s) }
