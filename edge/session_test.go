package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// capturedSession is a client session cache that keeps the first
// session it is given and offers it for every server name, as a client
// carrying a ticket from one tenant to another would. (Go's client
// offers a session only to names its certificate covers, unless
// InsecureSkipVerify is set, which these tests do.)
type capturedSession struct {
	mu sync.Mutex
	cs *tls.ClientSessionState
}

func (c *capturedSession) Get(string) (*tls.ClientSessionState, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cs, c.cs != nil
}

func (c *capturedSession) Put(_ string, cs *tls.ClientSessionState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cs == nil {
		c.cs = cs
	}
}

// sessionClient makes TLS connections of one version with one captured
// session.
type sessionClient struct {
	w       *world
	version uint16
	cache   *capturedSession
}

// dial completes a handshake for name at addr offering the captured
// session, reads the tickets a TLS 1.3 server sends after the
// handshake, and reports whether the session resumed and which
// certificate the peer has.
func (c *sessionClient) dial(addr, name string) (resumed bool, cn string, err error) {
	conn, err := c.w.handshakeTo(addr, &tls.Config{
		ServerName:         name,
		InsecureSkipVerify: true,
		MinVersion:         c.version,
		MaxVersion:         c.version,
		ClientSessionCache: c.cache,
		NextProtos:         []string{"http/1.1"},
	})
	if err != nil {
		return false, "", err
	}
	defer conn.Close()
	conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	conn.Read(make([]byte, 1))
	cs := conn.ConnectionState()
	return cs.DidResume, cs.PeerCertificates[0].DNSNames[0], nil
}

// newSessionClient obtains a session for name at addr.
func newSessionClient(t *testing.T, w *world, version uint16, addr, name string) *sessionClient {
	t.Helper()
	c := &sessionClient{w: w, version: version, cache: &capturedSession{}}
	if resumed, _, err := c.dial(addr, name); err != nil || resumed {
		t.Fatalf("first handshake for %s: resumed %v, %v", name, resumed, err)
	}
	if c.cache.cs == nil {
		t.Fatalf("no session ticket for %s", name)
	}
	return c
}

var tlsVersions = []uint16{tls.VersionTLS12, tls.VersionTLS13}

// TestSessionBoundToTenant: a session resumes for the name it was issued
// for, on this node and on another node of the fleet, and never for
// another tenant or for a name no tenant has (RFC 6066 §3).
func TestSessionBoundToTenant(t *testing.T) {
	fleet := &TicketKeys{Secret: secretA, Period: 24 * time.Hour}
	w := newWorld(t, 2, Options{Tickets: fleet})
	nodeB, err := NewServer(Options{Store: w.openStore(t), Tickets: fleet})
	if err != nil {
		t.Fatal(err)
	}
	b := serve(t, nodeB)
	for _, v := range tlsVersions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			c := newSessionClient(t, w, v, w.addr, "t0.keyedge.test")
			for _, tc := range []struct {
				node, addr, name string
				resume           bool
			}{
				{"this node", w.addr, "t0.keyedge.test", true},
				{"node B", b, "t0.keyedge.test", true},
				{"this node", w.addr, "T0.KEYEDGE.TEST.", true}, // the same name, normalised
				{"this node", w.addr, "t1.keyedge.test", false},
				{"node B", b, "t1.keyedge.test", false},
			} {
				resumed, cn, err := c.dial(tc.addr, tc.name)
				if err != nil {
					t.Fatalf("%s, %s: %v", tc.node, tc.name, err)
				}
				if resumed != tc.resume {
					t.Errorf("%s, %s with a t0 ticket: resumed = %v, want %v", tc.node, tc.name, resumed, tc.resume)
				}
				if want := strings.ToLower(strings.TrimSuffix(tc.name, ".")); cn != want {
					t.Errorf("%s, %s: peer certificate for %s", tc.node, tc.name, cn)
				}
			}
			// A name no tenant has is refused however the client came by
			// its ticket, and no request reaches an origin.
			for _, addr := range []string{w.addr, b} {
				if resumed, _, err := c.dial(addr, "nobody.keyedge.test"); err == nil {
					t.Errorf("unknown name with a t0 ticket: handshake succeeded (resumed %v)", resumed)
				}
			}
		})
	}
	if got := testutil.ToFloat64(w.srv.metrics.resumptions.WithLabelValues("other_name")); got < 2 {
		t.Errorf("other_name resumptions refused counted %v, want at least 2", got)
	}
}

