package keystore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bits-and-blooms/bloom/v3"
	"github.com/keyedge/keyedge/internal/ops"
	"github.com/keyedge/keyedge/internal/ratelog"
	"github.com/prometheus/client_golang/prometheus"
)

// The name filter keeps floods of unknown names away from storage. It is
// a Bloom filter of every name in names/ (exact and wildcard), stored as
// one object that writers update, under the write lock, before they
// write a name file, and that every node loads once at Open and then
// follows through the journal, adding the names each entry touches. A
// lookup reads names/ only for a name the filter may hold, so an unknown
// name costs storage a read with the filter's false-positive rate, about
// 1 in 400 at worst per name checked, instead of every time.
//
// Names are never removed: a removed name is only a false positive until
// the filter is rebuilt (when it fills, or by Store.RebuildNameFilter).
// Whenever a node has no filter it can trust (none stored in a keystore
// that has names, one that fails its checksum, a journal gap, a read
// error) it reads storage for every name, as before, and says so.
//
// Layout of filterKey, integers big-endian:
//
//	magic     8 bytes  "kefilt01"
//	capacity  8 bytes  names the filter was sized for (filterFPR there)
//	count     8 bytes  names added that set a new bit (≈ distinct names)
//	m         8 bytes  bits in the filter  ┐ bits-and-blooms/bloom/v3
//	k         8 bytes  hash functions      │ WriteTo encoding
//	length    8 bytes  = m                 │
//	words     8 bytes × ceil(m/64)         ┘
//	crc       4 bytes  CRC-32C of everything before it
const (
	filterKey   = "namefilter"
	filterMagic = "kefilt01"

	// filterFPR is the false-positive rate of a filter holding its
	// capacity. A lookup checks the name and its wildcard, so an unknown
	// name reaches storage at worst twice this often.
	filterFPR = 0.0025

	// minFilterCapacity sizes the filter of a small keystore (about 2 KB).
	minFilterCapacity = 1024

	// filterRetryPolls is how many journal polls a node without a
	// usable filter waits before loading it again (10s at the default
	// PollInterval); a journal entry makes it retry at the next poll.
	filterRetryPolls = 20

	// maxFilterHashes bounds k in a stored filter.
	maxFilterHashes = 64
)

var crc32c = crc32.MakeTable(crc32.Castagnoli)

// errNoFilter reports a keystore that has names but no stored filter.
var errNoFilter = errors.New("keystore: no name filter stored (run keyctl reindex)")

// nameFilter is an in-memory name filter.
type nameFilter struct {
	capacity uint64 // static after construction

	mu    sync.RWMutex // guards bloom and count
	bloom *bloom.BloomFilter
	count uint64
}

// newNameFilter returns an empty filter sized for capacity names.
func newNameFilter(capacity uint64) *nameFilter {
	capacity = max(capacity, minFilterCapacity)
	return &nameFilter{capacity: capacity, bloom: bloom.NewWithEstimates(uint(capacity), filterFPR)}
}

// mayContain reports whether name may be in the filter; false is certain.
func (f *nameFilter) mayContain(name string) bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.bloom.TestString(name)
}

// add adds names and returns how many of them set a new bit.
func (f *nameFilter) add(names ...string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	added := 0
	for _, n := range names {
		if !f.bloom.TestAndAddString(n) {
			added++
		}
	}
	f.count += uint64(added)
	return added
}

// size returns how many names set a new bit so far.
func (f *nameFilter) size() uint64 {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.count
}

// full reports whether the filter holds more names than it was sized for.
func (f *nameFilter) full() bool { return f.size() > f.capacity }

func (f *nameFilter) marshal() ([]byte, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var b bytes.Buffer
	b.WriteString(filterMagic)
	b.Write(binary.BigEndian.AppendUint64(nil, f.capacity))
	b.Write(binary.BigEndian.AppendUint64(nil, f.count))
	if _, err := f.bloom.WriteTo(&b); err != nil {
		return nil, fmt.Errorf("keystore: failed to encode name filter: %w", err)
	}
	return binary.BigEndian.AppendUint32(b.Bytes(), crc32.Checksum(b.Bytes(), crc32c)), nil
}

// parseNameFilter decodes a stored filter, checking its checksum and
// every length before it allocates.
func parseNameFilter(data []byte) (*nameFilter, error) {
	const header = len(filterMagic) + 5*8
	if len(data) < header+4 || string(data[:len(filterMagic)]) != filterMagic {
		return nil, fmt.Errorf("%w: name filter: bad header", errMalformed)
	}
	body, sum := data[:len(data)-4], binary.BigEndian.Uint32(data[len(data)-4:])
	if crc32.Checksum(body, crc32c) != sum {
		return nil, fmt.Errorf("%w: name filter: checksum mismatch", errMalformed)
	}
	u := func(i int) uint64 { return binary.BigEndian.Uint64(body[len(filterMagic)+8*i:]) }
	capacity, count, m, k, length := u(0), u(1), u(2), u(3), u(4)
	if m == 0 || length != m || k == 0 || k > maxFilterHashes || (m+63)/64 != uint64(len(body)-header)/8 || (len(body)-header)%8 != 0 {
		return nil, fmt.Errorf("%w: name filter: bad dimensions m=%d k=%d", errMalformed, m, k)
	}
	f := &nameFilter{capacity: capacity, count: count, bloom: &bloom.BloomFilter{}}
	if _, err := f.bloom.ReadFrom(bytes.NewReader(body[len(filterMagic)+16:])); err != nil {
		return nil, fmt.Errorf("%w: name filter: %v", errMalformed, err)
	}
	return f, nil
}

