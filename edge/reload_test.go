package edge

import (
	"testing"
)

// TestReloadRightAfterServe: a SIGHUP may arrive as the server starts.
// Reload clones the handshakes' tls.Config while net/http's Serve sets
// up HTTP/2; they must not share a config (the race detector fails this
// test when they do, most runs).
func TestReloadRightAfterServe(t *testing.T) {
	store, _ := tempStore(t)
	for range 20 {
		srv, err := NewServer(Options{Store: store})
		if err != nil {
			t.Fatal(err)
		}
		serve(t, srv)
		if err := srv.Reload(Options{}); err != nil {
			t.Fatal(err)
		}
	}
}
