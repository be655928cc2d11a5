package keystore_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/filestore"
	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

// countingStorage is a real FileStorage that counts Loads by the first
// path element ("names", "certs", "changes") and can slow them down.
type countingStorage struct {
	keystore.Storage
	delay time.Duration

	mu    sync.Mutex // guards loads
	loads map[string]int
}

func (c *countingStorage) Load(ctx context.Context, key string) ([]byte, error) {
	c.mu.Lock()
	if c.loads == nil {
		c.loads = map[string]int{}
	}
	kind, _, _ := strings.Cut(key, "/")
	if strings.HasSuffix(key, "/key.sealed") {
		kind = "key"
	}
	c.loads[kind]++
	c.mu.Unlock()
	time.Sleep(c.delay)
	return c.Storage.Load(ctx, key)
}

func (c *countingStorage) count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.loads[kind]
}

// logCounter is a slog handler that records error messages.
type logCounter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	errs atomic.Int64
}

func (l *logCounter) Enabled(context.Context, slog.Level) bool { return true }
func (l *logCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		l.errs.Add(1)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.WriteString(r.Message + "\n")
	r.Attrs(func(a slog.Attr) bool { l.buf.WriteString(a.String() + "\n"); return true })
	return nil
}
func (l *logCounter) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *logCounter) WithGroup(string) slog.Handler      { return l }

// fixture is a keystore directory with a fleet key and a test CA.
type fixture struct {
	dir   string
	fleet *keystore.FleetKey
	ca    *testpki.CA
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	ca, err := testpki.NewCA("keystore test CA")
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{dir: t.TempDir(), fleet: fleet, ca: ca}
}

// open opens a Store on the fixture's directory; opts fields left zero
// get the fixture's storage and fleet key.
func (f *fixture) open(t testing.TB, opts keystore.Options) *keystore.Store {
	t.Helper()
	if opts.Storage == nil {
		opts.Storage = filestore.New(f.dir) // as backend.Open gives the edge
	}
	if opts.FleetKey == nil {
		opts.FleetKey = f.fleet
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	s, err := keystore.Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// bundle issues a certificate for names with a key of type kt.
func (f *fixture) bundle(t testing.TB, kt testpki.KeyType, names ...string) *keystore.Bundle {
	t.Helper()
	leaf, err := f.ca.Issue(testpki.LeafSpec{Names: names, KeyType: kt})
	if err != nil {
		t.Fatal(err)
	}
	return &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: "tenant-" + names[0], Origin: "http://127.0.0.1:1"},
		Chain: leaf.Chain,
		Key:   leaf.Key,
	}
}

// put stores bundles through s and returns their IDs.
func put(t testing.TB, s *keystore.Store, bs ...*keystore.Bundle) []string {
	t.Helper()
	ids, err := s.Put(context.Background(), bs...)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

// eventually polls cond until it holds or the deadline passes.
var eventually = proctest.Eventually

// splitKeys moves f's sealed keys out of their records into key.sealed
// files, the layout before, which edges read as ever.
func splitKeys(t *testing.T, f *fixture) {
	t.Helper()
	if err := keystore.SplitKeys(f.dir); err != nil {
		t.Fatal(err)
	}
}
