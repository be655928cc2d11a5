// Package filestore is the storage of a keystore in a directory on local
// disk: certmagic.FileStorage with a Load that makes fewer system calls.
//
// A cold tenant's first handshake reads two small files (its name file
// and its record). os.ReadFile, which certmagic.FileStorage.Load uses,
// makes six system calls for each: open, an epoll_ctl that registers the
// file with the network poller and fails (regular files cannot be
// polled), fstat, a read, a read that finds the end of the file, and
// close. ReadInto and ReadFile make three: open, one read into a buffer
// larger than the file, close. Where a system call is expensive
// (a virtual machine with page table isolation: ~4 µs for getpid) that
// is most of a cold tenant's cost (bench/RESULTS.md, "Cold tenants: the
// system calls of a read" and "Cold tenants: CPU per cold load, session
// 25"). LoadInto reads into the caller's buffer, so a keystore parsing a
// name file or a record allocates only what it keeps.
package filestore

import (
	"context"
	"sync"

	"github.com/caddyserver/certmagic"
)

// Storage is a certmagic.FileStorage whose Load is ReadFile, with LoadInto.
// Everything else (Store, Delete, List, Lock, Filename) is certmagic's.
type Storage struct {
	*certmagic.FileStorage
}

// New returns a Storage rooted at dir.
func New(dir string) *Storage {
	return &Storage{&certmagic.FileStorage{Path: dir}}
}

// Load returns the content of the file holding key. A missing file is an
// error wrapping fs.ErrNotExist, as certmagic.FileStorage's is.
func (s *Storage) Load(_ context.Context, key string) ([]byte, error) {
	return ReadFile(s.Filename(key))
}

// LoadInto returns the content of the file holding key, in buf when buf
// is larger than the file, else in a slice of its own (ReadInto). A
// missing file is an error wrapping fs.ErrNotExist, as Load's.
func (s *Storage) LoadInto(_ context.Context, key string, buf []byte) ([]byte, error) {
	return ReadInto(s.Filename(key), buf)
}

// bufSize is the size of the buffers ReadFile reads into: larger than
// any name file and than the records of ECDSA and RSA tenants with usual
// chains (~2.3 KB and ~5 KB), so one read finds the end of the file.
const bufSize = 8 << 10

// bufs holds *[]byte of bufSize for ReadFile.
var bufs = sync.Pool{New: func() any { b := make([]byte, bufSize); return &b }}

// ReadFile returns the content of the named file, as os.ReadFile does,
// with ReadInto's system calls, in a slice of its own.
func ReadFile(name string) ([]byte, error) {
	bp := bufs.Get().(*[]byte)
	defer bufs.Put(bp)
	data, err := ReadInto(name, *bp)
	if err != nil || len(data) >= len(*bp) {
		return data, err // not in the buffer
	}
	return append(make([]byte, 0, len(data)), data...), nil
}
