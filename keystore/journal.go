package keystore

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/keyedge/keyedge/internal/excerpt"
)

// The change journal lets every node drop exactly the cache entries a
// write touched, at a cost that follows the rate of change rather than
// the number of tenants, on local disk and on a shared backend alike.
//
//	changes/head        decimal sequence number of the newest entry
//	changes/<seq>       one entry, seq zero-padded to 20 digits so keys
//	                    sort in order; lines "name <name>" and "id <id>"
//
// Writers append under the storage lock (see write.go). Readers poll
// changes/head every PollInterval and apply the entries after the last
// one they saw. Only the newest journalKeep entries are kept; a reader
// that falls further behind, or finds an entry missing, clears its
// caches instead, which is always safe.
const (
	headKey     = "changes/head"
	journalKeep = 4096
)

func changeKey(seq uint64) string { return fmt.Sprintf("changes/%020d", seq) }

// journalState is owned by the follow goroutine (and by Open before it
// starts).
type journalState struct {
	seen uint64 // newest sequence applied
}

// change is the set of names and certificate IDs one write touched.
type change struct {
	names []string
	ids   []string
}

func (c change) marshal() []byte {
	var b strings.Builder
	for _, n := range c.names {
		b.WriteString("name " + n + "\n")
	}
	for _, id := range c.ids {
		b.WriteString("id " + id + "\n")
	}
	return []byte(b.String())
}

func parseChange(data []byte) (change, error) {
	var c change
	for line := range strings.Lines(string(data)) {
		kind, v, _ := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		switch {
		case kind == "name" && checkLabels(v) == nil:
			c.names = append(c.names, v)
		case kind == "id" && isCertID(v):
			c.ids = append(c.ids, v)
		default:
			return change{}, fmt.Errorf("%w: journal line %q", errMalformed, excerpt.Of(line, 80))
		}
	}
	return c, nil
}

// readHead returns the newest journal sequence; ok is false when there
// is no head (a keystore never initialised, or one that vanished).
func (s *Store) readHead(ctx context.Context) (seq uint64, ok bool, err error) {
	data, err := s.storage.Load(ctx, headKey)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("keystore: failed to read journal head: %w", err)
	}
	seq, err = strconv.ParseUint(strings.TrimSpace(string(data)), 10, 64)
	if err != nil {
		return 0, true, fmt.Errorf("keystore: journal head: %w: %v", errMalformed, err)
	}
	return seq, true, nil
}

// appendChange records c as the next journal entry and trims the oldest.
// The entry is recorded in u, if not nil, to be deleted if the head
// cannot be written; the head itself is not: a head Store that failed
// left it as it was, or (a backend that lost its answer) moved it to an
// entry an undo deletes, which followers answer by clearing their
// caches. The caller holds the write lock.
func (s *Store) appendChange(ctx context.Context, c change, u *undoLog) error {
	head, _, err := s.readHead(ctx)
	if err != nil {
		return err
	}
	seq := head + 1
	// A writer that died between its entry and the head leaves an entry
	// past the head; never overwrite it, readers may have applied it.
	for s.storage.Exists(ctx, changeKey(seq)) {
		seq++
	}
	if err := s.store(ctx, u, changeKey(seq), nil, c.marshal()); err != nil {
		return fmt.Errorf("keystore: failed to write journal entry: %w", err)
	}
	if err := s.storage.Store(ctx, headKey, []byte(strconv.FormatUint(seq, 10)+"\n")); err != nil {
		return fmt.Errorf("keystore: failed to write journal head: %w", err)
	}
	if seq > journalKeep {
		if err := s.storage.Delete(ctx, changeKey(seq-journalKeep)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("keystore: failed to trim journal", "err", err)
		}
	}
	return nil
}

// follow applies new journal entries every pollInterval until ctx ends.
func (s *Store) follow(ctx context.Context) {
	defer close(s.done)
	t := time.NewTicker(s.pollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.pollNow(ctx)
		case done := <-s.filter.kick:
			s.catchUp(ctx, done)
		}
	}
}

// pollNow applies new journal entries and then tends the name filter.
func (s *Store) pollNow(ctx context.Context) {
	if err := s.poll(ctx); err != nil && ctx.Err() == nil {
		s.metrics.journal.WithLabelValues("error").Inc()
		s.avail.logs.Log(ctx, s.log, slog.LevelWarn, "journal", "keystore: failed to read change journal (logged at most every 10s)", "err", err)
	}
	s.tendFilter(ctx)
}

// poll applies the journal entries after the last one seen. It is also
// the Store's health check: a head that cannot be read, or that is gone
// from a keystore that had one, marks the storage unavailable (caches
// kept: the journal cannot say what changed, but clearing them would
// drop every tenant); a head read marks it available again.
func (s *Store) poll(ctx context.Context) error {
	head, ok, err := s.readHead(ctx)
	switch {
	case err != nil && !errors.Is(err, errMalformed):
		s.setDown(fmt.Errorf("%w: %w", ErrUnavailable, err))
		return err
	case !ok && s.avail.initialised.Load():
		s.setDown(fmt.Errorf("%w: journal head %s missing: keystore moved or deleted?", ErrUnavailable, headKey))
		return nil
	case !ok:
		return nil // not initialised yet: an empty keystore
	}
	s.avail.initialised.Store(true)
	s.setUp()
	if err != nil || head == s.journal.seen {
		return err
	}
	if head < s.journal.seen || head-s.journal.seen > journalKeep {
		s.reset("journal jumped")
		s.journal.seen = head
		return nil
	}
	for seq := s.journal.seen + 1; seq <= head; seq++ {
		data, err := s.storage.Load(ctx, changeKey(seq))
		if err != nil && ctx.Err() != nil {
			return err
		}
		c, perr := parseChange(data)
		if err != nil || perr != nil {
			s.reset(fmt.Sprintf("entry %d unreadable: %v", seq, cmpOr(err, perr)))
			break
		}
		s.invalidate(c)
		s.metrics.journal.WithLabelValues("applied").Inc()
	}
	s.journal.seen = head
	return nil
}

// invalidate drops the cache entries for the names and IDs in c, and
// adds its names to the name filter.
func (s *Store) invalidate(c change) {
	s.filterAdd(c.names)
	for _, n := range c.names {
		s.names.Invalidate(n)
	}
	for _, id := range c.ids {
		s.certs.Invalidate(id)
	}
}

// reset clears every cache: the safe answer when the journal cannot say
// what changed.
func (s *Store) reset(why string) {
	s.metrics.journal.WithLabelValues("reset").Inc()
	s.log.Warn("keystore: cache cleared", "reason", why)
	s.filterReset()
	s.names.InvalidateAll()
	s.certs.InvalidateAll()
}
