package layers

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/keyedge/keyedge"

// layers lists every package of the module, lowest layer first. A
// package may import (outside its tests) only packages of lower layers:
// not a peer, not one above. A new package must be added here.
var layers = [][]string{
	// Leaf helpers, importing no package of ours.
	{
		"internal/excerpt", "internal/ops", "internal/ratelog", "internal/secretfile",
		"internal/tlsconf", "internal/testclock", "internal/testlog", "internal/testmetrics", "internal/proctest",
		"internal/layers", "internal/cli",
	},
	// PEM and key helpers; the Keyless SSL wire format; a Redis server
	// for tests (on a proctest port) and an ACME CA (Pebble, its log in a
	// testlog buffer); the access log writer; RSA signing by OpenSSL.
	{"certs", "keyserver/wire", "internal/redistest", "internal/pebbletest", "edge/accesslog", "internal/rsasigner"},
	// Geo sealing; the storages a keystore lives in.
	{"keystore/geo", "keystore/redisstore", "internal/bulkfile", "internal/filestore"},
	{"keystore"},
	// Keyless signing (its KeystoreSource reads a keystore); the test
	// PKI, which stores tenants.
	{"keyserver", "internal/testpki"},
	// What the binaries assemble, none importing another: TLS
	// termination, which takes ACME as hooks; ACME; the storage a
	// configuration names (Redis comes in here, not through edge).
	{"edge", "certs/acme", "internal/backend", "internal/testworld"},
	// The binaries' configuration files and wiring; the load generator
	// and the world it drives load at.
	{"internal/config", "bench", "bench/benchtest", "internal/chaos"},
	// Binaries.
	{"cmd/keyedge", "cmd/keyserver", "cmd/keyctl", "cmd/edgebench", "bench/keystorebench", "bench/pemexport", "bench/idleconns", "bench/browsercheck"},
}

// mustNotLink names dependencies outside the module, direct or not, a
// package must not link: the edge library takes plain Options, so
// configuration files (a YAML decoder) and the storage backends a binary
// opens (go-redis) come in through cmd/, never through edge. (That edge
// links no acme, internal/backend or internal/config follows from the
// layers: they are its peers or above it.)
var mustNotLink = map[string][]string{
	"edge": {"yaml", "github.com/redis/go-redis"},
}

type pkg struct {
	ImportPath string
	Imports    []string
	Deps       []string
	Module     *struct{ Path string }
}

func TestImportsPointDown(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "-json", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	layerOf := map[string]int{}
	for i, row := range layers {
		for _, p := range row {
			layerOf[module+"/"+p] = i
		}
	}
	ours := func(path string) bool { return strings.HasPrefix(path, module+"/") }
	short := func(path string) string { return strings.TrimPrefix(path, module+"/") }

	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := map[string]bool{}
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("go list output: %v", err)
		}
		if !ours(p.ImportPath) {
			continue
		}
		seen[p.ImportPath] = true
		from, ok := layerOf[p.ImportPath]
		if !ok {
			t.Errorf("%s is in no layer: add it to layers in %s", short(p.ImportPath), "internal/layers/layers_test.go")
			continue
		}
		for _, imp := range p.Imports {
			if !ours(imp) {
				continue
			}
			to, ok := layerOf[imp]
			if ok && to < from {
				continue
			}
			switch {
			case !ok:
				// Reported as in no layer when its own entry comes.
			case to == from:
				t.Errorf("%s imports %s, a package of its own layer (%d)", short(p.ImportPath), short(imp), from)
			default:
				t.Errorf("%s (layer %d) imports %s, a package above it (layer %d)", short(p.ImportPath), from, short(imp), to)
			}
		}
		for _, bad := range mustNotLink[short(p.ImportPath)] {
			for _, dep := range p.Deps {
				if strings.Contains(strings.ToLower(dep), bad) {
					t.Errorf("%s links %s (it must not link %q)", short(p.ImportPath), dep, bad)
				}
			}
		}
	}
	for p := range layerOf {
		if !seen[p] {
			t.Errorf("layers names %s, which is not a package of the module: remove it", short(p))
		}
	}
}
