package edge

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// TestOneLookupPerRequest: a request, over HTTP/2 (the Server's handler)
// or HTTP/1.1 (the connection loop), looks its host up in the keystore
// once, for both the tenant HTTP layer and the origin
// (keyedge_keystore_lookups_total), with and without tenant settings,
// and is proxied.
func TestOneLookupPerRequest(t *testing.T) {
	w := openWorld(t, 0)
	reg := prometheus.NewRegistry()
	store, err := w.OpenStore(context.Background(), keystore.Options{PollInterval: 50 * time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	w.store = store
	w.startEdge(t, Options{})
	w.put(t, testpki.ECDSAP256, w.OriginURL, "plain.example.com")
	w.put(t, testpki.ECDSAP256, w.OriginURL, "hsts.example.com")
	w.setHTTP(t, "hsts.example.com", func(h *keystore.TenantHTTP) { h.HSTS = &keystore.HSTS{MaxAge: time.Hour} })

	// Every lookup, whether the cache had the entry (a change of the
	// tenant's settings reaching the edge reloads it) or not.
	lookups := func() float64 {
		var n float64
		for _, result := range []string{"hit", "miss", "negative", "error"} {
			n += metricValue(t, reg, "keyedge_keystore_lookups_total", result)
		}
		return n
	}
	const requests = 5
	for _, tc := range []struct {
		host  string
		major int
	}{{"plain.example.com", 2}, {"hsts.example.com", 2}, {"plain.example.com", 1}, {"hsts.example.com", 1}} {
		host := tc.host
		c := w.client(t, tc.major == 2)
		// The handshake's lookups, the cache filled, and the settings
		// (through the journal) in effect.
		for deadline := time.Now().Add(10 * time.Second); ; {
			resp, _ := w.get(t, c, host, "/")
			if host != "hsts.example.com" || resp.Header.Get("Strict-Transport-Security") != "" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: no HSTS header after 10 s", host)
			}
			time.Sleep(20 * time.Millisecond)
		}
		before := lookups()
		for range requests {
			resp, body := w.get(t, c, host, "/")
			if resp.StatusCode != http.StatusOK || resp.ProtoMajor != tc.major {
				t.Fatalf("%s: %s over HTTP/%d: %q", host, resp.Status, resp.ProtoMajor, body)
			}
		}
		if n := lookups() - before; n != requests {
			t.Errorf("%s over HTTP/%d: %v keystore lookups for %d requests, want one each", host, tc.major, n, requests)
		}
	}
}
