package keystore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"sync"
	"time"
)

// ErrIncomplete is returned by a write that failed before its commit
// point and could not be undone either (typically a disk still full):
// storage may hold part of it, which nodes reading storage afresh may
// serve while running nodes do not. Running the same write again, once
// the cause is fixed, completes it.
var ErrIncomplete = errors.New("keystore: write interrupted and not undone: the keystore may serve part of it; run it again")

// A Put commits when it writes the journal head that makes its entry
// visible: from then on every node follows it within its PollInterval.
// Its name files alone do not make a tenant served: a running node's
// name filter and negative cache learn of a name only from the journal,
// so a name file without its journal entry would be served by nodes
// started later and by no running one. A Put that fails before the head
// is written therefore undoes what it stored, newest first: the journal
// entry, name files (put back as they were), trash marks, then the new
// certificates' files; it stops at a step it cannot undo, so a name it
// could not put back keeps the certificates it refers to (and the ones
// it replaced stay retired). The name filter is left with the added names, a
// superset being always correct (see filter.go). Undoing needs no space
// for a new name (deletes only) and a page per restored name file for a
// renewal, freed just before by the deletes of the later writes.

// undoLog records the previous state of each key a write stores, so that
// a write failing before its commit point can put storage back.
type undoLog struct {
	mu    sync.Mutex // guards steps, appended by parallel writers
	steps []undoStep
	names []string // name files written, journaled again after an undo
}

// undoStep puts key back to prev, or deletes it (with everything under
// it, for a certificate directory) when prev is nil.
type undoStep struct {
	key  string
	prev []byte
}

func (u *undoLog) add(key string, prev []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.steps = append(u.steps, undoStep{key, prev})
}

// store writes value at key, recording first in u, if not nil, what key
// held (prev, nil when absent) so the write can be undone. The step is
// recorded before the store: a failed Store may have written anyway.
func (s *Store) store(ctx context.Context, u *undoLog, key string, prev, value []byte) error {
	if u != nil {
		u.add(key, prev)
	}
	return s.storage.Store(ctx, key, value)
}

// load returns the value at key, nil when absent, for a write to record.
func (s *Store) load(ctx context.Context, key string) ([]byte, error) {
	data, err := s.storage.Load(ctx, key)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to read %s: %w", key, err)
	}
	return data, nil
}

// undo puts back, newest first, every key u recorded, and returns cause,
// or cause wrapped in ErrIncomplete with the first step that failed.
// A key already as it was is left alone, so undoing a store that failed
// (an atomic one, unchanged) needs no space. If name files were written,
// their names are journaled again, best effort, so that a node which
// read one of them meanwhile drops what it read.
func (s *Store) undo(ctx context.Context, u *undoLog, cause error) error {
	ctx = context.WithoutCancel(ctx) // a cancelled write is undone too
	var failed error
	for _, st := range slices.Backward(u.steps) {
		// Stop at the first failure: what was written before (the
		// certificates) may be what a name not put back refers to.
		if failed = s.restore(ctx, st); failed != nil {
			s.log.Error("keystore: failed to undo an interrupted write", "key", st.key, "err", failed)
			break
		}
	}
	if failed != nil {
		return fmt.Errorf("%w: %w (undoing it: %w)", ErrIncomplete, cause, failed)
	}
	if len(u.names) > 0 {
		c := change{names: u.names}
		if err := s.appendChange(ctx, c, nil); err != nil {
			s.log.Warn("keystore: failed to journal an undone write: nodes that read it meanwhile serve it until their caches expire", "err", err)
		}
		s.invalidate(c)
	}
	return cause
}

// restore puts one key back as it was before the write.
func (s *Store) restore(ctx context.Context, st undoStep) error {
	cur, err := s.load(ctx, st.key)
	if err != nil && st.prev != nil {
		return err
	}
	switch {
	case st.prev == nil:
		if err := s.storage.Delete(ctx, st.key); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keystore: failed to delete %s: %w", st.key, err)
		}
	case !bytes.Equal(cur, st.prev):
		if err := s.storage.Store(ctx, st.key, st.prev); err != nil {
			return fmt.Errorf("keystore: failed to restore %s: %w", st.key, err)
		}
	}
	return nil
}

// lockSettle is how long a lock file found empty after a failed Lock is
// given to be written by another writer that has just created it, before
// it is taken for the leftover of a failed one (certmagic waits 8 × this
// before it treats an empty lock file as stale).
const lockSettle = 250 * time.Millisecond

// clearFailedLock removes the empty lock file a certmagic.FileStorage
// leaves when it creates its lock file and cannot write it (a full
// disk). certmagic's next Lock would wait two seconds, take the file for
// stale and remove it itself; this does the same at once, after giving
// another writer's lock file just created lockSettle to be written.
func (s *Store) clearFailedLock(ctx context.Context, name string) {
	file, ok := lockFile(s.storage, name)
	if !ok {
		return
	}
	before, err := os.Stat(file)
	if err != nil || before.Size() != 0 {
		return
	}
	select {
	case <-time.After(lockSettle):
	case <-ctx.Done():
		return
	}
	if after, err := os.Stat(file); err == nil && after.Size() == 0 && os.SameFile(before, after) {
		if err := os.Remove(file); err != nil {
			s.log.Warn("keystore: failed to remove an empty lock file", "file", file, "err", err)
		}
	}
}

// lockFile returns the file that holds lock name of a storage on local
// files: one with certmagic.FileStorage's Filename method (it, and types
// embedding it), which keeps lock <name> in locks/<name>.lock. The lock
// names the keystore uses are already in the form certmagic gives file
// names (StorageKeys.Safe leaves them as they are).
func lockFile(storage Storage, name string) (string, bool) {
	fst, ok := storage.(interface{ Filename(key string) string })
	if !ok {
		return "", false
	}
	return fst.Filename("locks/" + name + ".lock"), true
}
