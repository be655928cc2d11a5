package redisstore_test

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"testing"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/redistest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/redisstore"
)

// BenchmarkColdLookup is a keystore lookup of a tenant the node has not
// loaded yet (a name file and a record read), on local disk (files in
// the page cache) and on a Redis on the same machine, and a warm lookup
// for comparison.
//
//	go test -run '^$' -bench ColdLookup -benchtime 2000x ./keystore/redisstore
func BenchmarkColdLookup(b *testing.B) {
	const tenants = 2000
	ctx := context.Background()
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		b.Fatal(err)
	}
	ca, err := testpki.NewCA("bench CA")
	if err != nil {
		b.Fatal(err)
	}
	srv := redistest.Start(b)
	for _, bc := range []struct {
		name    string
		storage certmagic.Storage
	}{
		{"file", &certmagic.FileStorage{Path: b.TempDir()}},
		{"redis", redisstore.New(srv.Client(b), redisstore.Options{Prefix: "bench"})},
	} {
		open := func() *keystore.Store {
			s, err := keystore.Open(ctx, keystore.Options{Storage: bc.storage, FleetKey: fleet, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}
		w := open()
		if err := ca.GenerateTenants(ctx, w, testpki.TenantSpec{Count: tenants}, nil); err != nil {
			b.Fatal(err)
		}
		w.Close()
		names := make([]string, tenants)
		for i := range names {
			names[i] = testpki.TenantName(i, "keyedge.test")
		}
		rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
		b.Run(bc.name+"/cold", func(b *testing.B) {
			var s *keystore.Store
			for i := range b.N {
				if i%tenants == 0 { // every name once per fresh Store
					b.StopTimer()
					if s != nil {
						s.Close()
					}
					s = open()
					b.StartTimer()
				}
				if _, err := s.Lookup(ctx, names[i%tenants]); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			s.Close()
		})
		b.Run(bc.name+"/warm", func(b *testing.B) {
			s := open()
			defer s.Close()
			for _, n := range names[:100] {
				s.Lookup(ctx, n)
			}
			i := 0
			for b.Loop() {
				if _, err := s.Lookup(ctx, names[i%100]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}
