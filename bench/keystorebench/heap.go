package main

import (
	"context"
	"fmt"
	"runtime"
	"time"
)

type heapResult struct {
	Tenants         int     `json:"tenants"`
	CertEntries     int     `json:"cert_entries"` // keyedge_keystore_cache_entries{cache="certs"} after loading
	NameEntries     int     `json:"name_entries"`
	LoadNs          int64   `json:"load_ns"`
	HeapDeltaBytes  int64   `json:"heap_delta_bytes"` // HeapAlloc after GC, loaded minus empty Store
	BytesPerTenant  float64 `json:"bytes_per_tenant"`
	EstBytesPerCert float64 `json:"estimated_bytes_per_cert"` // keyedge_keystore_cache_bytes / cert entries, i.e. Cert.size()
	KeyTenants      int     `json:"key_tenants"`
	KeyBytesPerTen  float64 `json:"key_bytes_per_tenant"` // extra heap per tenant once its private key is open
	RSSBeforeBytes  int64   `json:"rss_before_bytes"`     // process RSS with the empty Store
	RSSAfterBytes   int64   `json:"rss_after_bytes"`      // process RSS with every tenant (and the keys) loaded
}

// measureHeap loads cache ECDSA tenants into one Store sized to hold
// them all and divides the live heap it gained by their number; then
// opens the keys of cacheKeys of them.
func (b *bench) measureHeap(ctx context.Context) error {
	names := b.sample("heap", b.cfg.cache, true)
	n := len(names)
	// Bounds far above n, and MaxBytes/MaxEntries (the minimum weight of
	// an entry) at 1 KiB, below any Cert.size(), so that the cache_bytes
	// gauge reports the sum of the estimates and nothing is evicted.
	s, reg, _, err := b.open(ctx, 64*n, 64<<10*int64(n))
	if err != nil {
		return err
	}
	defer s.Close()
	r := heapResult{Tenants: n}
	ms0 := heapAfterGC()
	r.RSSBeforeBytes = rss()
	t := time.Now()
	if err := parallel(n, ioWorkers(), func(i int) error {
		_, err := lookupOne(ctx, s, names[i])
		return err
	}); err != nil {
		return err
	}
	r.LoadNs = int64(time.Since(t))
	// Gathering runs the caches' pending maintenance, then reads them.
	certEntries, err := metric(reg, "keyedge_keystore_cache_entries", "cache", "certs")
	if err != nil {
		return err
	}
	nameEntries, _ := metric(reg, "keyedge_keystore_cache_entries", "cache", "names")
	estBytes, _ := metric(reg, "keyedge_keystore_cache_bytes", "", "")
	evictions, _ := metric(reg, "keyedge_keystore_cache_evictions_total", "", "")
	r.CertEntries, r.NameEntries = int(certEntries), int(nameEntries)
	if r.CertEntries != n || r.NameEntries != n || evictions != 0 {
		return fmt.Errorf("cache holds %d certs and %d names after loading %d tenants (%d evictions)", r.CertEntries, r.NameEntries, n, int(evictions))
	}
	r.EstBytesPerCert = estBytes / certEntries
	ms1 := heapAfterGC()
	r.HeapDeltaBytes = int64(ms1.HeapAlloc) - int64(ms0.HeapAlloc)
	r.BytesPerTenant = float64(r.HeapDeltaBytes) / float64(n)

	r.KeyTenants = min(b.cfg.cacheKeys, n)
	if r.KeyTenants > 0 {
		if err := parallel(r.KeyTenants, ioWorkers(), func(i int) error {
			c, err := lookupOne(ctx, s, names[i])
			if err == nil {
				_, err = c.PrivateKey(ctx)
			}
			return err
		}); err != nil {
			return err
		}
		ms2 := heapAfterGC()
		r.KeyBytesPerTen = float64(int64(ms2.HeapAlloc)-int64(ms1.HeapAlloc)) / float64(r.KeyTenants)
	}
	r.RSSAfterBytes = rss()
	if certEntries, err = metric(reg, "keyedge_keystore_cache_entries", "cache", "certs"); err != nil || int(certEntries) != n {
		return fmt.Errorf("cache lost entries while keys were opened (%d of %d left): %v", int(certEntries), n, err)
	}
	runtime.KeepAlive(s)
	b.res.Heap = r
	return nil
}
