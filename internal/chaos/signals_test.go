package chaos

import (
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/excerpt"
	"github.com/keyedge/keyedge/internal/proctest"
)

// TestSIGTERMDrains sends SIGTERM while requests are in flight (held at
// the origin) and others keep arriving: the edge stops accepting, every
// request in flight completes with the origin's answer, and the edge
// exits 0.
func TestSIGTERMDrains(t *testing.T) {
	full(t)
	w := newWorld(t, options{KeyServers: 1})
	const inFlight = 8
	held := w.startLoad(load{Hosts: w.hosts(), Path: "/hold", Workers: inFlight, Requests: inFlight, Within: time.Minute})
	proctest.Eventually(t, 30*time.Second, "requests held at the origin", func() bool { return w.origin.held.Load() == inFlight })
	bg := w.startLoad(load{Hosts: w.hosts(), Requests: 1000})
	bg.waitCompleted(t, 100)

	w.edge.proc.Signal(t, syscall.SIGTERM)
	sentAt := bg.completed()
	w.edge.proc.WaitOutput(t, "draining", 30*time.Second)
	w.origin.release()
	held.wait(t).allOK(t, "in flight at SIGTERM", w.hosts()...)
	if err := w.edge.proc.Wait(t, 30*time.Second); err != nil {
		t.Errorf("edge exit after SIGTERM: %v, want status 0", err)
	}
	rep := bg.wait(t)
	(&report{outcomes: rep.outcomes[:sentAt]}).allOK(t, "before SIGTERM", w.hosts()...)
}

// TestSIGHUPUnderLoad reloads the config three times under load, over
// new and kept-alive connections: no request fails.
func TestSIGHUPUnderLoad(t *testing.T) {
	full(t)
	w := newWorld(t, options{})
	fresh := w.startLoad(load{Hosts: w.hosts(), Requests: 600, Within: 30 * time.Second})
	kept := w.startLoad(load{Hosts: w.hosts(), Requests: 600, Within: 30 * time.Second, KeepAlive: true})
	for i := 1; i <= 3; i++ {
		fresh.waitCompleted(t, i*150)
		w.edge.proc.Signal(t, syscall.SIGHUP)
		proctest.Eventually(t, 30*time.Second, "config reloaded", func() bool {
			return strings.Count(w.edge.proc.Output(t), "config reloaded") >= i
		})
	}
	fresh.wait(t).allOK(t, "SIGHUP under load, new connections", w.hosts()...)
	kept.wait(t).allOK(t, "SIGHUP under load, kept-alive connections", w.hosts()...)
}

// TestSIGUSR2UnderLoad upgrades the edge in place (SIGUSR2: a new
// process takes over the listening sockets, the old one drains) under
// load over new and kept-alive connections: no request fails, no
// connection is refused, the PID file names the new process, the old
// one exits 0, and the new one serves.
func TestSIGUSR2UnderLoad(t *testing.T) {
	w := newWorld(t, options{})
	oldPID := w.edge.proc.PID()
	proctest.Eventually(t, 10*time.Second, "PID file naming the edge", func() bool { return w.edge.servingPID() == oldPID })
	fresh := w.startLoad(load{Hosts: w.hosts(), Requests: 600, Within: 30 * time.Second})
	kept := w.startLoad(load{Hosts: w.hosts(), Requests: 600, Within: 30 * time.Second, KeepAlive: true})
	fresh.waitCompleted(t, 150)

	w.edge.proc.Signal(t, syscall.SIGUSR2)
	proctest.Eventually(t, 30*time.Second, "a new process in the PID file", func() bool {
		pid := w.edge.servingPID()
		return pid != 0 && pid != oldPID
	})
	newPID := w.edge.servingPID()
	w.track(newPID)
	if err := w.edge.proc.Wait(t, 30*time.Second); err != nil {
		t.Errorf("old edge process exit after SIGUSR2: %v, want status 0", err)
	}
	fresh.wait(t).allOK(t, "SIGUSR2 under load, new connections", w.hosts()...)
	kept.wait(t).allOK(t, "SIGUSR2 under load, kept-alive connections", w.hosts()...)

	if proctest.Exited(newPID) {
		t.Fatalf("new process %d exited", newPID)
	}
	w.run(load{Hosts: w.hosts(), Requests: 100}).allOK(t, "served by the new process", w.hosts()...)
	out := w.edge.proc.Output(t)
	for _, want := range []string{"SIGUSR2: starting a new process", "took over the listeners from the previous process", "the new process is ready; draining this one"} {
		if !strings.Contains(out, want) {
			t.Errorf("edge log lacks %q", want)
		}
	}
	if strings.Contains(out, "level=ERROR") {
		t.Errorf("edge logged an error during the upgrade")
	}
}

// TestSIGHUPBadLimits reloads, under load, a config whose
// limits.handshake_timeout is negative: the reload is refused with a
// log line naming the setting, no request fails, and the edge stays
// ready and serving on its previous settings.
func TestSIGHUPBadLimits(t *testing.T) {
	w := newWorld(t, options{KeyServers: 1})
	l := w.startLoad(load{Hosts: w.hosts(), Requests: maxRequests, Within: time.Minute})
	l.waitCompleted(t, 50)
	bad := w.edgeConfig(w.edge, w.keystore, options{Limits: []string{"handshake_timeout: -5s"}})
	if err := os.WriteFile(w.path("edge.yaml"), []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	w.edge.proc.Signal(t, syscall.SIGHUP)
	w.edge.proc.WaitOutput(t, "reload failed", 30*time.Second)
	reloadedAt := l.completed()
	l.waitCompleted(t, reloadedAt+100)
	l.stop()
	rep := l.wait(t)
	rep.allOK(t, "SIGHUP with a negative handshake timeout", w.hosts()...)
	rep.from(reloadedAt).allOK(t, "after the refused reload", w.hosts()...)
	out := w.edge.proc.Output(t)
	if !strings.Contains(out, "limits.handshake_timeout") || strings.Contains(out, "config reloaded") {
		t.Errorf("edge log: want the refused reload to name limits.handshake_timeout, and no reload:\n%s", excerpt.Of(out, 4000))
	}
	if !w.edge.ready() {
		t.Errorf("/readyz not 200 after the refused reload")
	}
}
