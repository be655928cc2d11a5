package chaos

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
)

// TestKeyServerKilled kills the preferred key server with SIGKILL under
// load while a second one is configured: every handshake, keyless ones
// included, still succeeds, and the keyless tenant keeps being served
// after the kill (by the second server). It runs over a keystore
// directory and, in the full suite, over a Redis keystore.
func TestKeyServerKilled(t *testing.T) {
	for _, redis := range []bool{false, true} {
		t.Run(map[bool]string{false: "dir", true: "redis"}[redis], func(t *testing.T) {
			if redis {
				full(t)
			}
			w := newWorld(t, options{Redis: redis})
			l := w.startLoad(load{Hosts: w.hosts(), Requests: 400})
			l.waitCompleted(t, 100)
			w.keySrv[0].kill()
			killedAt := l.completed()
			rep := l.wait(t)
			rep.allOK(t, "preferred key server killed under load", w.hosts()...)
			rep.from(killedAt).allOK(t, "after the kill", keylessHost)
		})
	}
}

// TestKeyServersAllDown kills both key servers: only the keyless tenant
// fails, the local tenants are unaffected; restarting one key server
// brings the keyless tenant back without restarting the edge.
func TestKeyServersAllDown(t *testing.T) {
	full(t)
	w := newWorld(t, options{})
	w.run(load{Hosts: w.hosts(), Requests: 40}).allOK(t, "before the fault", w.hosts()...)
	for _, ks := range w.keySrv {
		ks.kill()
	}
	rep := w.run(load{Hosts: w.hosts(), Requests: 200})
	rep.allFailed(t, "no key server", keylessHost)
	rep.allOK(t, "no key server", w.local...)

	w.keySrv[0].start()
	proctest.Eventually(t, 30*time.Second, "keyless tenant served again", func() bool { return w.serves(keylessHost) })
	w.run(load{Hosts: w.hosts(), Requests: 200}).allOK(t, "one key server back", w.hosts()...)
	select {
	case <-w.edge.proc.Done():
		t.Fatal("the edge exited")
	default:
	}
}

// TestKeyServerStopped SIGSTOPs the preferred key server under load: it
// accepts connections but answers nothing. No handshake fails: the edge
// gives up on it after the keyless attempt timeout and signs with the
// second server.
func TestKeyServerStopped(t *testing.T) {
	full(t)
	w := newWorld(t, options{})
	// Make the first server the measured, preferred one.
	w.run(load{Hosts: []string{keylessHost}, Requests: 10}).allOK(t, "warm-up", keylessHost)
	l := w.startLoad(load{Hosts: w.hosts(), Requests: 300})
	l.waitCompleted(t, 60)
	w.keySrv[0].proc.Signal(t, syscall.SIGSTOP)
	stoppedAt := l.completed()
	rep := l.wait(t)
	rep.allOK(t, "preferred key server stopped under load", w.hosts()...)
	rep.from(stoppedAt).allOK(t, "after the stop", keylessHost)
}

// TestKeyServersAllHung SIGSTOPs both key servers of the keyless tenant
// (they accept connections and answer nothing) and, once the edge has
// marked both down, runs a load: every keyless handshake fails promptly
// — none by the client's timeout, which is half the edge's handshake
// timeout — instead of holding its connection (and a slot of
// max_conns, shared by every tenant) until the handshake deadline; the
// local tenants are all served. Continued, the key servers sign again
// without restarting the edge.
func TestKeyServersAllHung(t *testing.T) {
	full(t)
	w := newWorld(t, options{})
	w.run(load{Hosts: w.hosts(), Requests: 40}).allOK(t, "before the fault", w.hosts()...)
	for _, ks := range w.keySrv {
		ks.proc.Signal(t, syscall.SIGSTOP)
	}
	// Each is marked down by a request's or a health check's attempt
	// timing out, and says so once.
	for _, ks := range w.keySrv {
		proctest.Eventually(t, time.Minute, ks.name+" marked down", func() bool {
			w.serves(keylessHost)
			return strings.Contains(w.edge.proc.Output(t), `msg="keyserver: key server failing (logged at most every 10s)" addr=`+ks.addr)
		})
	}
	rep := w.run(load{Hosts: w.hosts(), Requests: 100, Within: time.Minute, Timeout: outageRequestTimeout})
	rep.allFailed(t, "both key servers hung", keylessHost)
	rep.allOK(t, "local tenants, key servers hung", w.local...)
	for _, err := range rep.failures(keylessHost) {
		if isTimeout(err) {
			t.Errorf("keyless tenant, both key servers hung: %v; want a prompt handshake failure, not the client's timeout", err)
			break
		}
	}

	for _, ks := range w.keySrv {
		ks.proc.Signal(t, syscall.SIGCONT)
	}
	proctest.Eventually(t, 30*time.Second, "keyless tenant served again", func() bool { return w.serves(keylessHost) })
	w.run(load{Hosts: w.hosts(), Requests: 100}).allOK(t, "key servers continued", w.hosts()...)
}
