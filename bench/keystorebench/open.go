package main

import (
	"context"
	"slices"
	"time"
)

type openResult struct {
	Runs        int   `json:"runs"`
	FirstNs     int64 `json:"first_ns"` // the first Open of the process
	MedianNs    int64 `json:"median_ns"`
	MinNs       int64 `json:"min_ns"`
	MaxNs       int64 `json:"max_ns"`
	AfterDropNs int64 `json:"after_drop_ns,omitempty"` // one Open right after the page cache was dropped
}

// measureOpen times Open (and Close, untimed) opens times.
func (b *bench) measureOpen(ctx context.Context) error {
	ds := make([]time.Duration, b.cfg.opens)
	for i := range ds {
		s, _, d, err := b.open(ctx, 0, 0)
		if err != nil {
			return err
		}
		s.Close()
		ds[i] = d
	}
	first := ds[0]
	slices.Sort(ds)
	b.res.Open = openResult{Runs: len(ds), FirstNs: int64(first), MedianNs: int64(ds[len(ds)/2]), MinNs: int64(ds[0]), MaxNs: int64(ds[len(ds)-1])}
	return nil
}
