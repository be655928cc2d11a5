package chaos

import (
	"context"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

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
// state and rate-limited reminders.
const maxOutageLogLines = 20

// outage is what the edge did while its storage was unavailable.
type outage struct {
	rep      *report
	logLines int     // lines the edge logged during the load
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
	lines, errs, neg := w.edge.logLines(t), w.edge.metric(t, lookupErrors), w.edge.metric(t, lookupNegative)
	o := outage{rep: w.run(l)}
	o.logLines = w.edge.logLines(t) - lines
	o.errors = w.edge.metric(t, lookupErrors) - errs
	o.negative = w.edge.metric(t, lookupNegative) - neg
	t.Logf("outage: %d requests, %d edge log lines, %v lookup errors, %v unknown names", len(o.rep.outcomes), o.logLines, o.errors, o.negative)

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
	if o.logLines > maxOutageLogLines {
		t.Errorf("the edge logged %d lines during the outage, want at most %d:\n%s", o.logLines, maxOutageLogLines, truncate(w.edge.proc.Output(t), 4000))
	}
	if w.edge.readyStatus() != http.StatusServiceUnavailable {
		t.Errorf("/readyz not 503 during the outage")
	}
	return o
}

// recovered waits until the edge reports its storage available again,
// without a restart, and checks that every tenant is served.
func (w *world) recovered(what string) {
	t := w.t
	t.Helper()
	proctest.Eventually(t, 30*time.Second, what+": storage available again (/readyz 200, storage_up 1)", func() bool {
		return w.edge.ready() && w.edge.metric(t, storageUp) == 1
	})
	w.run(load{Hosts: w.hosts(), Requests: 100}).allOK(t, what, w.hosts()...)
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
	w.recovered("keystore moved back")
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
	for _, keystore := range []string{"nothere", "empty"} {
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
			if err == nil || !strings.Contains(string(out), "keystore: not initialised") || !strings.Contains(string(out), "run keyctl init") {
				t.Errorf("keyedge serve on keystore %q: %v\n%s\nwant a non-zero exit saying the keystore is not initialised", keystore, err, out)
			}
		})
	}
}
