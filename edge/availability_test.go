package edge

import (
	"context"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestVanishedKeystore moves the keystore directory away under a running
// edge: the tenant already cached keeps handshaking, an uncached one
// fails as a keystore error (internal_error, counted as such), never as
// an unknown name, and moving the directory back recovers without a
// restart.
func TestVanishedKeystore(t *testing.T) {
	w := newWorld(t, 3, Options{})
	// An edge opened as keyedge serve opens it: on a keystore that
	// exists and holds a journal.
	store, err := w.OpenStore(context.Background(), keystore.Options{PollInterval: 50 * time.Millisecond, RequireInit: true})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := NewServer(Options{Store: store, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	addr := serve(t, srv)
	hs := func(name string) error {
		c, err := w.handshakeTo(addr, w.tlsConfig(name))
		if err == nil {
			c.Close()
		}
		return err
	}
	if err := hs("t1.keyedge.test"); err != nil {
		t.Fatal(err)
	}
	away := w.StoreDir + ".away"
	if err := os.Rename(w.StoreDir, away); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the edge's store to report the vanished keystore", func() bool { return store.Err() != nil })

	if err := hs("t1.keyedge.test"); err != nil {
		t.Errorf("cached tenant while the keystore is away: %v", err)
	}
	err = hs("t2.keyedge.test")
	if err == nil || strings.Contains(err.Error(), "unrecognized name") {
		t.Errorf("uncached tenant while the keystore is away: err = %v, want a handshake failure other than unrecognized_name", err)
	}
	if n := testutil.ToFloat64(srv.metrics.selections.WithLabelValues("error")); n != 1 {
		t.Errorf("selections counted as error = %v, want 1", n)
	}
	if n := testutil.ToFloat64(srv.metrics.selections.WithLabelValues("unknown")); n != 0 {
		t.Errorf("selections counted as unknown = %v, want 0", n)
	}

	if err := os.Rename(away, w.StoreDir); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the edge's store to recover", func() bool { return store.Err() == nil })
	for _, name := range []string{"t1.keyedge.test", "t2.keyedge.test"} {
		if err := hs(name); err != nil {
			t.Errorf("%s after the move back: %v", name, err)
		}
	}
}
