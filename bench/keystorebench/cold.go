package main

import (
	"context"
	"fmt"
	"runtime"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

type coldResult struct {
	PageCache string `json:"page_cache"` // "warm": files read once by another Store first; "dropped"
	Lookup    dist   `json:"lookup"`
	Misses    int    `json:"misses"` // lookups the Store counted as loaded from storage; must equal lookup.n
	// DiskReads is read requests completed by the keystore's block
	// device per lookup (/proc/diskstats), when the page cache was dropped.
	DiskReads float64 `json:"disk_reads_per_lookup,omitempty"`
}

// measureCold makes cold lookups of names whose files were read once by
// another Store: the page cache holds them, the measured Store does not.
func (b *bench) measureCold(ctx context.Context) error {
	names := b.sample("cold lookups", b.cfg.n, false)
	if err := b.prewarm(ctx, names, false); err != nil {
		return err
	}
	s, reg, _, err := b.open(ctx, 0, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := b.coldLookups(ctx, s, reg, names, "warm")
	if r != nil {
		b.res.Cold = *r
	}
	return err
}

// measureColdDisk drops the page cache, times one Open, and makes cold
// lookups on that Store: files and directories come from the disk (the
// 256 bucket directories are soon cached again).
func (b *bench) measureColdDisk(ctx context.Context) error {
	if !b.cfg.dropCaches {
		return nil
	}
	names := b.sample("cold lookups, page cache dropped", b.cfg.n, false)
	if err := dropCaches(); err != nil {
		return err
	}
	s, reg, d, err := b.open(ctx, 0, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	b.res.Open.AfterDropNs = int64(d)
	r0 := b.diskReads()
	b.res.ColdDisk, err = b.coldLookups(ctx, s, reg, names, "dropped")
	if err == nil && r0 >= 0 {
		b.res.ColdDisk.DiskReads = float64(b.diskReads()-r0) / float64(len(names))
	}
	return err
}

// coldLookups looks up each name once on a Store that has not seen it,
// timing each lookup, and checks the Store counted every one as a miss.
func (b *bench) coldLookups(ctx context.Context, s *keystore.Store, reg *prometheus.Registry, names []string, pageCache string) (*coldResult, error) {
	runtime.GC()
	ds := make([]time.Duration, len(names))
	for i, name := range names {
		t := time.Now()
		_, err := lookupOne(ctx, s, name)
		ds[i] = time.Since(t)
		if err != nil {
			return nil, err
		}
	}
	misses, err := metric(reg, "keyedge_keystore_lookups_total", "result", "miss")
	if err != nil {
		return nil, err
	}
	if int(misses) != len(names) {
		return nil, fmt.Errorf("%d of %d cold lookups were misses: not a cold measurement", int(misses), len(names))
	}
	return &coldResult{PageCache: pageCache, Lookup: summarise(ds), Misses: int(misses)}, nil
}
