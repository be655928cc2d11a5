// Package redistest runs a real redis-server on 127.0.0.1 for tests.
package redistest

import (
	"context"
	"net"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/redis/go-redis/v9"
)

// Server is a redis-server process that lives as long as the test.
type Server struct {
	Addr     string
	cmd      *exec.Cmd // the running process; replaced by Restart
	args     []string  // redis-server's command line
	password string
}

// passwordIn returns the value of --requirepass in args, if any.
func passwordIn(args []string) string {
	for i, a := range args {
		if a == "--requirepass" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// Start runs redis-server (no persistence) on a free port of 127.0.0.1,
// with extra server arguments (such as "--requirepass", "pw"), until the
// test ends. Without the binary it skips the test, unless
// KEYEDGE_REQUIRE_REDIS is set (as .ci/run does, having installed it),
// in which case the test fails.
func Start(t testing.TB, args ...string) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv("KEYEDGE_REQUIRE_REDIS") != "" {
			t.Fatalf("redis-server not found, and KEYEDGE_REQUIRE_REDIS is set: %v", err)
		}
		t.Skip("redis-server not installed (apt-get install redis-server; .ci/run does)")
	}
	addr := proctest.FreeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	s := &Server{Addr: addr}
	s.args = append([]string{bin, "--bind", "127.0.0.1", "--port", port,
		"--save", "", "--appendonly", "no", "--dir", t.TempDir(), "--loglevel", "warning"}, args...)
	s.password = passwordIn(args)
	t.Cleanup(func() {
		s.cmd.Process.Kill()
		s.cmd.Wait()
	})
	s.start(t)
	return s
}

// start runs the process and waits until it answers.
func (s *Server) start(t testing.TB) {
	t.Helper()
	s.cmd = exec.Command(s.args[0], s.args[1:]...)
	s.cmd.Stderr = os.Stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := s.Client(t)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if err := c.Ping(context.Background()).Err(); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("redis-server on %s not answering: %v", s.Addr, err)
		}
	}
}

func (s *Server) signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Save writes the data to disk (SAVE), for Restart to load.
func (s *Server) Save(t testing.TB) {
	t.Helper()
	if err := s.Client(t).Save(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
}

// Kill ends the process (SIGKILL): connections are refused until
// Restart.
func (s *Server) Kill(t testing.TB) {
	t.Helper()
	s.signal(t, os.Kill)
	s.cmd.Wait()
}

// Restart starts a killed server again on the same address, with the
// data of the last Save.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.start(t)
}

// Process is the redis-server process, for tests that stop, continue or
// kill it.
func (s *Server) Process() *os.Process { return s.cmd.Process }

// Client returns a new client of the server, closed when the test ends.
func (s *Server) Client(t testing.TB) *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: s.Addr, Password: s.password})
	t.Cleanup(func() { c.Close() })
	return c
}
