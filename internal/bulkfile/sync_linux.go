package bulkfile

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Sync flushes everything written to the file system holding the
// storage: one syncfs, however many files were written.
func (b *Storage) Sync() error {
	f, err := os.Open(b.Path)
	if err != nil {
		return fmt.Errorf("bulkfile: failed to sync: %w", err)
	}
	defer f.Close()
	if err := unix.Syncfs(int(f.Fd())); err != nil {
		return fmt.Errorf("bulkfile: failed to sync: %w", err)
	}
	return nil
}
