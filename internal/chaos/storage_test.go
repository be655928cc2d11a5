package chaos

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/excerpt"
	"github.com/keyedge/keyedge/internal/proctest"
)

// Series the storage scenarios read.
const (
	storageUp      = "keyedge_keystore_storage_up"
	lookupErrors   = `keyedge_keystore_lookups_total{result="error"}`
	lookupNegative = `keyedge_keystore_lookups_total{result="negative"}`
)

// maxOutageLogLines bounds what the edge may log during one outage of
// its storage, whatever the number of failed lookups: the change of
// state and rate-limited reminders, go-redis's own dial errors included
// (routed through the edge's log, at most one every 10s).
const maxOutageLogLines = 5

// outage is what the edge did while its storage was unavailable.
type outage struct {
	rep      *report
	log      string  // what the edge logged during the load
	errors   float64 // lookups counted as errors during the load
	negative float64 // lookups counted as unknown names during the load
}

// duringOutage waits until the edge reports its storage unavailable
// (/readyz 503, keyedge_keystore_storage_up 0), runs l and checks what
// an unavailable storage must do: every request to cached completes
// with success; every request to uncached fails with an answer from the
// edge — not the client's timeout, not unrecognized_name — and is a
// lookup error, never an unknown name; the edge logs a bounded number of
// lines.
func (w *world) duringOutage(l load, cached, uncached []string) outage {
	t := w.t
	t.Helper()
	proctest.Eventually(t, 30*time.Second, "storage reported unavailable (/readyz 503, storage_up 0)", func() bool {
		return w.edge.readyStatus() == http.StatusServiceUnavailable && w.edge.metric(t, storageUp) == 0
	})
	mark, errs, neg := w.edge.logMark(t), w.edge.metric(t, lookupErrors), w.edge.metric(t, lookupNegative)
	o := outage{rep: w.run(l)}
	o.log = w.edge.logSince(t, mark)
	o.errors = w.edge.metric(t, lookupErrors) - errs
	o.negative = w.edge.metric(t, lookupNegative) - neg
	lines := 0
	for _, line := range strings.Split(strings.TrimSuffix(o.log, "\n"), "\n") {
		if line != "" {
			lines++
		}
	}
	t.Logf("outage: %d requests, %d edge log lines, %v lookup errors, %v unknown names", len(o.rep.outcomes), lines, o.errors, o.negative)

	o.rep.allOK(t, "cached tenants, storage unavailable", cached...)
	o.rep.allFailed(t, "uncached tenants, storage unavailable", uncached...)
	for _, err := range o.rep.failures(uncached...) {
		if isTimeout(err) || strings.Contains(err.Error(), "unrecognized name") {
			t.Errorf("uncached tenant, storage unavailable: %v; want a prompt handshake failure, not a timeout or unrecognized_name", err)
			break
		}
	}
	if failed := len(o.rep.failures(uncached...)); o.errors < float64(failed) || o.negative != 0 {
		t.Errorf("%d failed handshakes counted as %v lookup errors and %v unknown names; want each an error, none unknown", failed, o.errors, o.negative)
	}
	if lines > maxOutageLogLines {
		t.Errorf("the edge logged %d lines during the outage, want at most %d:\n%s", lines, maxOutageLogLines, excerpt.Of(o.log, 4000))
	}
	if w.edge.readyStatus() != http.StatusServiceUnavailable {
		t.Errorf("/readyz not 503 during the outage")
	}
	return o
}

// recovered waits until the edge reports its storage available again,
// without a restart, and checks that hosts are served.
func (w *world) recovered(what string, hosts ...string) {
	t := w.t
	t.Helper()
	proctest.Eventually(t, 30*time.Second, what+": storage available again (/readyz 200, storage_up 1)", func() bool {
		return w.edge.ready() && w.edge.metric(t, storageUp) == 1
	})
	w.run(load{Hosts: hosts, Requests: 100}).allOK(t, what, hosts...)
	select {
	case <-w.edge.proc.Done():
		t.Fatalf("%s: the edge exited", what)
	default:
	}
}

