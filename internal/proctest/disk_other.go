//go:build !linux

package proctest

import (
	"runtime"
	"testing"
)

// Tmpfs skips the test: disk-full scenarios need a tmpfs, which only
// Linux mounts here (see disk_linux.go).
func Tmpfs(t testing.TB, size int64) string {
	t.Helper()
	t.Skipf("skipped: a disk-full test needs a %d-byte tmpfs, which only Linux mounts (this is %s)", size, runtime.GOOS)
	return ""
}

// FreeBytes skips the test: only Linux is supported (see disk_linux.go).
func FreeBytes(t testing.TB, dir string) int64 {
	t.Helper()
	t.Skipf("skipped: free space of %s is measured on Linux only", dir)
	return 0
}

// Fill skips the test: only Linux is supported (see disk_linux.go).
func Fill(t testing.TB, dir string, leave int64) (free func()) {
	t.Helper()
	t.Skipf("skipped: filling %s is supported on Linux only", dir)
	return func() {}
}
