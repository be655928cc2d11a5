//go:build !linux

package bulkfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
)

// Sync flushes everything written under the storage's directory. Without
// Linux's syncfs it fsyncs every file, and every directory (for the
// renames) where the system allows it: slower, with one fsync per file.
func (b *Storage) Sync() error {
	err := filepath.WalkDir(b.Path, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && runtime.GOOS == "windows" {
			return nil // Windows cannot flush a directory: only files are synced there
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("bulkfile: failed to sync: %w", err)
	}
	return nil
}
