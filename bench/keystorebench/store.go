package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// open opens a Store on the keystore with the fleet key and a fresh
// registry, so the Store's own counters can be read back.
func (b *bench) open(ctx context.Context, maxEntries int, maxBytes int64) (*keystore.Store, *prometheus.Registry, time.Duration, error) {
	reg := prometheus.NewRegistry()
	start := time.Now()
	s, err := keystore.Open(ctx, keystore.Options{
		Storage:    &certmagic.FileStorage{Path: b.cfg.keystore},
		FleetKey:   b.fleet,
		MaxEntries: maxEntries,
		MaxBytes:   maxBytes,
		Logger:     b.log,
		Registerer: reg,
	})
	return s, reg, time.Since(start), err
}

// metric returns the sum of a metric family's samples (counters and
// gauges) that carry the label name=value, or all of them if name is "".
func metric(reg *prometheus.Registry, family, name, value string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
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
	return sum, nil
}

// ecdsa reports whether tenant i has an ECDSA certificate.
func (b *bench) ecdsa(i int) bool { return b.cfg.rsaEvery <= 0 || i%b.cfg.rsaEvery != 0 }

// sample returns k distinct random tenant names (fewer if the keystore
// has fewer), only ECDSA tenants if ecdsaOnly.
func (b *bench) sample(what string, k int, ecdsaOnly bool) []string {
	n := b.cfg.names
	ok := func(i int) bool { return !ecdsaOnly || b.ecdsa(i) }
	eligible := n
	if ecdsaOnly && b.cfg.rsaEvery > 0 {
		eligible = n - (n+b.cfg.rsaEvery-1)/b.cfg.rsaEvery
	}
	if k > eligible {
		b.note("%s: %d names asked for, the keystore has %d eligible: using %d", what, k, eligible, eligible)
		k = eligible
	}
	var idx []int
	if 2*k >= eligible {
		for i := range n {
			if ok(i) {
				idx = append(idx, i)
			}
		}
		b.rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		idx = idx[:k]
	} else {
		seen := make(map[int]bool, k)
		for len(idx) < k { // terminates: k < eligible/2
			i := b.rng.IntN(n)
			if ok(i) && !seen[i] {
				seen[i] = true
				idx = append(idx, i)
			}
		}
	}
	names := make([]string, len(idx))
	for j, i := range idx {
		names[j] = testpki.TenantName(i, b.cfg.domain)
	}
	return names
}

func lookupOne(ctx context.Context, s *keystore.Store, name string) (*keystore.Cert, error) {
	e, err := s.Lookup(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("lookup %s: %w", name, err)
	}
	if len(e.Certs) == 0 {
		return nil, fmt.Errorf("lookup %s: no certificate", name)
	}
	return e.Certs[0], nil
}

// prewarm reads names (and their keys, if keys) through a Store of its
// own, so their files are in the page cache but in no measured Store.
func (b *bench) prewarm(ctx context.Context, names []string, keys bool) error {
	s, _, _, err := b.open(ctx, 0, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	return parallel(len(names), ioWorkers(), func(i int) error {
		c, err := lookupOne(ctx, s, names[i])
		if err == nil && keys {
			_, err = c.PrivateKey(ctx)
		}
		return err
	})
}

// parallel runs fn(i) for i in [0, n) on workers goroutines and returns
// the first error.
func parallel(n, workers int, fn func(i int) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, workers)
	for w := range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || errs[w] != nil {
					return
				}
				errs[w] = fn(i)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// ioWorkers is the parallelism of fills whose latency is not measured;
// more than GOMAXPROCS, since they may wait on the disk.
func ioWorkers() int { return 4 * runtime.GOMAXPROCS(0) }
