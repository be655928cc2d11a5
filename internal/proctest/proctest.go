// Package proctest builds this repository's commands and runs them as
// real processes for tests: binaries built once per test binary, free
// ports on 127.0.0.1, processes whose output goes to a file (shown when
// the test fails) and which are always continued and killed when the
// test ends, and bounded polling instead of sleeps.
//
// A package using Build calls Main from its TestMain, so the binaries
// are removed when its tests end.
package proctest

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// module is the import path commands are built from.
const module = "github.com/keyedge/keyedge/"

// built holds the binaries built so far by this test binary.
var built struct {
	mu   sync.Mutex        // guards the fields below
	dir  string            // temporary directory holding them
	bins map[string]string // package path (e.g. "cmd/keyserver") → binary
}

// Main runs the tests of m, removes the binaries Build made and exits
// with the tests' status. Call it from TestMain.
func Main(m *testing.M) {
	os.Exit(M(m).Run())
}

// M wraps m for a TestMain that hands it on rather than calling Main
// (testscript.Main takes any Run() int): its Run runs the tests, then
// removes the binaries Build made.
func M(m *testing.M) interface{ Run() int } { return cleanup{m} }

type cleanup struct{ m *testing.M }

func (c cleanup) Run() int {
	code := c.m.Run()
	built.mu.Lock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
	}
	built.mu.Unlock()
	return code
}

// Build returns the paths of the binaries of pkgs, paths of main packages
// in this module (such as "cmd/keyserver"), building those not built yet
// by this test binary in one `go build` (the binaries are built without
// -race: only the test process needs it).
func Build(t testing.TB, pkgs ...string) []string {
	t.Helper()
	built.mu.Lock()
	defer built.mu.Unlock()
	if built.dir == "" {
		dir, err := os.MkdirTemp("", "keyedge-proctest-")
		if err != nil {
			t.Fatal(err)
		}
		built.dir, built.bins = dir, map[string]string{}
	}
	var missing []string
	for _, p := range pkgs {
		if _, ok := built.bins[p]; !ok {
			missing = append(missing, module+p)
		}
	}
	if len(missing) > 0 {
		out, err := exec.Command("go", append([]string{"build", "-o", built.dir + string(filepath.Separator)}, missing...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("go build %s: %v\n%s", strings.Join(missing, " "), err, out)
		}
		for _, p := range missing {
			built.bins[strings.TrimPrefix(p, module)] = filepath.Join(built.dir, path.Base(p))
		}
	}
	paths := make([]string, len(pkgs))
	for i, p := range pkgs {
		paths[i] = built.bins[p]
	}
	return paths
}

// FreeAddr returns a 127.0.0.1 address nothing listens on, for a process
// to bind.
//
// The port is drawn from below the kernel's ephemeral range (Linux's
// default starts at 32768, macOS's at 49152), which is where every
// outgoing connection and every ":0" listener gets its port: a port taken
// from that range and closed again can be handed to a parallel test's
// connection before the process binds it ("address already in use").
// Only another FreeAddr caller can pick the same port, 1 in 12,000.
func FreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := PickFreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// PickFreeAddr is FreeAddr for callers without a testing.TB (test
// scripts' setup).
func PickFreeAddr() (string, error) {
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(freePortLow+rand.IntN(freePortHigh-freePortLow)))
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			return addr, nil
		}
	}
	return "", fmt.Errorf("no free port in [%d, %d) on 127.0.0.1", freePortLow, freePortHigh)
}

// The range FreeAddr draws ports from: below the ephemeral ranges.
const freePortLow, freePortHigh = 20000, 32000

// Eventually polls cond every 20ms until it holds, and fails the test if
// it still does not after within.
func Eventually(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %v: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitListening waits up to within for something to accept TCP
// connections on addr.
func WaitListening(t testing.TB, addr string, within time.Duration) {
	t.Helper()
	Eventually(t, within, "listening on "+addr, func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

// Exited reports whether process pid has exited (or is a zombie its
// parent has not reaped yet).
func Exited(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// The state follows the command name in parentheses.
	i := bytes.LastIndexByte(data, ')')
	return i < 0 || i+2 >= len(data) || data[i+2] == 'Z'
}

// KillOnCleanup continues and kills process pid when the test ends: for
// processes the test caused to exist without starting them itself (a
// process's replacement after a SIGUSR2 upgrade, say). The process is
// found now, so on Linux (a pidfd) a later kill cannot reach another
// process that reused the ID.
func KillOnCleanup(t testing.TB, pid int) *os.Process {
	t.Helper()
	p, err := os.FindProcess(pid)
	if err != nil {
		t.Fatalf("process %d: %v", pid, err)
	}
	t.Cleanup(func() { Kill(p) })
	return p
}

// Kill continues p (in case it was stopped) and kills it with SIGKILL.
// A process that has exited already is left alone.
func Kill(p *os.Process) {
	continueProcess(p)
	p.Kill()
}

// Process is a running command started by Start.
type Process struct {
	Name string // for messages
	Cmd  *exec.Cmd
	Log  string // file holding the process's standard output and error

	done chan struct{} // closed when the process has exited and been reaped
	err  error         // cmd.Wait's result, set before done is closed
}

// Start runs bin with args in dir, its output appended to a log file in
// dir named after name, until the test ends: then it is continued (in
// case the test stopped it), killed and reaped. When the test has
// failed, the end of the log is written to the test log.
//
// The output goes to a file, not a pipe, so a process that hands its
// standard streams on to a successor (keyedge's SIGUSR2 upgrade) never
// keeps a reader waiting.
func Start(t testing.TB, name, dir, bin string, args ...string) *Process {
	t.Helper()
	p := &Process{Name: name, Log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logFile, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close() // the child holds its own descriptor
	p.Cmd = exec.Command(bin, args...)
	p.Cmd.Dir, p.Cmd.Stdout, p.Cmd.Stderr = dir, logFile, logFile
	if err := p.Cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		Kill(p.Cmd.Process)
		<-p.done
		if t.Failed() {
			t.Logf("%s: end of %s:\n%s", name, p.Log, tail(p.Log, 4096))
		}
	})
	return p
}

// PID is the process's ID.
func (p *Process) PID() int { return p.Cmd.Process.Pid }

// Signal sends sig to the process, failing the test if it cannot.
func (p *Process) Signal(t testing.TB, sig os.Signal) {
	t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		t.Fatalf("%s: signal %v: %v", p.Name, sig, err)
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Wait waits up to within for the process to exit and returns its exit
// error (nil for status 0), failing the test if it does not exit.
func (p *Process) Wait(t testing.TB, within time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(within):
		t.Fatalf("%s did not exit within %v", p.Name, within)
		return nil
	}
}

// Output is everything the process has written so far.
func (p *Process) Output(t testing.TB) string {
	t.Helper()
	data, err := os.ReadFile(p.Log)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// WaitOutput waits up to within for the process's output to contain s.
func (p *Process) WaitOutput(t testing.TB, s string, within time.Duration) {
	t.Helper()
	Eventually(t, within, fmt.Sprintf("%s writing %q", p.Name, s), func() bool {
		return strings.Contains(p.Output(t), s)
	})
}

// tail is at most the last n bytes of file.
func tail(file string, n int) string {
	data, err := os.ReadFile(file)
	if err != nil {
		return err.Error()
	}
	if len(data) > n {
		data = data[len(data)-n:]
	}
	return string(data)
}