// filterState is a Store's copy of the name filter.
type filterState struct {
	cur atomic.Pointer[nameFilter] // nil: no filter to trust, every miss reads storage

	// Owned by the follow goroutine (and Open before it starts).
	reload   bool   // load the stored filter at the next poll
	reloadAt uint64 // size past which the stored filter is loaded again (it was grown)
	waited   int    // polls since a failed load
	seen     uint64 // journal position at the last tend
	caughtUp time.Time

	kick chan chan struct{} // lookups ask the follow goroutine to catch up

	log                       ratelog.Limiter
	checks                    *prometheus.CounterVec
	absent, maybe, unfiltered prometheus.Counter
}

// openFilter registers the filter's metrics; Open calls it after reading
// the journal head, and then, unless OneShot, loads the stored filter.
// Failing to load is not an error: lookups then read storage until a
// later poll loads it.
func (s *Store) openFilter(reg prometheus.Registerer) error {
	st := &s.filter
	st.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "keyedge_keystore_name_filter_checks_total",
		Help: "Names checked against the name filter before reading storage, by result: absent (no read), maybe (read), unfiltered (no usable filter: read).",
	}, []string{"result"})
	st.absent, st.maybe, st.unfiltered = st.checks.WithLabelValues("absent"), st.checks.WithLabelValues("maybe"), st.checks.WithLabelValues("unfiltered")
	if err := ops.Register(reg, st.checks); err != nil {
		return fmt.Errorf("keystore: failed to register metrics (one Store per registry): %w", err)
	}
	st.seen = s.journal.seen
	st.kick = make(chan chan struct{})
	return nil
}

// mayHold reports whether storage may hold name: false only when the
// filter says for certain it does not.
func (s *Store) mayHold(ctx context.Context, name string) bool {
	f := s.filter.cur.Load()
	switch {
	case f == nil:
		s.filter.unfiltered.Inc()
		s.filter.log.Log(ctx, s.log, slog.LevelWarn, "unfiltered", "keystore: no usable name filter: every unknown name costs a storage read")
		return true
	case f.mayContain(name):
		s.filter.maybe.Inc()
		return true
	default:
		s.filter.absent.Inc()
		return false
	}
}

// mayHoldNow asks again after catching up with the journal, so a name
// another node has just written is found at once rather than at the
// next poll. Catching up reads the journal head at most once per
// PollInterval/10 however many unknown names ask, and waits at most
// for ctx.
func (s *Store) mayHoldNow(ctx context.Context, name string) bool {
	done := make(chan struct{})
	select {
	case s.filter.kick <- done:
	case <-ctx.Done():
		return false
	case <-s.done:
		return false
	}
	select {
	case <-done:
	case <-ctx.Done():
		return false
	}
	f := s.filter.cur.Load()
	return f == nil || f.mayContain(name)
}

// catchUp polls the journal for a lookup the filter refused, unless the
// last catch-up was less than PollInterval/10 ago, and then closes done.
// It runs in the follow goroutine.
func (s *Store) catchUp(ctx context.Context, done chan struct{}) {
	defer close(done)
	if now := time.Now(); now.Sub(s.filter.caughtUp) >= s.pollInterval/10 {
		s.filter.caughtUp = now
		s.pollNow(ctx)
	}
}

// loadFilter replaces the in-memory filter with the stored one. When
// there is none to use it keeps the current one, which stays a superset
// of the stored names unless a journal gap dropped it (filterReset).
func (s *Store) loadFilter(ctx context.Context) {
	f, err := s.readFilter(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		f = newNameFilter(0) // an empty keystore
	} else if err != nil {
		s.filter.log.Log(ctx, s.log, slog.LevelWarn, "load", "keystore: cannot use the name filter; unknown names are read from storage", "err", err)
		return
	}
	s.filter.cur.Store(f)
	s.filter.reloadAt = max(f.capacity, f.size()+f.capacity/4)
}

