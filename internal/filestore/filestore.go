// Package filestore is the storage of a keystore in a directory on local
// disk: certmagic.FileStorage with a Load that makes fewer system calls.
//
// A cold tenant's first handshake reads two small files (its name file
// and its record). os.ReadFile, which certmagic.FileStorage.Load uses,
// makes six system calls for each: open, an epoll_ctl that registers the
// file with the network poller and fails (regular files cannot be
// polled), fstat, a read, a read that finds the end of the file, and
// close. ReadFile makes four: open, fstat, one read of the size fstat
// gave, close. Where a system call is expensive (a virtual machine with
// page table isolation: ~4 µs for getpid) that is most of a cold
// tenant's cost (bench/RESULTS.md, "Cold tenants: the system calls of a
// read").
package filestore

import (
	"context"

	"github.com/caddyserver/certmagic"
)

// Storage is a certmagic.FileStorage whose Load is ReadFile. Everything
// else (Store, Delete, List, Lock, Filename) is certmagic's.
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
