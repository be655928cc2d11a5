//go:build !unix

package filestore

import "os"

// ReadFile is os.ReadFile where ReadFile's system calls are not
// available.
func ReadFile(name string) ([]byte, error) { return os.ReadFile(name) }