// TestKeystoreVanished moves the keystore directory away under load:
// cached tenants keep being served, uncached ones fail (an error, not
// unrecognized_name), /readyz says 503 and storage_up 0, and the edge
// logs a few lines, not one per failure. Moved back, every tenant is
// served again without a restart.
func TestKeystoreVanished(t *testing.T) {
	full(t)
	w := newWorld(t, options{Tenants: 4})
	cached, uncached := append([]string{keylessHost}, w.local[:2]...), w.local[2:]
	w.run(load{Hosts: cached, Requests: 30}).allOK(t, "warm-up", cached...)

	bg := w.startLoad(load{Hosts: cached, Requests: maxRequests, Within: time.Minute})
	bg.waitCompleted(t, 50)
	if err := os.Rename(w.path("keystore"), w.path("keystore.away")); err != nil {
		t.Fatal(err)
	}
	w.duringOutage(load{Hosts: w.hosts(), Requests: 200}, cached, uncached)
	if err := os.Rename(w.path("keystore.away"), w.path("keystore")); err != nil {
		t.Fatal(err)
	}
	w.recovered("keystore moved back", w.hosts()...)
	bg.stop()
	bg.wait(t).allOK(t, "cached tenants, keystore moved away and back", cached...)

}

// TestServeRefusesMissingKeystore runs `keyedge serve` on a keystore
// path that does not exist and on an empty directory (keyctl init never
// ran): it exits non-zero at once, saying the keystore is not
// initialised, instead of serving nothing.
func TestServeRefusesMissingKeystore(t *testing.T) {
	bins := proctest.Build(t, keyedgeCmd, keyctlCmd)
	dir := t.TempDir()
	w := &world{t: t, dir: dir, bins: map[string]string{keyedgeCmd: bins[0], keyctlCmd: bins[1]}}
	w.keyctl("init", "--keystore", "keystore", "--fleet-key", "fleet.key")
	if err := os.Mkdir(w.path("empty"), 0o700); err != nil {
		t.Fatal(err)
	}
	for keystore, want := range map[string]string{
		"nothere": "keystore: no keystore at ", // checked with the config's files
		"empty":   "keystore: not initialised", // checked when the keystore opens
	} {
		t.Run(keystore, func(t *testing.T) {
			cfg := w.path(keystore + ".yaml")
			yaml := "listen: " + proctest.FreeAddr(t) + "\nmetrics_listen: off\nkeystore: " + keystore + "\nfleet_key_file: fleet.key\n"
			if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, w.bins[keyedgeCmd], "serve", "--config", cfg)
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				t.Fatalf("keyedge serve on keystore %q still running after 30s, want it to refuse to start:\n%s", keystore, out)
			}
			if err == nil || !strings.Contains(string(out), want) || !strings.Contains(string(out), "keyctl init") {
				t.Errorf("keyedge serve on keystore %q: %v\n%s\nwant a non-zero exit saying the keystore is not initialised", keystore, err, out)
			}
		})
	}
}

// outageRequestTimeout bounds each request while the storage is down:
// half the edge's handshake timeout (10s), so a lookup waiting on a hung
// backend, as before per-call timeouts and the circuit breaker, shows as
// the client's timeout instead of a prompt failure.
const outageRequestTimeout = 5 * time.Second

// TestRedisUnavailable stops the Redis keystore (SIGSTOP: it accepts
// and answers nothing) under load, then kills it (connections refused).
// Each time, cached tenants are served, uncached ones fail promptly
// (every request of the load completes, none by the client's timeout),
// /readyz says 503, the edge logs a few lines; once Redis is continued,
// or restarted, every tenant is served without restarting the edge.
func TestRedisUnavailable(t *testing.T) {
	full(t)
	w := newWorld(t, options{Tenants: 6, Redis: true})
	cached := append([]string{keylessHost}, w.local[:2]...)
	w.run(load{Hosts: cached, Requests: 30}).allOK(t, "warm-up", cached...)
	bgHosts := slices.Clone(cached)
	bg := w.startLoad(load{Hosts: bgHosts, Requests: maxRequests, Within: 2 * time.Minute})
	bg.waitCompleted(t, 50)

	faults := []struct {
		name            string
		inject, recover func()
	}{
		{"SIGSTOP", func() { w.redis.Pause(t) }, func() { w.redis.Resume(t) }},
		{"SIGKILL", func() { w.redis.Save(t); w.redis.Kill(t) }, func() {
			w.redis.Restart(t)
			w.track(w.redis.Process().Pid)
		}},
	}
	for i, f := range faults {
		// Tenants never asked for before this fault: not cached.
		uncached := w.local[2+2*i : 4+2*i]
		f.inject()
		const requests = 200
		o := w.duringOutage(load{Hosts: append(cached, uncached...), Requests: requests, Within: time.Minute, Timeout: outageRequestTimeout}, cached, uncached)
		if n := len(o.rep.outcomes); n != requests {
			t.Errorf("Redis %s: %d of %d requests completed within the load's minute; want every one to end promptly", f.name, n, requests)
		}
		f.recover()
		cached = append(cached, uncached...)
		w.recovered("Redis back after "+f.name, cached...)
	}
	bg.stop()
	bg.wait(t).allOK(t, "cached tenants, Redis stopped and killed", bgHosts...)
}
