package chaos

import (
	"bytes"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorruptTenantFiles damages one file of each victim tenant before
// the edge has loaded it (its record and its name file overwritten with
// garbage, the last byte of another's record, which is its sealed key,
// flipped): every request to a victim fails, every other tenant is
// served, and nothing in the keystore is deleted or rewritten.
func TestCorruptTenantFiles(t *testing.T) {
	w := newWorld(t, options{Tenants: 4})
	garbage := func([]byte) []byte { return []byte("\x00garbage\xff not a keystore file\n") }
	flipLast := func(b []byte) []byte { b[len(b)-1] ^= 1; return b }
	victims := []struct {
		host   string
		file   func(tenantFiles) string
		damage func([]byte) []byte
	}{
		{w.local[0], func(f tenantFiles) string { return f.record }, garbage},
		{w.local[1], func(f tenantFiles) string { return f.record }, flipLast},
		{w.local[2], func(f tenantFiles) string { return f.name }, garbage},
	}
	var victimHosts []string
	corrupted := map[string][]byte{}
	for _, v := range victims {
		path := v.file(w.filesOf(v.host))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		data = v.damage(data)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		victimHosts = append(victimHosts, v.host)
		corrupted[path] = data
	}
	before := keystoreFiles(t, w.path("keystore"))

	rep := w.run(load{Hosts: w.hosts(), Requests: 300})
	rep.allFailed(t, "corrupted tenants", victimHosts...)
	rep.allOK(t, "healthy tenants beside corrupted ones", keylessHost, w.local[3])

	after := keystoreFiles(t, w.path("keystore"))
	for path := range before {
		if !after[path] {
			t.Errorf("%s was deleted", path)
		}
	}
	for path, want := range corrupted {
		if data, err := os.ReadFile(path); err != nil || !bytes.Equal(data, want) {
			t.Errorf("%s was changed (%v)", path, err)
		}
	}
}

// keystoreFiles is the set of regular files under dir.
func keystoreFiles(t *testing.T, dir string) map[string]bool {
	t.Helper()
	files := map[string]bool{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files[path] = true
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// TestSwappedNameFiles: two tenants' name files swapped on disk (a
// hand edit gone wrong) → neither name is served the other's
// certificate: both fail cleanly (the edge presents no certificate that
// does not cover the name), others are served, nothing is deleted.
func TestSwappedNameFiles(t *testing.T) {
	full(t)
	w := newWorld(t, options{Tenants: 3})
	a, b := w.filesOf(w.local[0]).name, w.filesOf(w.local[1]).name
	dataA, errA := os.ReadFile(a)
	dataB, errB := os.ReadFile(b)
	if errA != nil || errB != nil {
		t.Fatal(errA, errB)
	}
	if err := os.WriteFile(a, dataB, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(b, dataA, 0o600); err != nil {
		t.Fatal(err)
	}
	rep := w.run(load{Hosts: w.hosts(), Requests: 200})
	rep.allFailed(t, "tenants with swapped name files", w.local[0], w.local[1])
	rep.allOK(t, "tenants beside the swapped ones", keylessHost, w.local[2])
	for _, err := range rep.failures(w.local[0], w.local[1]) {
		if strings.Contains(err.Error(), "certificate is valid for") {
			t.Fatalf("the edge presented another tenant's certificate: %v", err)
		}
	}
}

// TestPolicySetRefused: `keyctl policy set` with a policy whose canonical
// form is over the length limit fails, changes no keystore byte, and
// the tenant goes on being served; a valid policy and lifting it again
// work on the same tenant afterwards.
func TestPolicySetRefused(t *testing.T) {
	w := newWorld(t, options{Tenants: 2})
	keystore := w.path("keystore")
	before := keystoreContents(t, keystore)
	overlong := "region: eu or pad: " + strings.Repeat("0", 1010)
	if code, out := w.keyctlStatus("policy", "set", w.local[0], overlong); code == 0 {
		t.Fatalf("keyctl policy set with a %d-byte policy succeeded:\n%s", len(overlong), out)
	}
	if after := keystoreContents(t, keystore); !maps.Equal(before, after) {
		t.Error("a refused policy set changed the keystore")
	}
	w.run(load{Hosts: w.local, Requests: 40}).allOK(t, "tenants after a refused policy set", w.local...)
	w.keyctl("policy", "set", w.local[0], "region: eu")
	w.keyctl("policy", "set", w.local[0], "")
}

// keystoreContents maps every regular file under dir to its contents.
func keystoreContents(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	for path := range keystoreFiles(t, dir) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		files[path] = string(data)
	}
	return files
}
