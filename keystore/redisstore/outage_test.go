package redisstore_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/backend"
	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/redistest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
	"github.com/keyedge/keyedge/keystore/redisstore"
)

// errorCount is a slog handler counting ERROR records.
type errorCount struct{ n atomic.Int64 }

func (h *errorCount) Enabled(context.Context, slog.Level) bool { return true }
func (h *errorCount) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		h.n.Add(1)
	}
	return nil
}
func (h *errorCount) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *errorCount) WithGroup(string) slog.Handler      { return h }

// TestRedisOutage stops Redis under a running keystore, hung (SIGSTOP)
// or refusing connections (killed): the breaker opens, uncached lookups
// fail with ErrUnavailable at once (never as corrupt entries, never
// waiting out their 10s context), cached tenants are still served, the
// ERROR lines stay a handful however many names are asked for, and
// Redis coming back recovers without a restart.
func TestRedisOutage(t *testing.T) {
	for _, mode := range []string{"hung", "refused"} {
		t.Run(mode, func(t *testing.T) {
			ctx := context.Background()
			srv := redistest.Start(t)
			location := "redis://" + srv.Addr + "?op_timeout=200ms"
			writerStorage, release, err := backend.Open(ctx, location, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer release()
			fleet, err := keystore.GenerateFleetKey()
			if err != nil {
				t.Fatal(err)
			}
			ca, err := testpki.NewCA("outage CA")
			if err != nil {
				t.Fatal(err)
			}
			writer, err := keystore.Open(ctx, keystore.Options{Storage: writerStorage, FleetKey: fleet, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			defer writer.Close()
			if err := ca.GenerateTenants(ctx, writer, testpki.TenantSpec{Count: 2}, nil); err != nil {
				t.Fatal(err)
			}

			storage, release2, err := backend.Open(ctx, location, "", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer release2()
			logs := &errorCount{}
			s, err := keystore.Open(ctx, keystore.Options{
				Storage: storage, FleetKey: fleet, PollInterval: 50 * time.Millisecond,
				Logger: slog.New(logs), RequireInit: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			cached, cold := testpki.TenantName(0, "keyedge.test"), testpki.TenantName(1, "keyedge.test")
			if _, err := s.Lookup(ctx, cached); err != nil {
				t.Fatal(err)
			}

			if mode == "hung" {
				srv.Pause(t)
				defer srv.Resume(t) // so cleanup can end it either way
			} else {
				srv.Save(t)
				srv.Kill(t)
			}
			breaker := storage.(*redisstore.Storage)
			eventually(t, 20*time.Second, "the breaker to open", func() bool { return breaker.Err() != nil })
			eventually(t, 20*time.Second, "Store.Err to report Redis", func() bool { return s.Err() != nil })
			if err := s.Err(); !errors.Is(err, keystore.ErrUnavailable) {
				t.Errorf("Store.Err = %v, want ErrUnavailable", err)
			}

			for i := range 50 {
				lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				_, err := s.Lookup(lctx, fmt.Sprintf("unknown%d.keyedge.test", i))
				cancel()
				if !errors.Is(err, keystore.ErrUnavailable) || errors.Is(err, keystore.ErrCorrupt) {
					t.Fatalf("lookup %d while Redis is %s = %v, want ErrUnavailable and not ErrCorrupt", i, mode, err)
				}
			}
			if _, err := s.Lookup(ctx, cached); err != nil {
				t.Errorf("cached tenant while Redis is %s: %v", mode, err)
			}
			if n := logs.n.Load(); n > 4 {
				t.Errorf("%d ERROR lines for one outage and 50 names, want a handful", n)
			}

			if mode == "hung" {
				srv.Resume(t)
			} else {
				srv.Restart(t)
			}
			eventually(t, 20*time.Second, "Store.Err to clear once Redis is back", func() bool { return s.Err() == nil })
			if _, err := s.Lookup(ctx, cold); err != nil {
				t.Errorf("uncached tenant after Redis came back: %v", err)
			}
			if err := breaker.Err(); err != nil {
				t.Errorf("breaker after recovery: %v", err)
			}
		})
	}
}

// eventually polls cond until it holds or the deadline passes.
var eventually = proctest.Eventually
