//go:build unix

package secretfile

import (
	"io/fs"
	"os"
	"slices"
	"syscall"
)

// podSecret reports whether a group-readable file has the shape of a
// Kubernetes Secret mounted for a non-root pod: owned by root, its group
// one this process is in (the pod's fsGroup).
func podSecret(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid != 0 {
		return false
	}
	if uint32(os.Getegid()) == st.Gid {
		return true
	}
	groups, _ := os.Getgroups()
	return slices.Contains(groups, int(st.Gid))
}
