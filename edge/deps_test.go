package edge_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestDependencies: the edge library links none of the binaries'
// concerns. Configuration files (a YAML decoder, internal/config), the
// storage backends a binary opens (internal/backend, go-redis) and the
// ACME package come in through cmd/, never through edge.
func TestDependencies(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	forbidden := []string{
		"github.com/redis/go-redis",
		"github.com/keyedge/keyedge/acme",
		"github.com/keyedge/keyedge/internal/backend",
		"github.com/keyedge/keyedge/internal/config",
	}
	for _, dep := range strings.Fields(string(out)) {
		if strings.Contains(strings.ToLower(dep), "yaml") {
			t.Errorf("edge depends on %s, a YAML library", dep)
		}
		for _, f := range forbidden {
			if dep == f || strings.HasPrefix(dep, f+"/") {
				t.Errorf("edge depends on %s", dep)
			}
		}
	}
}
