package edge

import (
	"context"
	"crypto/tls"
	"log/slog"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/redistest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/redisstore"
)

// TestFleetOnRedis: three edge nodes share one Redis keystore and one
// ticket secret, each with its own client and caches. A session made on
// one node resumes on the others, and a certificate imported by keyctl
// (another writer) is served by every node within the invalidation bound,
// even by nodes that had just cached the name as unknown.
func TestFleetOnRedis(t *testing.T) {
	srv := redistest.Start(t)
	ctx := context.Background()
	w := newWorld(t, 0, Options{}) // for its CA, fleet key and origin
	const poll, negative = 100 * time.Millisecond, 200 * time.Millisecond
	openStore := func() *keystore.Store {
		s, err := keystore.Open(ctx, keystore.Options{
			Storage:      redisstore.New(srv.Client(t), redisstore.Options{Prefix: "fleet"}),
			FleetKey:     w.Fleet,
			PollInterval: poll,
			NegativeTTL:  negative,
			Logger:       slog.New(slog.DiscardHandler),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	keyctl := openStore()
	spec := testpki.TenantSpec{Count: 3, Origin: w.OriginURL}
	if err := w.CA.GenerateTenants(ctx, keyctl, spec, nil); err != nil {
		t.Fatal(err)
	}
	tickets := &TicketKeys{Secret: secretA}
	var nodes []string
	for range 3 {
		s, err := NewServer(Options{Store: openStore(), Tickets: tickets, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, serve(t, s))
	}

	cache := tls.NewLRUClientSessionCache(4)
	dial := func(addr, name string) (resumed bool, err error) {
		cfg := w.tlsConfig(name)
		cfg.ClientSessionCache = cache
		conn, err := w.handshakeTo(addr, cfg)
		if err != nil {
			return false, err
		}
		defer conn.Close()
		conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		conn.Read(make([]byte, 1)) // receive the TLS 1.3 tickets
		return conn.ConnectionState().DidResume, nil
	}
	if r, err := dial(nodes[0], "t1.keyedge.test"); err != nil || r {
		t.Fatalf("first handshake on node A: resumed %v, %v", r, err)
	}
	for i, addr := range nodes[1:] {
		if r, err := dial(addr, "t1.keyedge.test"); err != nil || !r {
			t.Errorf("node %c: resumed %v, %v; want the session from node A resumed", 'B'+i, r, err)
		}
	}

	// Every node has just looked the new name up and cached it as unknown.
	const name = "new.fleet.test"
	for _, addr := range nodes {
		if _, err := dial(addr, name); err == nil {
			t.Fatalf("%s served before it was imported", name)
		}
	}
	leaf := w.leafFor(t, testpki.ECDSAP256, name)
	if _, err := keyctl.Put(ctx, &keystore.Bundle{Meta: keystore.Meta{Tenant: "new", Origin: w.OriginURL}, Chain: leaf.Chain, Key: leaf.Key}); err != nil {
		t.Fatal(err)
	}
	imported := time.Now()
	bound := poll + negative
	for _, addr := range nodes {
		for {
			if _, err := dial(addr, name); err == nil {
				break
			}
			if time.Since(imported) > 2*bound+time.Second {
				t.Fatalf("%s not served by %s %v after the import (bound: poll %v + negative TTL %v)", name, addr, time.Since(imported), poll, negative)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	t.Logf("served by all three nodes %v after the import (bound %v)", time.Since(imported).Round(time.Millisecond), bound)
}
