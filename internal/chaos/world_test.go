package chaos

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/redistest"
	"github.com/keyedge/keyedge/internal/testpki"
)

func TestMain(m *testing.M) { proctest.Main(m) }

// The binaries every scenario runs, built once per test run.
const (
	keyedgeCmd   = "cmd/keyedge"
	keyserverCmd = "cmd/keyserver"
	keyctlCmd    = "cmd/keyctl"
)

// keylessHost is the tenant whose key only the key servers hold.
const keylessHost = "keyless.keyedge.test"

// edgeIdentity is the name in the edge's mTLS identity, the only client
// the key servers authorize.
const edgeIdentity = "edge.chaos.test"

// full skips a scenario unless the whole suite was asked for
// (KEYEDGE_CHAOS=1, as `make chaos` sets): `make test` runs only the
// fast ones.
func full(t *testing.T) {
	t.Helper()
	if os.Getenv("KEYEDGE_CHAOS") == "" {
		t.Skip("part of the full chaos suite: make chaos (KEYEDGE_CHAOS=1)")
	}
}

// options shape a world. The zero value is three local tenants, the
// keyless tenant and two key servers.
type options struct {
	Tenants    int           // local tenants t0 … t<N-1>.keyedge.test [3]
	KeyServers int           // key servers holding the keyless tenant's key, in preference order [2]
	Timeout    time.Duration // hard bound on the scenario: then every process is killed and the test fails [2m]
	EdgeConfig string        // extra lines for edge.yaml (top-level keys not written by the world)
	Limits     []string      // extra settings under limits: in edge.yaml, such as "body_read_timeout: 1s"
	Redis      bool          // keep the keystore in a redis-server (internal/redistest) instead of a directory
	// KeystoreTmpfs, if not 0, keeps the keystore directory on a tmpfs
	// of that many bytes (world.tmpfs), which a scenario can fill; the
	// scenario is skipped where mounting one is not allowed.
	KeystoreTmpfs int64
}

// world is one scenario's set of real processes on 127.0.0.1: an origin
// (in the test process), a keystore made by keyctl, key servers and an
// edge, all in a temporary directory and all ended when the test ends.
type world struct {
	t      *testing.T
	dir    string
	bins   map[string]string // command → binary
	origin *origin
	local  []string // local tenants' names
	keySrv []*keyServer
	edge   *edgeNode
	// keystore is the keystore's location, as keyctl and edge.yaml name
	// it: "keystore" (a directory in dir) or a redis:// URL.
	keystore string
	redis    *redistest.Server // with options.Redis
	tmpfs    string            // with options.KeystoreTmpfs: the tmpfs holding the keystore directory

	mu    sync.Mutex    // guards procs
	procs []*os.Process // every process the scenario caused, for the watchdog
	timer *time.Timer
	// timedOut is set when the watchdog fired.
	timedOut atomic.Bool
}