// readFilter reads and parses the stored filter. It returns an error
// wrapping fs.ErrNotExist only when neither a filter nor any name is
// stored, errNoFilter when names are stored without one.
func (s *Store) readFilter(ctx context.Context) (*nameFilter, error) {
	data, err := s.storage.Load(ctx, filterKey)
	if errors.Is(err, fs.ErrNotExist) {
		for _, err := range s.Names(ctx) {
			if err != nil {
				return nil, fmt.Errorf("keystore: failed to list names: %w", err)
			}
			return nil, errNoFilter
		}
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to read name filter: %w", err)
	}
	return parseNameFilter(data)
}

// tendFilter runs in the follow goroutine after each journal poll. It
// loads the stored filter after a journal gap; when this node has none
// it can use, at the next journal entry (perhaps a rebuild) or after
// filterRetryPolls; and when the names the journal added have filled it
// (the writer that filled it stored a larger one).
func (s *Store) tendFilter(ctx context.Context) {
	st := &s.filter
	moved := st.seen != s.journal.seen
	st.seen = s.journal.seen
	f := st.cur.Load()
	switch {
	case st.reload:
	case f == nil:
		if st.waited++; !moved && st.waited < filterRetryPolls {
			return
		}
	case f.size() > st.reloadAt:
	default:
		return
	}
	st.reload, st.waited = false, 0
	s.loadFilter(ctx)
}

// filterReset drops the filter after a journal gap, which may have hidden
// names added meanwhile; lookups read storage until it is loaded again.
// It runs in the follow goroutine.
func (s *Store) filterReset() {
	s.filter.cur.Store(nil)
	s.filter.reload = true
}

// filterAdd adds the names a journal entry touched to the in-memory filter.
func (s *Store) filterAdd(names []string) {
	if f := s.filter.cur.Load(); f != nil {
		f.add(names...)
	}
}

// addToStoredFilter adds names to the stored filter before a writer
// writes their name files, so that no node that loads the filter can miss
// them, and grows the filter (rebuilding it from names/) once it holds
// more names than it was sized for. The caller holds the write lock. A
// keystore with names but no usable filter is left without one: every
// node then reads storage, and RebuildNameFilter makes a new one.
func (s *Store) addToStoredFilter(ctx context.Context, names []string) error {
	f, err := s.readFilter(ctx)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		f = newNameFilter(0)
	case errors.Is(err, errNoFilter) || errors.Is(err, errMalformed):
		s.filter.log.Log(ctx, s.log, slog.LevelWarn, "write", "keystore: name filter not updated; run keyctl reindex", "err", err)
		return nil
	case err != nil:
		return err
	}
	if f.add(names...) == 0 {
		return nil
	}
	if f.full() {
		if f, err = s.buildFilter(ctx, 2*f.size(), names, nil); err != nil {
			return err
		}
	}
	return s.storeFilter(ctx, f)
}

func (s *Store) storeFilter(ctx context.Context, f *nameFilter) error {
	data, err := f.marshal()
	if err != nil {
		return err
	}
	if err := s.storage.Store(ctx, filterKey, data); err != nil {
		return fmt.Errorf("keystore: failed to write name filter: %w", err)
	}
	return nil
}

// buildFilter returns a filter of every stored name plus extra, sized
// for at least capacity names and grown (listing again) if they turn out
// more. progress, if not nil, is called with the names added so far.
func (s *Store) buildFilter(ctx context.Context, capacity uint64, extra []string, progress func(done int)) (*nameFilter, error) {
	for {
		f := newNameFilter(capacity)
		f.add(extra...)
		done := 0
		for name, err := range s.Names(ctx) {
			if err != nil {
				return nil, fmt.Errorf("keystore: failed to list names: %w", err)
			}
			f.add(name)
			if done++; progress != nil && done%4096 == 0 {
				progress(done)
			}
		}
		if progress != nil {
			progress(done)
		}
		if !f.full() {
			return f, nil
		}
		capacity = 2 * f.size()
	}
}

// RebuildNameFilter makes the stored name filter anew from names/, sized
// for twice the names there are, and journals an entry so every node
// loads it within its PollInterval. Use it on a keystore written before
// the filter existed, after a corrupt filter was reported, or to drop
// removed names. It holds the write lock while it lists every name;
// progress, if not nil, is called first with (done, 0) while names are
// counted, then with (done, total) while they are added. It returns the
// number of names.
func (s *Store) RebuildNameFilter(ctx context.Context, progress func(done, total int)) (int, error) {
	var total int
	err := s.locked(ctx, func() error {
		for _, err := range s.Names(ctx) {
			if err != nil {
				return fmt.Errorf("keystore: failed to list names: %w", err)
			}
			if total++; progress != nil && total%4096 == 0 {
				progress(total, 0)
			}
		}
		var report func(int)
		if progress != nil {
			report = func(done int) { progress(done, total) }
		}
		f, err := s.buildFilter(ctx, 2*uint64(total), nil, report)
		if err != nil {
			return err
		}
		if err := s.storeFilter(ctx, f); err != nil {
			return err
		}
		s.filter.cur.Store(f)
		return s.commit(ctx, change{}, nil)
	})
	return total, err
}
