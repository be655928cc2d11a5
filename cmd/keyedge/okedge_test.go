package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
)

// okEdge runs keyedge serve in a new world named name: one tenant
// (t0.keyedge.test) whose origin answers "ok", a minimal edge.yaml
// (listen, no metrics listener, the world's keystore and fleet key) with
// extra appended, and args after "serve --config edge.yaml" (run in the
// world's directory). It returns once the TLS address listens, with the
// file's text.
func okEdge(t *testing.T, name, extra string, args ...string) (w *testworld.World, addr, cfg string, p *proctest.Process) {
	t.Helper()
	w = testworld.ForTest(t, testworld.Options{Name: name, Origin: http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		fmt.Fprint(rw, "ok")
	})})
	if err := w.GenerateTenants(context.Background(), testpki.TenantSpec{Count: 1}); err != nil {
		t.Fatal(err)
	}
	addr = proctest.FreeAddr(t)
	cfg = fmt.Sprintf("listen: %s\nmetrics_listen: \"off\"\nkeystore: %s\nfleet_key_file: %s\n%s",
		addr, testworld.KeystoreDir, testworld.FleetKeyFile, extra)
	if err := os.WriteFile(w.Path("edge.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	bin := proctest.Build(t, "cmd/keyedge")[0]
	p = proctest.Start(t, "keyedge", w.Dir, bin, append([]string{"serve", "--config", w.Path("edge.yaml")}, args...)...)
	proctest.WaitListening(t, addr, 20*time.Second)
	return w, addr, cfg, p
}
