package chaos

import (
	"bytes"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
)

// TestImportOnFullDisk runs `keyctl import` of a new tenant on a
// keystore tmpfs filled so that only n pages are free, for n from none
// to enough, while an edge serves the keystore. Each import either
// exits 0, and then `keyctl show` finds the tenant and the edge serves
// it, or exits 1 and leaves every keystore file as it was (see
// snapshot), with neither `keyctl show` nor the edge
// finding the tenant; with the space freed the same import then exits 0
// and the edge serves it (no lock or leftover in the way).
func TestImportOnFullDisk(t *testing.T) {
	w := newWorld(t, options{KeystoreTmpfs: 1 << 20})
	ca, err := testpki.LoadCA(w.path("testca.pem"), w.path("testca.key"))
	if err != nil {
		t.Fatal(err)
	}
	const page = 4096
	imported := 0
	for pages := range 9 {
		host := fmt.Sprintf("full%d.keyedge.test", pages)
		leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{host}})
		if err != nil {
			t.Fatal(err)
		}
		if err := leaf.WritePEM(w.path(host+".pem"), w.path(host+".key")); err != nil {
			t.Fatal(err)
		}
		importArgs := []string{"import", "--keystore", w.keystore, "--fleet-key", "fleet.key",
			"--cert", host + ".pem", "--key", host + ".key", "--tenant", host, "--origin", w.origin.URL}

		before := snapshot(t, w.keystore)
		free := proctest.Fill(t, w.tmpfs, int64(pages)*page)
		code, out := w.keyctlStatus(importArgs...)
		free()
		show, _ := w.keyctlStatus("show", host, "--keystore", w.keystore, "--fleet-key", "fleet.key")
		t.Logf("%d pages free: keyctl import exit %d: %s", pages, code, out)
		switch code {
		case 0:
			imported++
			if show != 0 {
				t.Fatalf("%d pages free: import exited 0 but keyctl show %s exits %d", pages, host, show)
			}
			proctest.Eventually(t, 15*time.Second, "the edge serves "+host, func() bool { return w.serves(host) })
			continue
		case 1:
		default:
			t.Fatalf("%d pages free: keyctl import exit status %d, want 0 or 1\n%s", pages, code, out)
		}
		if show == 0 {
			t.Fatalf("%d pages free: import exited 1 but keyctl show finds %s", pages, host)
		}
		if w.serves(host) {
			t.Fatalf("%d pages free: import exited 1 but the edge serves %s", pages, host)
		}
		if after := snapshot(t, w.keystore); !maps.EqualFunc(before, after, bytes.Equal) {
			t.Fatalf("%d pages free: a failed import changed the keystore: files before %v, after %v",
				pages, slices.Sorted(maps.Keys(before)), slices.Sorted(maps.Keys(after)))
		}
		w.keyctl(importArgs...)
		proctest.Eventually(t, 15*time.Second, "the edge serves "+host+" imported again", func() bool { return w.serves(host) })
	}
	if imported == 0 || imported == 9 {
		t.Errorf("%d of 9 imports succeeded: the sizes tried no longer span an import's failures and success", imported)
	}
}

// snapshot returns every regular file under dir (by path relative to
// it) with its content, except the name filter, which a failed write
// may leave grown, and the change journal, to which an undone write adds
// an entry so that nodes drop what they may have read meanwhile.
func snapshot(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		if rel = filepath.ToSlash(rel); rel == "namefilter" || strings.HasPrefix(rel, "changes/") {
			return nil
		}
		data, err := os.ReadFile(path)
		files[rel] = data
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
