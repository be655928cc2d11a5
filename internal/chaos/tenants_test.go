package chaos

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

// TestCorruptTenantFiles overwrites one file of each victim tenant with
// garbage (its record, its sealed key, its name file) before the edge
// has loaded it: every request to a victim fails, every other tenant is
// served, and nothing in the keystore is deleted or rewritten.
func TestCorruptTenantFiles(t *testing.T) {
	w := newWorld(t, options{Tenants: 4})
	garbage := []byte("\x00garbage\xff not a keystore file\n")
	victims := []struct {
		host string
		file func(tenantFiles) string
	}{
		{w.local[0], func(f tenantFiles) string { return f.record }},
		{w.local[1], func(f tenantFiles) string { return f.sealed }},
		{w.local[2], func(f tenantFiles) string { return f.name }},
	}
	var victimHosts, corrupted []string
	for _, v := range victims {
		path := v.file(w.filesOf(v.host))
		if err := os.WriteFile(path, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		victimHosts = append(victimHosts, v.host)
		corrupted = append(corrupted, path)
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
	for _, path := range corrupted {
		if data, err := os.ReadFile(path); err != nil || !bytes.Equal(data, garbage) {
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
