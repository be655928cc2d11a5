//go:build !unix

package redistest

import (
	"runtime"
	"testing"
)

// Pause skips the test: a process is stopped (SIGSTOP) only on Unix
// (see pause_unix.go).
func (s *Server) Pause(t testing.TB) {
	t.Helper()
	t.Skipf("skipped: pausing redis-server needs SIGSTOP, which %s does not have", runtime.GOOS)
}

// Resume does nothing: Pause skipped the test.
func (s *Server) Resume(t testing.TB) {}
