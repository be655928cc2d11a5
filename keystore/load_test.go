package keystore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/keystore"
)

// gatedStorage is a real FileStorage whose Loads of keys with a given
// suffix wait for the gate to open, honouring ctx as a network backend
// does (it returns ctx.Err() when ctx ends first).
type gatedStorage struct {
	keystore.Storage
	suffix  string
	entered chan struct{} // receives once per gated Load, when it starts waiting
	gate    chan struct{} // closed to let gated Loads through
}

func newGatedStorage(dir, suffix string) *gatedStorage {
	return &gatedStorage{
		Storage: &certmagic.FileStorage{Path: dir},
		suffix:  suffix,
		entered: make(chan struct{}, 64),
		gate:    make(chan struct{}),
	}
}

func (g *gatedStorage) Load(ctx context.Context, key string) ([]byte, error) {
	if strings.HasSuffix(key, g.suffix) {
		g.entered <- struct{}{}
		select {
		case <-g.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return g.Storage.Load(ctx, key)
}

// result is what one PrivateKey or Lookup call returned.
type result struct {
	ok  bool
	err error
}

// waitResult waits for a call's result. The bound is generous: it only
// catches a call that waits on something other than its own context.
func waitResult(t *testing.T, ch <-chan result, what string) result {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not return: it waits for another caller's load instead of its own context", what)
		return result{}
	}
}

// A caller that gives up on a key load neither makes the next caller
// fail (its cancellation is not remembered as the key's error) nor
// keeps others waiting beyond their own contexts: the shared load runs
// detached from every caller.
func TestPrivateKeyCallerCancellation(t *testing.T) {
	f := newFixture(t)
	put(t, f.open(t, keystore.Options{}), f.bundle(t, "", "shop.example.com"))
	splitKeys(t, f) // a key read of its own, to hold up
	gs := newGatedStorage(f.dir, "/key.sealed")
	s := f.open(t, keystore.Options{Storage: gs, NegativeTTL: time.Hour})
	e, err := s.Lookup(context.Background(), "shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	c := e.Certs[0]
	call := func(ctx context.Context) <-chan result {
		ch := make(chan result, 1)
		go func() {
			k, err := c.PrivateKey(ctx)
			ch <- result{k != nil, err}
		}()
		return ch
	}

	ctxA, cancelA := context.WithCancel(context.Background())
	a := call(ctxA)
	<-gs.entered // A's load is reading the key file

	// B gives up while A's load is still running: B returns at once.
	ctxB, cancelB := context.WithCancel(context.Background())
	b := call(ctxB)
	cancelB()
	if r := waitResult(t, b, "PrivateKey with a cancelled context"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("B: PrivateKey = %v, want context.Canceled", r.err)
	}
	cancelA()
	if r := waitResult(t, a, "PrivateKey with a cancelled context"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("A: PrivateKey = %v, want context.Canceled", r.err)
	}

	// The load the first caller started goes on; the next caller gets the key.
	close(gs.gate)
	if r := waitResult(t, call(context.Background()), "PrivateKey"); r.err != nil || !r.ok {
		t.Fatalf("PrivateKey after earlier callers gave up = %v; a caller's cancellation was remembered as the key's error", r.err)
	}
}

// A shared key load is bounded by KeyLoadTimeout even when every caller
// would wait forever, and its timeout is not remembered as the key's
// error: the next call loads again.
func TestPrivateKeyLoadTimeout(t *testing.T) {
	f := newFixture(t)
	put(t, f.open(t, keystore.Options{}), f.bundle(t, "", "slow.example.com"))
	splitKeys(t, f) // a key read of its own, to hold up
	gs := newGatedStorage(f.dir, "/key.sealed")
	s := f.open(t, keystore.Options{Storage: gs, NegativeTTL: time.Hour, KeyLoadTimeout: 50 * time.Millisecond})
	e, err := s.Lookup(context.Background(), "slow.example.com")
	if err != nil {
		t.Fatal(err)
	}
	ch := make(chan result, 1)
	go func() {
		_, err := e.Certs[0].PrivateKey(context.Background())
		ch <- result{err: err}
	}()
	if r := waitResult(t, ch, "PrivateKey with storage stuck"); !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("PrivateKey with storage stuck = %v, want context.DeadlineExceeded", r.err)
	}
	close(gs.gate)
	if _, err := e.Certs[0].PrivateKey(context.Background()); err != nil {
		t.Fatalf("PrivateKey after the storage recovered = %v; the load timeout was remembered", err)
	}
}

// The name and record loads behind Lookup are shared too (otter's
// singleflight): a caller that gives up while it runs the load fails
// alone; a caller waiting on the same load loads again under its own
// context, and nothing of the cancellation is cached.
func TestLookupCallerCancellation(t *testing.T) {
	f := newFixture(t)
	put(t, f.open(t, keystore.Options{}), f.bundle(t, "", "shop.example.com"))
	gs := newGatedStorage(f.dir, "/record")
	s := f.open(t, keystore.Options{Storage: gs, NegativeTTL: time.Hour})
	call := func(ctx context.Context) <-chan result {
		ch := make(chan result, 1)
		go func() {
			e, err := s.Lookup(ctx, "shop.example.com")
			ch <- result{e != nil, err}
		}()
		return ch
	}
	ctxA, cancelA := context.WithCancel(context.Background())
	a := call(ctxA)
	<-gs.entered
	b := call(context.Background())
	cancelA()
	if r := waitResult(t, a, "Lookup with a cancelled context"); !errors.Is(r.err, context.Canceled) {
		t.Fatalf("A: Lookup = %v, want context.Canceled", r.err)
	}
	close(gs.gate)
	if r := waitResult(t, b, "Lookup"); r.err != nil || !r.ok {
		t.Fatalf("B, waiting on A's load: Lookup = %v", r.err)
	}
	if _, err := s.Lookup(context.Background(), "shop.example.com"); err != nil {
		t.Fatalf("Lookup after a caller gave up = %v", err)
	}
}
