package keystore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"iter"
	"path"
	"sync"
)

// Storage is what a Store keeps its files in: values under "/"-separated
// keys, the directories those keys imply, and named locks. It is the
// part of certmagic.Storage the keystore uses, so certmagic.FileStorage
// (a directory on local disk), redisstore.Storage (a fleet's shared
// Redis) and any other certmagic.Storage satisfy it.
//
// Implementations are safe for concurrent use and honour ctx. A missing
// key or directory is an error wrapping fs.ErrNotExist. A failure of the
// backend itself, rather than of one key, should wrap ErrUnavailable or
// have an Unavailable() bool method that reports true (see
// IsUnavailable).
type Storage interface {
	// Load returns the value at key.
	Load(ctx context.Context, key string) ([]byte, error)

	// Store writes value at key, atomically: a reader sees the old
	// value or the new one, never part of it.
	Store(ctx context.Context, key string, value []byte) error

	// Delete removes key, or a directory with everything under it.
	// Deleting a missing key may or may not be an error wrapping
	// fs.ErrNotExist; the keystore accepts both.
	Delete(ctx context.Context, key string) error

	// Exists reports whether key holds a value or is a directory.
	Exists(ctx context.Context, key string) bool

	// List returns the keys directly under dir (the keystore never asks
	// for recursive listings).
	List(ctx context.Context, dir string, recursive bool) ([]string, error)

	// Lock blocks until the caller holds the named lock for every user
	// of the storage (every process on every node), or ctx ends.
	Lock(ctx context.Context, name string) error

	// Unlock releases a lock taken with Lock.
	Unlock(ctx context.Context, name string) error
}

// intoLoader is a Storage that reads a value into the caller's buffer
// (filestore.Storage): LoadInto returns buf[:n] when buf is larger than
// the value, else a slice of its own.
type intoLoader interface {
	LoadInto(ctx context.Context, key string, buf []byte) ([]byte, error)
}

// readBufSize is the size of the buffers a cold lookup reads its name
// file and record into: larger than either for ECDSA and RSA tenants
// with usual chains (~70 B, ~2.3 KB and ~5 KB).
const readBufSize = 8 << 10

// readBufs holds *[]byte of readBufSize. What is read into them is
// public (names, certificates, settings) or sealed (keys).
var readBufs = sync.Pool{New: func() any { b := make([]byte, readBufSize); return &b }}

// loadLent returns the value at key, in buf (from readBufs) if storage
// reads into a caller's buffer and the value fits, so the caller must
// copy what it keeps before it returns buf to readBufs.
func (s *Store) loadLent(ctx context.Context, key string, buf []byte) ([]byte, error) {
	if l, ok := s.storage.(intoLoader); ok {
		return l.LoadInto(ctx, key, buf)
	}
	return s.storage.Load(ctx, key)
}

// HashedKey returns the storage key of name in a hashed index under dir:
//
//	<dir>/<h2>/<name>    h2 = first byte of SHA-256(name), in hex
//
// so that no directory holds more than about 1/256 of the names, and a
// walk (HashedNames) needs memory for one bucket only. The keystore's
// name index (names/) is one; the ACME managed index is another. name
// must be safe as the last element of a key (NormalizeName's output is).
func HashedKey(dir, name string) string {
	sum := sha256.Sum256([]byte(name))
	return dir + "/" + hex.EncodeToString(sum[:1]) + "/" + name
}

// HashedNames yields every name in the hashed index under dir (see
// HashedKey), one bucket at a time, so memory stays bounded by a bucket
// however many names there are. Order is not specified. An index that
// does not exist yields nothing; any other storage error is yielded, as
// storage returned it, and ends the sequence.
func HashedNames(ctx context.Context, storage Storage, dir string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		buckets, err := storage.List(ctx, dir, false)
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			yield("", err)
			return
		}
		for _, b := range buckets {
			keys, err := storage.List(ctx, b, false)
			if err != nil {
				yield("", err)
				return
			}
			for _, k := range keys {
				if !yield(path.Base(k), nil) {
					return
				}
			}
		}
	}
}