// newWorld sets up a keystore with opts.Tenants local tenants and the
// keyless tenant, starts the key servers and an edge, and waits until
// the edge is ready.
func newWorld(t *testing.T, opts options) *world {
	t.Helper()
	if opts.Tenants == 0 {
		opts.Tenants = 3
	}
	if opts.KeyServers == 0 {
		opts.KeyServers = 2
	}
	if opts.Timeout == 0 {
		opts.Timeout = 2 * time.Minute
	}
	bins := proctest.Build(t, keyedgeCmd, keyserverCmd, keyctlCmd)
	w := &world{t: t, dir: t.TempDir(), bins: map[string]string{keyedgeCmd: bins[0], keyserverCmd: bins[1], keyctlCmd: bins[2]}}
	w.startWatchdog(opts.Timeout)
	w.origin = startOrigin(t)
	w.keystore = "keystore"
	if opts.Redis {
		w.redis = redistest.Start(t)
		w.track(w.redis.Process().Pid)
		w.keystore = "redis://" + w.redis.Addr + "/0?prefix=chaos"
	}
	if opts.KeystoreTmpfs > 0 {
		w.tmpfs = proctest.Tmpfs(t, opts.KeystoreTmpfs)
		w.keystore = filepath.Join(w.tmpfs, "keystore")
	}

	w.keyctl("init", "--keystore", w.keystore, "--fleet-key", "fleet.key")
	w.keyctl("gen-tenants", "--keystore", w.keystore, "--fleet-key", "fleet.key",
		"--count", fmt.Sprint(opts.Tenants), "--origin", w.origin.URL, "--ca", "testca")
	for i := range opts.Tenants {
		w.local = append(w.local, testpki.TenantName(i, "keyedge.test"))
	}
	w.keyctl("identity", edgeIdentity, "--ca", "identity-ca", "--out", "edge-identity")

	// The keyless tenant: a certificate from the test CA whose key goes
	// to the key servers only.
	ca, err := testpki.LoadCA(filepath.Join(w.dir, "testca.pem"), filepath.Join(w.dir, "testca.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{keylessHost}})
	if err != nil {
		t.Fatal(err)
	}
	importArgs := []string{"import", "--keystore", w.keystore, "--fleet-key", "fleet.key",
		"--cert", "keyless.pem", "--keyless", "--tenant", "keyless", "--origin", w.origin.URL}
	for i := range opts.KeyServers {
		ks := w.newKeyServer(fmt.Sprintf("ks%d", i+1), leaf)
		importArgs = append(importArgs, "--key-server", ks.addr)
	}
	// keyctl import reads the chain; the key must not stay beside it.
	if err := leaf.WritePEM(w.path("keyless.pem"), w.path("keyless.key")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(w.path("keyless.key")); err != nil {
		t.Fatal(err)
	}
	w.keyctl(importArgs...)
	for _, ks := range w.keySrv {
		ks.start()
	}
	w.edge = w.startEdge(opts)
	return w
}

// startWatchdog kills every process of the scenario once limit has
// passed, so a scenario stuck on a hung process ends (failing) instead
// of running into go test's global timeout.
func (w *world) startWatchdog(limit time.Duration) {
	w.timer = time.AfterFunc(limit, func() {
		w.timedOut.Store(true)
		w.mu.Lock()
		defer w.mu.Unlock()
		for _, p := range w.procs {
			proctest.Kill(p)
		}
	})
	w.t.Cleanup(func() {
		w.timer.Stop()
		if w.timedOut.Load() {
			w.t.Errorf("scenario exceeded its hard timeout of %v: every process was killed", limit)
		}
	})
}

// track puts process pid under the watchdog, and kills it when the test
// ends.
func (w *world) track(pid int) {
	w.t.Helper()
	p := proctest.KillOnCleanup(w.t, pid)
	w.mu.Lock()
	w.procs = append(w.procs, p)
	w.mu.Unlock()
}

// start runs command cmd (keyedgeCmd, …) in the world's directory.
func (w *world) start(name, cmd string, args ...string) *proctest.Process {
	w.t.Helper()
	p := proctest.Start(w.t, name, w.dir, w.bins[cmd], args...)
	w.track(p.PID())
	return p
}

// keyctl runs keyctl in the world's directory and returns its output.
func (w *world) keyctl(args ...string) string {
	w.t.Helper()
	code, out := w.keyctlStatus(args...)
	if code != 0 {
		w.t.Fatalf("keyctl %s: exit status %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// keyctlStatus runs keyctl in the world's directory and returns its exit
// status and output.
func (w *world) keyctlStatus(args ...string) (int, string) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, w.bins[keyctlCmd], args...)
	cmd.Dir = w.dir
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		w.t.Fatalf("keyctl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// path is file name in the world's directory.
func (w *world) path(name string) string { return filepath.Join(w.dir, name) }

// keyServer is one key server process holding the keyless tenant's key.
type keyServer struct {
	w    *world
	name string
	addr string
	dir  string
	proc *proctest.Process
}

// newKeyServer writes the files of key server name: its identity, the
// keyless tenant's key and a config authorizing the edge's identity for
// that key only.
func (w *world) newKeyServer(name string, tenant *testpki.Leaf) *keyServer {
	w.t.Helper()
	ks := &keyServer{w: w, name: name, addr: proctest.FreeAddr(w.t), dir: w.path(name)}
	if err := os.MkdirAll(filepath.Join(ks.dir, "keys"), 0o700); err != nil {
		w.t.Fatal(err)
	}
	w.keyctl("identity", name+".chaos.test", "--ca", "identity-ca", "--ip", "127.0.0.1", "--out", filepath.Join(name, "server"))
	if err := tenant.WritePEM(filepath.Join(ks.dir, "keys", "keyless.pem"), filepath.Join(ks.dir, "keys", "keyless.key")); err != nil {
		w.t.Fatal(err)
	}
	cfg := fmt.Sprintf(`listen: %s
cert_file: server.pem
key_file: server.key
client_ca_file: ../identity-ca.pem
keys_dir: keys
log_level: warn
authorize:
  - clients: ["dns:%s"]
    keys: ["name:%s"]
`, ks.addr, edgeIdentity, keylessHost)
	if err := os.WriteFile(filepath.Join(ks.dir, "keyserver.yaml"), []byte(cfg), 0o600); err != nil {
		w.t.Fatal(err)
	}
	w.keySrv = append(w.keySrv, ks)
	return ks
}

// start runs the key server (again, after a kill: same address, same
// files) and waits until it listens.
func (ks *keyServer) start() {
	ks.w.t.Helper()
	ks.proc = ks.w.start(ks.name, keyserverCmd, "--config", filepath.Join(ks.dir, "keyserver.yaml"))
	proctest.WaitListening(ks.w.t, ks.addr, 15*time.Second)
}

// kill ends the key server with SIGKILL and reaps it.
func (ks *keyServer) kill() {
	ks.w.t.Helper()
	ks.proc.Signal(ks.w.t, syscall.SIGKILL)
	ks.proc.Wait(ks.w.t, 10*time.Second)
}

// edgeNode is the keyedge serve process.
type edgeNode struct {
	w       *world
	addr    string // TLS listener
	metrics string // /metrics, /readyz
	pidFile string
	proc    *proctest.Process
}

// startEdge writes edge.yaml (see edgeConfig) and runs `keyedge serve`
// with a PID file until /readyz answers 200.
func (w *world) startEdge(opts options) *edgeNode {
	w.t.Helper()
	e := &edgeNode{w: w, addr: proctest.FreeAddr(w.t), metrics: proctest.FreeAddr(w.t), pidFile: w.path("keyedge.pid")}
	if err := os.WriteFile(w.path("edge.yaml"), []byte(w.edgeConfig(e, w.keystore, opts)), 0o600); err != nil {
		w.t.Fatal(err)
	}
	e.proc = w.start("keyedge", keyedgeCmd, "serve", "--config", w.path("edge.yaml"), "--pid-file", e.pidFile)
	proctest.Eventually(w.t, 30*time.Second, "edge ready (/readyz 200)", e.ready)
	return e
}

// edgeConfig is the edge.yaml of e over keystore: its addresses, the
// keyless identity, a 10s drain, plus opts.Limits and opts.EdgeConfig.
func (w *world) edgeConfig(e *edgeNode, keystore string, opts options) string {
	var limits strings.Builder
	for _, l := range opts.Limits {
		fmt.Fprintf(&limits, "  %s\n", l)
	}
	return fmt.Sprintf(`listen: %s
metrics_listen: %s
keystore: %s
fleet_key_file: fleet.key
keyless:
  cert_file: edge-identity.pem
  key_file: edge-identity.key
  ca_file: identity-ca.pem
limits:
  drain_timeout: 10s
%s%s`, e.addr, e.metrics, keystore, limits.String(), opts.EdgeConfig)
}

// ready reports whether the edge's /readyz answers 200.
func (e *edgeNode) ready() bool { return e.readyStatus() == http.StatusOK }

// readyStatus is the status of the edge's /readyz (0 if it does not
// answer).
func (e *edgeNode) readyStatus() int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + e.metrics + "/readyz")
	if err != nil {
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// servingPID is the PID the edge's PID file names (0 if none).
func (e *edgeNode) servingPID() int {
	data, err := os.ReadFile(e.pidFile)
	if err != nil {
		return 0
	}
	var pid int
	fmt.Sscan(string(data), &pid)
	return pid
}

// tenantFiles are the storage files of a local tenant, as DESIGN.md's
// keystore layout places them.
type tenantFiles struct {
	name, record string
}

// filesOf finds the files of tenant name in the world's keystore
// directory.
func (w *world) filesOf(name string) tenantFiles {
	w.t.Helper()
	if w.redis != nil {
		w.t.Fatal("filesOf: the keystore is in Redis")
	}
	sum := sha256.Sum256([]byte(name))
	nameFile := filepath.Join(w.dir, "keystore", "names", hex.EncodeToString(sum[:1]), name)
	data, err := os.ReadFile(nameFile)
	if err != nil {
		w.t.Fatal(err)
	}
	id, _, _ := strings.Cut(strings.TrimSpace(string(data)), " ")
	dir := filepath.Join(w.dir, "keystore", "certs", id[:2], id)
	return tenantFiles{name: nameFile, record: filepath.Join(dir, "record")}
}

// origin is the tenants' plain HTTP origin: it answers "origin HOST"
// for the host the edge forwarded, holds requests to /hold until
// release is called, reads the whole body of requests to /upload
// first, and answers /stream with up to 64 MiB, as fast as it can.
type origin struct {
	*httptest.Server
	held      atomic.Int64  // requests to /hold that have arrived
	uploading atomic.Int64  // requests to /upload reading their body now
	streaming atomic.Int64  // answers to /stream being written now
	release   func()        // lets every held request (and later ones) answer
	gate      chan struct{} // closed by release
}

func startOrigin(t *testing.T) *origin {
	o := &origin{gate: make(chan struct{})}
	o.release = sync.OnceFunc(func() { close(o.gate) })
	o.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			o.held.Add(1)
			select {
			case <-o.gate:
			case <-r.Context().Done():
				return
			}
		}
		if r.URL.Path == "/stream" {
			o.streaming.Add(1)
			defer o.streaming.Add(-1)
			chunk := make([]byte, 64<<10)
			for range 1 << 10 {
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
			return
		}
		if r.URL.Path == "/upload" {
			o.uploading.Add(1)
			_, err := io.Copy(io.Discard, r.Body)
			o.uploading.Add(-1)
			if err != nil {
				return
			}
		}
		fmt.Fprintf(w, "origin %s", r.Header.Get("X-Forwarded-Host"))
	}))
	t.Cleanup(func() {
		o.release()
		o.Close()
	})
	return o
}

// serves reports whether one request to host, on a new connection,
// succeeds.
func (w *world) serves(host string) bool {
	client, tr := w.client(load{})
	defer tr.CloseIdleConnections()
	return get(client, host, "/") == nil
}

// hosts is every tenant: the keyless one and the local ones.
func (w *world) hosts() []string { return append([]string{keylessHost}, w.local...) }
