package testworld

import "context"

// TB is the part of testing.TB that ForTest uses (so that the demo's
// binary does not link package testing).
type TB interface {
	Helper()
	TempDir() string
	Cleanup(func())
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// ForTest is New for a test: the world's files are in a fresh
// t.TempDir() unless opts.Dir is set, Close runs when the test ends, and
// an error fails the test.
func ForTest(t TB, opts Options) *World {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	w, err := New(context.Background(), opts)
	if err != nil {
		t.Fatalf("%v", err)
	}
	t.Cleanup(func() {
		if err := w.Close(); err != nil {
			t.Errorf("%v", err)
		}
	})
	return w
}
