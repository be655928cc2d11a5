package edge

import (
	"context"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// rotators counts the goroutines running rotateTickets: those NewServer
// started, whose only goroutine it is. They are found by their creator,
// which a goroutine's trace names even before it first runs, when it
// shows no frame of rotateTickets yet.
func rotators() int {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			count := 0
			for g := range strings.SplitSeq(string(buf[:n]), "\n\n") {
				if strings.Contains(g, "\ncreated by github.com/keyedge/keyedge/edge.NewServer in goroutine") {
					count++
				}
			}
			return count
		}
		buf = make([]byte, 2*len(buf))
	}
}

// A NewServer that fails leaves nothing running: the ticket rotation
// starts only once the server cannot fail any more.
func TestNewServerFailureLeaksNothing(t *testing.T) {
	store, _ := tempStore(t)
	reg := prometheus.NewRegistry()
	opts := Options{Store: store, Registerer: reg, Logger: slog.New(slog.DiscardHandler)}
	first, err := NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.Shutdown(context.Background()) })
	// The first server is alive, so its rotation goroutine stays put.
	before := rotators()
	if _, err := NewServer(opts); err == nil {
		t.Fatal("NewServer registered its metrics twice in one registry")
	}
	if after := rotators(); after != before {
		t.Fatalf("a failed NewServer left %d ticket-rotation goroutines running", after-before)
	}
}
