//go:build unix

package filestore

import (
	"io/fs"
	"syscall"
)

// ReadFile returns the content of the named file, as os.ReadFile does,
// with four system calls when the file does not change while it is read
// (keystore files never do: they are replaced by a rename). It reads
// until the end of the file otherwise. Errors are *fs.PathError, so
// errors.Is(err, fs.ErrNotExist) tells a missing file.
func ReadFile(name string) ([]byte, error) {
	var fd int
	err := retry(func() (err error) {
		fd, err = syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer syscall.Close(fd)
	var st syscall.Stat_t
	if err := retry(func() error { return syscall.Fstat(fd, &st) }); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	size := int(max(st.Size, 0))
	// One byte more than the file's size, so a read that fills the
	// buffer tells a file that grew from one that did not.
	buf := make([]byte, 0, size+1)
	for {
		var n int
		err := retry(func() (err error) {
			n, err = syscall.Read(fd, buf[len(buf):cap(buf)])
			return err
		})
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
		if len(buf) == size && st.Mode&syscall.S_IFMT == syscall.S_IFREG {
			// The size fstat gave, read in full: the end of a file that
			// did not change. (A file that changes while it is read may
			// be read in part, as with os.ReadFile.)
			return buf, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
	}
}

// retry calls f again while it fails with EINTR.
func retry(f func() error) error {
	for {
		if err := f(); err != syscall.EINTR {
			return err
		}
	}
}
