package main

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"runtime"
	"time"

	"github.com/keyedge/keyedge/keystore"
)

type signResult struct {
	PageCache string  `json:"page_cache"`
	Total     dist    `json:"total"` // Lookup + PrivateKey + Sign
	Lookup    dist    `json:"lookup"`
	KeyOpen   dist    `json:"key_open"`
	Sign      dist    `json:"sign"`
	DiskReads float64 `json:"disk_reads_per_op,omitempty"` // as in coldResult
}

func (b *bench) measureSign(ctx context.Context) error {
	names := b.sample("cold sign", b.cfg.signN, true)
	if err := b.prewarm(ctx, names, true); err != nil {
		return err
	}
	s, _, _, err := b.open(ctx, 0, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	r, err := b.signLookups(ctx, s, names, "warm")
	if r != nil {
		b.res.ColdSign = *r
	}
	return err
}

func (b *bench) measureSignDisk(ctx context.Context) error {
	if !b.cfg.dropCaches {
		return nil
	}
	names := b.sample("cold sign, page cache dropped", b.cfg.signN, true)
	if err := dropCaches(); err != nil {
		return err
	}
	s, _, _, err := b.open(ctx, 0, 0)
	if err != nil {
		return err
	}
	defer s.Close()
	r0 := b.diskReads()
	b.res.ColdSignD, err = b.signLookups(ctx, s, names, "dropped")
	if err == nil && r0 >= 0 {
		b.res.ColdSignD.DiskReads = float64(b.diskReads()-r0) / float64(len(names))
	}
	return err
}

// signLookups times, per name, a cold lookup, the first PrivateKey (read
// and unseal) and one signature: a cold tenant's first handshake.
func (b *bench) signLookups(ctx context.Context, s *keystore.Store, names []string, pageCache string) (*signResult, error) {
	digest := sha256.Sum256([]byte("keystorebench handshake transcript"))
	var total, look, open, sign []time.Duration
	runtime.GC()
	for _, name := range names {
		t0 := time.Now()
		c, err := lookupOne(ctx, s, name)
		if err != nil {
			return nil, err
		}
		t1 := time.Now()
		key, err := c.PrivateKey(ctx)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		t2 := time.Now()
		if _, err := key.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
			return nil, fmt.Errorf("%s: sign: %w", name, err)
		}
		t3 := time.Now()
		total = append(total, t3.Sub(t0))
		look = append(look, t1.Sub(t0))
		open = append(open, t2.Sub(t1))
		sign = append(sign, t3.Sub(t2))
	}
	return &signResult{PageCache: pageCache, Total: summarise(total), Lookup: summarise(look), KeyOpen: summarise(open), Sign: summarise(sign)}, nil
}
