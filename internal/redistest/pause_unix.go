//go:build unix

package redistest

import (
	"syscall"
	"testing"
)

// Pause stops the process (SIGSTOP): connections stay open and nothing
// answers, as with a hung Redis. Resume continues it.
func (s *Server) Pause(t testing.TB) { s.signal(t, syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume(t testing.TB) { s.signal(t, syscall.SIGCONT) }
