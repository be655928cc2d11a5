package keystore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/internal/ratelog"
)

// ErrUnavailable wraps every failure of the storage backend itself, as
// opposed to one tenant's file: the keystore directory moved away or
// unmounted, Redis down or not answering in time. Nothing is learnt
// about the name: such a failure is never cached as an unknown name or a
// corrupt entry, it is counted as a lookup error, and Store.Err reports
// it until the backend answers again.
var ErrUnavailable = errors.New("keystore: storage unavailable")

// ErrNotInitialised is returned by Open with Options.RequireInit for
// storage that holds no keystore: Init (keyctl init) never ran there,
// or the path or URL is wrong.
var ErrNotInitialised = errors.New("keystore: not initialised")

// A storage reports that its backend, not the file asked for, failed
// with an error that wraps ErrUnavailable or for which errors.As finds
// an unavailableError reporting true (redisstore's do). Every other
// error is taken for a problem of the one file, unless the journal head
// cannot be read either (see Store.unavailable).
type unavailableError interface {
	error
	Unavailable() bool
}

// IsUnavailable reports whether err is a failure of the storage backend
// rather than of one file or name.
func IsUnavailable(err error) bool {
	var u unavailableError
	return errors.Is(err, ErrUnavailable) || errors.As(err, &u) && u.Unavailable()
}

// Init makes storage an initialised keystore, which Open with
// RequireInit accepts: it writes an empty change journal (head 0) unless
// the keystore has one. It is idempotent; keyctl init calls it.
func Init(ctx context.Context, storage Storage) error {
	switch _, err := storage.Load(ctx, headKey); {
	case err == nil:
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("keystore: failed to read journal head: %w", err)
	}
	if err := storage.Lock(ctx, writeLock); err != nil {
		return fmt.Errorf("keystore: failed to lock for init: %w", err)
	}
	defer storage.Unlock(context.WithoutCancel(ctx), writeLock)
	if _, err := storage.Load(ctx, headKey); err == nil {
		return nil // a writer got there first
	}
	if err := storage.Store(ctx, headKey, []byte(strconv.Itoa(0)+"\n")); err != nil {
		return fmt.Errorf("keystore: failed to write journal head: %w", err)
	}
	return nil
}

// rootCheckInterval is how long a confirmation that the keystore is
// still there (its journal head reads) is trusted: a flood of lookups
// of unknown names costs one extra read of the few-byte head per
// interval, not one per name.
const rootCheckInterval = 100 * time.Millisecond

// availability is the Store's view of its storage backend.
type availability struct {
	// initialised: a journal head has been seen (at Open or by the
	// journal poll), so its absence now means the keystore vanished,
	// not that it is new and empty.
	initialised atomic.Bool
	down        atomic.Pointer[error] // nil while the storage answers
	confirmed   atomic.Int64          // unix ns of the last check that found the head

	mu   sync.Mutex // serialises state changes, so each is logged once
	logs ratelog.Limiter
}

// Err returns nil while the storage backend answers, and an error
// wrapping ErrUnavailable while it does not: the keystore directory is
// gone or unreadable, or Redis is down (the journal poll, every
// PollInterval, and failed lookups set it; only a journal poll that
// reads the head clears it). Readiness checks use it: cached tenants are
// still served meanwhile, but no new one can be.
func (s *Store) Err() error {
	if p := s.avail.down.Load(); p != nil {
		return *p
	}
	return nil
}

// setDown records that the storage failed with err (which wraps
// ErrUnavailable) and logs the change of state once.
func (s *Store) setDown(err error) error {
	s.avail.mu.Lock()
	defer s.avail.mu.Unlock()
	if s.avail.down.Swap(&err) == nil {
		s.log.Error("keystore: storage unavailable; serving cached tenants only", "err", err)
	}
	return err
}

// setUp records that the storage answered, and logs a recovery once.
func (s *Store) setUp() {
	if s.avail.down.Load() == nil {
		return
	}
	s.avail.mu.Lock()
	defer s.avail.mu.Unlock()
	if s.avail.down.Swap(nil) != nil {
		s.log.Info("keystore: storage available again")
	}
}

// unavailable classifies a failed storage read of one tenant's file
// (name, record or key). It returns an error wrapping ErrUnavailable
// when the failure is the backend's rather than the file's: the storage
// says so, or the keystore's journal head cannot be read either (a file
// keystore whose directory was moved away: certmagic.FileStorage then
// answers fs.ErrNotExist for every file, as for a name that has none).
// It returns nil for a failure of the file alone, which the caller
// reports for that tenant only. Unavailability is logged rate-limited.
func (s *Store) unavailable(ctx context.Context, key string, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	switch {
	case IsUnavailable(err):
		err = s.setDown(fmt.Errorf("%w: %s: %w", ErrUnavailable, key, err))
	case !s.avail.initialised.Load():
		return nil // a keystore never initialised: nothing to compare with
	case s.Err() != nil:
		err = fmt.Errorf("%s: %w", key, s.Err())
	case time.Since(time.Unix(0, s.avail.confirmed.Load())) < rootCheckInterval:
		return nil
	default:
		if _, serr := s.storage.Load(ctx, headKey); serr != nil {
			if ctx.Err() != nil {
				return nil
			}
			err = s.setDown(fmt.Errorf("%w: journal head %s: %w", ErrUnavailable, headKey, serr))
		} else {
			s.avail.confirmed.Store(time.Now().UnixNano())
			return nil
		}
	}
	s.avail.logs.Log(ctx, s.log, slog.LevelError, "lookup", "keystore: lookup failed, storage unavailable (logged at most every 10s)", "err", err)
	return err
}
