package acme

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testclock"
	"github.com/keyedge/keyedge/keystore"
	"golang.org/x/time/rate"
)

// countingStorage counts reads of the ACME managed index.
type countingStorage struct {
	certmagic.Storage
	reads atomic.Int64
}

func (s *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if strings.HasPrefix(key, managedDir+"/") {
		s.reads.Add(1)
	}
	return s.Storage.Load(ctx, key)
}

// allowServer is an operator's allow_url service on 127.0.0.1 that
// refuses every name and counts the questions.
func allowServer(t *testing.T) (allow func(context.Context, string) (Request, error), calls *atomic.Int64) {
	t.Helper()
	calls = new(atomic.Int64)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		calls.Add(1)
		http.Error(w, "not ours", http.StatusForbidden)
	}))
	t.Cleanup(srv.Close)
	allow, err := AllowURL(srv.Client(), srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	return allow, calls
}

// newOnDemandManager returns a Manager over a fresh keystore whose
// managed-index reads are counted. Its CA is unreachable: these tests
// are about what happens before anything is ordered.
func newOnDemandManager(t *testing.T, p *OnDemandPolicy) (*Manager, *countingStorage) {
	t.Helper()
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	storage := &countingStorage{Storage: &certmagic.FileStorage{Path: t.TempDir()}}
	discard := slog.New(slog.DiscardHandler)
	store, err := keystore.Open(context.Background(), keystore.Options{Storage: storage, FleetKey: fleet, Logger: discard})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	m, err := NewManager(Options{
		Store: store, Storage: storage, CA: "https://127.0.0.1:1/directory", Logger: discard,
		RetryBase: time.Hour, OnDemand: p,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m, storage
}

// TestOnDemandFloodOfUnknownNames: distinct unknown names cost at most
// the check budget in storage reads and allow_url calls, not one each,
// and a refused name is refused from memory until RefusedTTL passes.
func TestOnDemandFloodOfUnknownNames(t *testing.T) {
	ctx := testContext(t)
	const burst = 8
	clock := testclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	allow, calls := allowServer(t)
	m, storage := newOnDemandManager(t, &OnDemandPolicy{
		Allow: allow, CheckRate: rate.Every(time.Second), CheckBurst: burst,
		RefusedTTL: time.Minute, Now: clock.Now,
	})
	counts := func() (int64, int64) { return calls.Load(), storage.reads.Load() }

	limited := 0
	for i := range 1000 {
		err := m.OnDemand(ctx, fmt.Sprintf("flood-%d.example.test", i))
		switch {
		case errors.Is(err, ErrRateLimited):
			limited++
		case !errors.Is(err, ErrNotAllowed):
			t.Fatalf("name %d: %v, want ErrNotAllowed or ErrRateLimited", i, err)
		}
	}
	// The clock stood still: exactly the burst was checked.
	if c, r := counts(); c != burst || r != burst || limited != 1000-burst {
		t.Fatalf("1000 unknown names: %d allow_url calls, %d storage reads, %d rate limited; want %d, %d, %d",
			c, r, limited, burst, burst, 1000-burst)
	}

	// Half the TTL later the budget is full again, yet a refused name
	// is refused from memory; a new name is asked about.
	clock.Advance(30 * time.Second)
	if err := m.OnDemand(ctx, "flood-0.example.test"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("refused name within the TTL: %v, want ErrNotAllowed", err)
	}
	if c, r := counts(); c != burst || r != burst {
		t.Errorf("refused name within the TTL cost %d calls and %d reads", c-burst, r-burst)
	}
	if err := m.OnDemand(ctx, "fresh.example.test"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("new name: %v, want ErrNotAllowed", err)
	}
	if c, r := counts(); c != burst+1 || r != burst+1 {
		t.Errorf("new name with budget: %d calls and %d reads, want %d each", c, r, burst+1)
	}

	// Past the TTL the name is asked about again.
	clock.Advance(31 * time.Second)
	if err := m.OnDemand(ctx, "flood-0.example.test"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("refused name after the TTL: %v, want ErrNotAllowed", err)
	}
	if c, r := counts(); c != burst+2 || r != burst+2 {
		t.Errorf("refused name after the TTL: %d calls and %d reads, want %d each", c, r, burst+2)
	}
}

// TestOnDemandDeclareForgetsRefusal: a name refused because it was not
// declared is tried at once after Declare on this node, and a refusal
// caused by the caller's context is not remembered.
func TestOnDemandDeclareForgetsRefusal(t *testing.T) {
	ctx := testContext(t)
	clock := testclock.New(time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC))
	m, storage := newOnDemandManager(t, &OnDemandPolicy{Now: clock.Now})
	const name = "later.example.test"
	for range 2 {
		if err := m.OnDemand(ctx, name); !errors.Is(err, ErrNotAllowed) {
			t.Fatalf("undeclared name: %v, want ErrNotAllowed", err)
		}
	}
	if r := storage.reads.Load(); r != 1 {
		t.Errorf("undeclared name asked twice: %d reads, want 1", r)
	}
	if err := m.Declare(ctx, Request{Names: []string{name}, Tenant: "later"}); err != nil {
		t.Fatal(err)
	}
	// The CA is unreachable, so the order fails; what matters is that
	// it was attempted, not refused from memory.
	short, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := m.OnDemand(short, name); err == nil || errors.Is(err, ErrNotAllowed) {
		t.Errorf("declared name: %v, want an order error", err)
	}

	allow, calls := allowServer(t)
	m, _ = newOnDemandManager(t, &OnDemandPolicy{Allow: allow, Now: clock.Now})
	done, cancel := context.WithCancel(ctx)
	cancel()
	if err := m.OnDemand(done, "cancelled.example.test"); err == nil {
		t.Fatal("OnDemand with a cancelled context succeeded")
	}
	if err := m.OnDemand(ctx, "cancelled.example.test"); !errors.Is(err, ErrNotAllowed) {
		t.Errorf("after a cancelled ask: %v, want ErrNotAllowed", err)
	}
	if n := calls.Load(); n != 1 {
		t.Errorf("allow_url asked %d times, want 1 (the cancelled ask never reached it)", n)
	}
}
