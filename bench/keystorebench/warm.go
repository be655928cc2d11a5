package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"time"
)

type warmResult struct {
	Names        int     `json:"names"`
	Batches      int     `json:"batches"`
	BatchSize    int     `json:"batch_size"`
	MeanNs       float64 `json:"mean_ns"`       // all lookups
	BatchP50Ns   float64 `json:"batch_p50_ns"`  // of the per-batch means
	BatchP99Ns   float64 `json:"batch_p99_ns"`  // of the per-batch means
	BatchMaxNs   float64 `json:"batch_max_ns"`  // of the per-batch means
	AllocsPerOp  float64 `json:"allocs_per_op"` // heap allocations per lookup
	BytesPerOp   float64 `json:"bytes_per_op"`  // heap bytes allocated per lookup
	Goroutines   int     `json:"parallel_goroutines"`
	ParallelNsOp float64 `json:"parallel_ns_per_op"` // wall time / lookups, every goroutine looking up
}

const warmBatch = 1000

// measureWarm times lookups of cached names, in batches of warmBatch
// (one lookup is below the clock's useful resolution), then with every
// goroutine looking up at once.
func (b *bench) measureWarm(ctx context.Context) error {
	names := b.sample("warm lookups", b.cfg.warmNames, false)
	s, reg, _, err := b.open(ctx, 0, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	for _, name := range names {
		if _, err := lookupOne(ctx, s, name); err != nil {
			return err
		}
	}
	missesBefore, err := metric(reg, "keyedge_keystore_lookups_total", "result", "miss")
	if err != nil {
		return err
	}
	r := warmResult{Names: len(names), Batches: b.cfg.warmBatches, BatchSize: warmBatch}
	means := make([]float64, r.Batches)
	var ms0, ms1 runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms0)
	start := time.Now()
	k := 0
	for bi := range means {
		t := time.Now()
		for range warmBatch {
			if _, err := s.Lookup(ctx, names[k]); err != nil {
				return err
			}
			if k++; k == len(names) {
				k = 0
			}
		}
		means[bi] = float64(time.Since(t)) / warmBatch
	}
	total := time.Since(start)
	runtime.ReadMemStats(&ms1)
	ops := float64(r.Batches * warmBatch)
	r.MeanNs = float64(total) / ops
	r.AllocsPerOp = float64(ms1.Mallocs-ms0.Mallocs) / ops
	r.BytesPerOp = float64(ms1.TotalAlloc-ms0.TotalAlloc) / ops
	slices.Sort(means)
	r.BatchP50Ns = means[len(means)/2]
	r.BatchP99Ns = means[max(int(math.Ceil(.99*float64(len(means))))-1, 0)]
	r.BatchMaxNs = means[len(means)-1]

	r.Goroutines = runtime.GOMAXPROCS(0)
	perG := r.Batches * warmBatch / r.Goroutines
	start = time.Now()
	err = parallel(r.Goroutines, r.Goroutines, func(g int) error {
		for j := range perG {
			if _, err := s.Lookup(ctx, names[(g*7919+j)%len(names)]); err != nil {
				return err
			}
		}
		return nil
	})
	r.ParallelNsOp = float64(time.Since(start)) / float64(perG*r.Goroutines)
	if err != nil {
		return err
	}
	missesAfter, err := metric(reg, "keyedge_keystore_lookups_total", "result", "miss")
	if err != nil {
		return err
	}
	if missesAfter != missesBefore {
		return fmt.Errorf("%d warm lookups read storage: not a warm measurement", int(missesAfter-missesBefore))
	}
	b.res.Warm = r
	return nil
}
