package edge

import (
	"context"
	"crypto/tls"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testclock"
)

// TestWatchedStreamStalled: a sweep finds a stream stalled once the one
// write it saw in progress has gone on for the send timeout by the
// sweeps' clock; never a stream that is not writing however long (a long
// poll), nor one whose writes go on completing, nor one whose connection
// itself waits for the client (the connection's send timeout closes
// it), nor one already reset.
func TestWatchedStreamStalled(t *testing.T) {
	const timeout = time.Minute
	type sweep struct {
		starts, ends int           // writes begun and ended since the last sweep
		after        time.Duration // since the last sweep
		want         bool
	}
	for _, tt := range []struct {
		name     string
		connWait bool
		sweeps   []sweep
	}{
		{"not writing", false, []sweep{{0, 0, 0, false}, {0, 0, time.Hour, false}, {0, 0, time.Hour, false}}},
		{"done writing", false, []sweep{{1, 0, 0, false}, {0, 1, 2 * timeout, false}, {0, 0, time.Hour, false}}},
		{"one write waiting", false, []sweep{{1, 0, 0, false}, {0, 0, timeout / 2, false}, {0, 0, timeout / 2, true}}},
		{"first seen late", false, []sweep{{0, 0, 0, false}, {1, 0, time.Hour, false}, {0, 0, timeout, true}}},
		{"writes completing", false, []sweep{{1, 0, 0, false}, {1, 1, timeout, false}, {1, 1, timeout, false}}},
		{"reset once", false, []sweep{{1, 0, 0, false}, {0, 0, timeout, true}, {0, 0, timeout, false}}},
		{"connection waiting", true, []sweep{{1, 0, 0, false}, {0, 0, time.Hour, false}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			clock := testclock.New(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC))
			conn := &trackedConn{}
			conn.waiting.Store(tt.connWait)
			s := &watchedStream{ctx: withConn(context.Background(), tls.Server(conn, nil))}
			for i, sw := range tt.sweeps {
				for range sw.starts {
					s.begin()
				}
				for range sw.ends {
					s.end()
				}
				clock.Advance(sw.after)
				if got := s.stalled(clock.Now(), timeout); got != sw.want {
					t.Errorf("sweep %d: stalled = %v, want %v", i, got, sw.want)
				}
			}
		})
	}
}

// BenchmarkStreamWatch is what watching costs an HTTP/2 request that
// writes its response once, on every core at once: its watch, a write's
// marks and its unwatch.
func BenchmarkStreamWatch(b *testing.B) {
	var sw streamWatch
	r := httptest.NewRequest("GET", "https://"+proxyTestHost+"/", nil)
	w := httptest.NewRecorder()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		var s watchedStream
		for pb.Next() {
			sw.watch(&s, w, r)
			s.begin()
			s.end()
			s.unwatch()
		}
	})
}