// TestSessionEndsWithTenant: once a tenant's removal has reached a node,
// no session of the tenant resumes there; once a certificate is
// replaced, the sessions it authenticated get a full handshake.
func TestSessionEndsWithTenant(t *testing.T) {
	for _, v := range tlsVersions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			fleet := &TicketKeys{Secret: secretA, Period: 24 * time.Hour}
			w := newWorld(t, 0, Options{Tickets: fleet})
			nodeB, err := NewServer(Options{Store: w.openStore(t), Tickets: fleet})
			if err != nil {
				t.Fatal(err)
			}
			b := serve(t, nodeB)
			w.put(t, testpki.ECDSAP256, w.OriginURL, "gone.keyedge.test")
			oldID := w.put(t, testpki.ECDSAP256, w.OriginURL, "renewed.keyedge.test")
			waitFor(t, w, "gone.keyedge.test", "")
			waitFor(t, w, "renewed.keyedge.test", oldID)
			gone := newSessionClient(t, w, v, w.addr, "gone.keyedge.test")
			renewed := newSessionClient(t, w, v, w.addr, "renewed.keyedge.test")
			for _, addr := range []string{w.addr, b} {
				if resumed, _, err := gone.dial(addr, "gone.keyedge.test"); err != nil || !resumed {
					t.Fatalf("before the removal: resumed %v, %v", resumed, err)
				}
			}

			if err := w.Writer.Remove(context.Background(), "gone.keyedge.test"); err != nil {
				t.Fatal(err)
			}
			newID := w.put(t, testpki.ECDSAP256, w.OriginURL, "renewed.keyedge.test")
			waitForRemoval(t, w, "gone.keyedge.test")
			waitFor(t, w, "renewed.keyedge.test", newID)
			for _, addr := range []string{w.addr, b} {
				if resumed, _, err := gone.dial(addr, "gone.keyedge.test"); err == nil {
					t.Errorf("removed tenant: handshake succeeded (resumed %v)", resumed)
				}
				resumed, _, err := renewed.dial(addr, "renewed.keyedge.test")
				if err != nil {
					t.Fatal(err)
				}
				if resumed {
					t.Error("a session of a replaced certificate resumed")
				}
			}
		})
	}
}

// TestSessionOnFallback: sessions on the fallback certificate resume for
// their own name only, and a tenant's ticket offered for a name no
// tenant has gets the fallback's full handshake.
func TestSessionOnFallback(t *testing.T) {
	ca, err := testpki.NewCA("fallback CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"fallback.invalid"}})
	if err != nil {
		t.Fatal(err)
	}
	w := newWorld(t, 1, Options{Fallback: &tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key}})
	for _, v := range tlsVersions {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			tenant := newSessionClient(t, w, v, w.addr, "t0.keyedge.test")
			if resumed, cn, err := tenant.dial(w.addr, "unknown.keyedge.test"); err != nil || resumed || cn != "fallback.invalid" {
				t.Errorf("unknown name with a tenant's ticket: resumed %v, served %s, %v; want a full handshake on the fallback", resumed, cn, err)
			}
			fb := newSessionClient(t, w, v, w.addr, "unknown.keyedge.test")
			for name, want := range map[string]bool{"unknown.keyedge.test": true, "other.keyedge.test": false, "t0.keyedge.test": false} {
				if resumed, _, err := fb.dial(w.addr, name); err != nil || resumed != want {
					t.Errorf("%s with a fallback ticket: resumed %v, %v; want %v", name, resumed, err, want)
				}
			}
		})
	}
}

// waitFor waits until the edge's store serves id for name ("" for any).
func waitFor(t *testing.T, w *world, name, id string) {
	t.Helper()
	eventually(t, 5*time.Second, name+" served", func() bool {
		e, err := w.store.Lookup(context.Background(), name)
		if err != nil {
			return false
		}
		return id == "" || e.Certs[0].ID == id
	})
}

// waitForRemoval waits until the edge's store no longer has name.
func waitForRemoval(t *testing.T, w *world, name string) {
	t.Helper()
	eventually(t, 5*time.Second, name+" removed", func() bool {
		_, err := w.store.Lookup(context.Background(), name)
		return errors.Is(err, keystore.ErrNotFound)
	})
}

// BenchmarkSessionTicket measures what binding sessions to their tenant
// adds to issuing and accepting a ticket: crypto/tls's own
// EncryptTicket+DecryptTicket against wrapSession+unwrapSession (the
// same, plus a cached keystore lookup each way and the comparison).
//
//	go test -run '^$' -bench SessionTicket ./edge
func BenchmarkSessionTicket(b *testing.B) {
	w := newWorld(b, 1, Options{})
	cache := &capturedSession{}
	c := &sessionClient{w: w, version: tls.VersionTLS13, cache: cache}
	if _, _, err := c.dial(w.addr, "t0.keyedge.test"); err != nil {
		b.Fatal(err)
	}
	_, state, err := cache.cs.ResumptionState()
	if err != nil {
		b.Fatal(err)
	}
	cs := tls.ConnectionState{ServerName: "t0.keyedge.test", Version: tls.VersionTLS13}
	fresh := func() *tls.SessionState { ss := *state; ss.Extra = nil; return &ss }
	b.Run("crypto-tls", func(b *testing.B) {
		for b.Loop() {
			ticket, err := w.srv.tlsConfig.Load().EncryptTicket(cs, fresh())
			if err != nil {
				b.Fatal(err)
			}
			if ss, err := w.srv.tlsConfig.Load().DecryptTicket(ticket, cs); ss == nil || err != nil {
				b.Fatal("ticket not decrypted", err)
			}
		}
	})
	b.Run("bound", func(b *testing.B) {
		for b.Loop() {
			ticket, err := w.srv.wrapSession(cs, fresh())
			if err != nil {
				b.Fatal(err)
			}
			if ss, err := w.srv.unwrapSession(ticket, cs); ss == nil || err != nil {
				b.Fatal("session not resumed", err)
			}
		}
	})
}
