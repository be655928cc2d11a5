//go:build !unix

package secretfile

import "io/fs"

// podSecret reports false: file owners and groups are Unix notions, and
// so is a Kubernetes Secret mounted group-readable (see pod_unix.go).
func podSecret(fs.FileInfo) bool { return false }
