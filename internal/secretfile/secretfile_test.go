package secretfile

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
)

func TestReadWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := Write(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("other")); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Write: %v, want fs.ErrExist", err)
	}
	if got, err := Read(path); err != nil || string(got) != "secret" {
		t.Errorf("Read = %q, %v", got, err)
	}
	if !Exists(path) || Exists(filepath.Join(dir, "nope")) {
		t.Error("Exists is wrong")
	}

	// A Kubernetes Secret mounted for a non-root pod is root:fsGroup 0440;
	// running as root, this process is in the file's group.
	tests := []struct {
		mode fs.FileMode
		want bool
	}{
		{0o600, true},
		{0o400, true},
		{0o644, false},
		{0o604, false},
		{0o620, false},
		{0o660, false},
		{0o440, os.Geteuid() == 0},
	}
	for _, tt := range tests {
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := Read(path)
		if ok := err == nil; ok != tt.want {
			t.Errorf("mode %v: Read error %v, want readable = %v", tt.mode, err, tt.want)
		}
		if !tt.want && !errors.Is(err, ErrExposed) {
			t.Errorf("mode %v: %v, want ErrExposed", tt.mode, err)
		}
	}
}
