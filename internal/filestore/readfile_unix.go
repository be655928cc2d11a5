//go:build unix

package filestore

import (
	"io/fs"
	"syscall"
)

// ReadInto returns the content of the named file, read into buf when buf
// is larger than the file (the result is then buf[:n]), else into a
// slice of its own. Errors are *fs.PathError, so errors.Is(err,
// fs.ErrNotExist) tells a missing file.
//
// A file smaller than buf costs three system calls: open, one read,
// close. A read that does not fill buf is taken as the end of the file,
// with no fstat for its size and no read that returns 0: from a regular
// file, the kernel returns less than asked only at its end (keystore
// files are regular files, replaced by a rename, never written in
// place). A larger file is read to its end as os.ReadFile reads it.
func ReadInto(name string, buf []byte) ([]byte, error) {
	var fd int
	err := retry(func() (err error) {
		fd, err = syscall.Open(name, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		return err
	})
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	defer syscall.Close(fd)
	n := 0
	if len(buf) > 0 {
		if n, err = read(fd, buf); err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n < len(buf) {
			return buf[:n], nil
		}
	}
	return readRest(fd, name, buf[:n])
}

// readRest returns, in a slice of its own, buf, the file's first bytes,
// and what follows them to the end of the file: the size fstat gives, or
// until a read returns 0 when the file's size changed or the kernel
// gives none.
func readRest(fd int, name string, buf []byte) ([]byte, error) {
	var st syscall.Stat_t
	if err := retry(func() error { return syscall.Fstat(fd, &st) }); err != nil {
		return nil, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	size := int(max(st.Size, 0))
	// One byte more than the file's size, so a read that fills the
	// buffer tells a file that grew from one that did not.
	buf = append(make([]byte, 0, max(size, len(buf))+1), buf...)
	for {
		if len(buf) == size && st.Mode&syscall.S_IFMT == syscall.S_IFREG {
			// The size fstat gave, read in full: the end of a file that
			// did not change. (A file that changes while it is read may
			// be read in part, as with os.ReadFile.)
			return buf, nil
		}
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := read(fd, buf[len(buf):cap(buf)])
		if err != nil {
			return nil, &fs.PathError{Op: "read", Path: name, Err: err}
		}
		if n == 0 {
			return buf, nil
		}
		buf = buf[:len(buf)+n]
	}
}

// read is one read(2) into b, retried on EINTR.
func read(fd int, b []byte) (n int, err error) {
	err = retry(func() (err error) {
		n, err = syscall.Read(fd, b)
		return err
	})
	return n, err
}

// retry calls f again while it fails with EINTR.
func retry(f func() error) error {
	for {
		if err := f(); err != syscall.EINTR {
			return err
		}
	}
}
