package proctest

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// Tmpfs mounts a tmpfs of size bytes on a new temporary directory and
// returns it; it is unmounted when the test ends. Where the machine does
// not allow it (no root, no CAP_SYS_ADMIN; other systems: disk_other.go)
// the test is skipped, saying why: disk-full scenarios need a file system that
// really fills.
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Skipf("skipped: cannot mount a %d-byte tmpfs on %s (%v): a disk-full test needs root or CAP_SYS_ADMIN", size, dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount tmpfs %s: %v", dir, err)
		}
	})
	return dir
}

// FreeBytes returns the bytes an unprivileged writer may still use on
// the file system holding dir.
func FreeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatalf("statfs %s: %v", dir, err)
	}
	return int64(st.Bavail) * st.Bsize
}

// Fill allocates a filler file in dir so that at most leave bytes stay
// free on its file system, and returns a function that deletes it
// (also called when the test ends).
func Fill(t testing.TB, dir string, leave int64) (free func()) {
	t.Helper()
	name := filepath.Join(dir, "filler")
	f, err := os.OpenFile(name, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	free = func() {
		if err := os.Remove(name); err != nil && !os.IsNotExist(err) {
			t.Errorf("remove filler: %v", err)
		}
	}
	t.Cleanup(free)
	if size := FreeBytes(t, dir) - leave; size > 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, size); err != nil {
			t.Fatalf("fill %s with %d bytes: %v", dir, size, err)
		}
	}
	return free
}
