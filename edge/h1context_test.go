package edge

import (
	"context"
	"errors"
	"os"
	"testing"
)

// TestRequestContextReuse checks that the loop reuses a request's
// context only when nothing can hold it: one whose Done was called stays
// done, and the next request gets a new one.
func TestRequestContextReuse(t *testing.T) {
	type key struct{}
	conn := context.WithValue(context.Background(), key{}, "conn")
	for _, tc := range []struct {
		name   string
		use    func(x *h1RequestContext)
		reused bool
	}{
		{"nothing waited", func(*h1RequestContext) {}, true},
		{"Err and Value only", func(x *h1RequestContext) { _, _ = x.Err(), x.Value(key{}) }, true},
		{"Done", func(x *h1RequestContext) { x.Done() }, false},
		{"a derived context", func(x *h1RequestContext) {
			_, cancel := context.WithCancel(x)
			cancel()
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			x := nextRequestContext(nil, conn)
			if x.Err() != nil || x.Value(key{}) != "conn" {
				t.Fatalf("new context: Err %v, Value %v", x.Err(), x.Value(key{}))
			}
			tc.use(x)
			x.cancel()
			if !errors.Is(x.Err(), context.Canceled) {
				t.Fatalf("canceled context: Err %v", x.Err())
			}
			y := nextRequestContext(x, conn)
			if (y == x) != tc.reused {
				t.Fatalf("reused %v, want %v", y == x, tc.reused)
			}
			if y.Err() != nil || y.Value(key{}) != "conn" {
				t.Fatalf("next context: Err %v, Value %v", y.Err(), y.Value(key{}))
			}
			if !tc.reused {
				select {
				case <-x.Done():
				default:
					t.Fatal("the dropped context is no longer done")
				}
			}
		})
	}
}

// TestRequestContextAbort checks abortOnDone on a real connection: the
// request's cancel cuts off a registered connection's read, and stop
// reports, as context.AfterFunc's does, whether it came first.
func TestRequestContextAbort(t *testing.T) {
	for _, tc := range []struct {
		name          string
		cancelFirst   bool // cancel before registering
		stopFirst     bool // stop before cancel
		wantStop      bool
		wantCutOffErr bool
	}{
		{"cancel while registered", false, false, false, true},
		{"canceled before registering", true, false, false, true},
		{"stopped before cancel", false, true, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			client, server := tcpPair(t)
			x := nextRequestContext(nil, context.Background())
			if tc.cancelFirst {
				x.cancel()
			}
			stop := abortOnDone(x, client)
			var stopped bool
			if tc.stopFirst {
				stopped = stop()
			}
			x.cancel()
			if !tc.stopFirst {
				stopped = stop()
			}
			if stopped != tc.wantStop {
				t.Errorf("stop() = %v, want %v", stopped, tc.wantStop)
			}
			if !tc.wantCutOffErr {
				server.Write([]byte("x"))
			}
			_, err := client.Read(make([]byte, 1))
			if got := errors.Is(err, os.ErrDeadlineExceeded); got != tc.wantCutOffErr {
				t.Errorf("read after cancel: %v; cut off %v, want %v", err, got, tc.wantCutOffErr)
			}
			if !x.reusable() {
				t.Error("a context with only abortOnDone's registration is not reusable")
			}
		})
	}
}
