package keystore

import (
	"bytes"
	"cmp"
	"context"
	"crypto"
	"crypto/cipher"
	"crypto/hpke"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrNotFound is returned by Lookup for a name no certificate covers.
var ErrNotFound = errors.New("keystore: no certificate for name")

// ErrCorrupt wraps every failure to parse or open a stored file. The
// error text names the tenant's certificate and the file; only that
// tenant is affected and nothing is deleted.
var ErrCorrupt = errors.New("keystore: corrupt entry")

// Options configures a Store. The zero value of every field but Storage
// has a working default.
type Options struct {
	// Storage holds the keystore. Required; certmagic.FileStorage for a
	// directory on local disk.
	Storage Storage

	// FleetKey seals and opens keys with no geo policy. Nil: this node
	// opens none of them (PrivateKey fails with ErrCannotOpen) and Put
	// refuses them.
	FleetKey *FleetKey

	// NodeKey opens keys whose geo policy admits this node's attributes.
	// Nil: this node opens no restricted key. Open starts opening, in the
	// background, the policy keys this node is admitted to (unless
	// OneShot).
	NodeKey *geo.NodeKey

	// MaxEntries bounds the number of cached certificates, and separately
	// the number of cached names. Default 100,000.
	MaxEntries int

	// MaxBytes bounds the estimated heap held by cached certificates.
	// Default 256 MiB.
	MaxBytes int64

	// NegativeTTL is how long an unknown name, or a file that failed to
	// load, is remembered before storage is asked again. Default 1s.
	NegativeTTL time.Duration

	// KeyLoadTimeout bounds a private key load (read, policy key open,
	// unseal). The load is shared by every caller waiting for the key and
	// runs detached from their contexts, each of which bounds only its
	// own wait. Default 10s.
	KeyLoadTimeout time.Duration

	// DeleteGrace is how long a certificate replaced by a renewal stays
	// in storage, so a handshake that chose it just before the renewal
	// can still open its key. Default 1m.
	DeleteGrace time.Duration

	// PollInterval is how often the change journal is read; with
	// NegativeTTL it bounds how long a changed certificate can be served
	// stale. Default 500ms.
	PollInterval time.Duration

	// Logger receives load failures (once per file and error) and journal
	// problems. Default slog.Default().
	Logger *slog.Logger

	// Registerer, if set, receives the keyedge_keystore_* metrics.
	Registerer prometheus.Registerer

	// RequireInit makes Open fail with ErrNotInitialised unless Storage
	// holds an initialised keystore (one Init, or any write, has made: it
	// has a journal head), so a server pointed at a wrong path or an
	// unmounted volume refuses to start instead of serving nothing.
	// Servers set it; tools that create keystores leave it unset.
	RequireInit bool

	// OneShot opens the Store for a command that does one job and
	// closes it (keyctl) rather than for serving: Open reads the journal
	// head only, and starts no journal follower, no background policy
	// key opens and no name filter. Lookups then read storage for every
	// name this Store has not read yet; a name it has read reflects its
	// own writes at once, other writers' only once the cached entry
	// expires. Writes are those of any Store: journaled, keeping the
	// stored name filter up to date. PollInterval is unused.
	OneShot bool

	// Signer, if set, makes the signer Cert.Signer returns from each
	// private key this Store opens, once per load: a server's faster
	// signer for the key (internal/rsasigner's OpenSSL one). It must
	// return a signer of the same public key. Nil: Cert.Signer returns
	// the key as parsed.
	Signer func(crypto.Signer) crypto.Signer
}

// Store is a lazily loaded keystore: it reads nothing per tenant when
// opened, and loads a name's certificates on its first lookup. It is safe
// for concurrent use.
type Store struct {
	storage        Storage
	fleet          *FleetKey
	nodeKey        *geo.NodeKey
	negativeTTL    time.Duration
	pollInterval   time.Duration
	deleteGrace    time.Duration
	keyLoadTimeout time.Duration
	log            *slog.Logger
	metrics        *metrics
	signer         func(crypto.Signer) crypto.Signer // Options.Signer, or nil

	names    *otter.Cache[string, *nameEntry]  // name → certificate refs, or a remembered miss
	certs    *otter.Cache[string, *Cert]       // certificate ID → loaded record
	policies *otter.Cache[string, *policyKey]  // policy ID → loaded, perhaps opened, policy key
	reported *otter.Cache[string, string]      // file → last error logged for it
	dataKeys *otter.Cache[string, cipher.AEAD] // recipient and wrapped data key → opened data key (datakey.go)

	lastDataKey atomic.Pointer[openedDataKey] // the data key last returned by dataKey (datakey.go)

	sealMu  sync.Mutex             // guards sealing
	sealing map[string]*sealingKey // recipient → the data key this Store seals with

	writeMu sync.Mutex // serialises this process's writers before the storage lock
	held    bool       // Hold took the storage lock for a bulk run; guarded by writeMu

	filter  filterState // which names storage may hold (filter.go)
	oneShot bool        // Options.OneShot: no follower, no filter

	journal journalState
	avail   availability
	stop    context.CancelFunc
	done    chan struct{}
}

// nameEntry is a names cache value. A nil refs means the name is absent
// (err == nil) or its file failed to load (err != nil). refs with an err
// are the usable part of a name whose other refs named certificates that
// do not cover it. An entry with an err is kept for NegativeTTL.
type nameEntry struct {
	refs []nameRef
	err  error
}

// Entry is the result of a lookup: the stored name that matched (the
// name itself or its wildcard) and the certificates serving it.
type Entry struct {
	Name  string
	Certs []*Cert
}

// Cert is one stored certificate, parsed and ready for a handshake.
// Its fields must not be modified.
type Cert struct {
	ID     string
	Meta   Meta
	Policy *geo.Policy // Meta.Policy parsed; nil when unrestricted
	Chain  [][]byte    // DER, leaf first
	Leaf   *x509.Certificate
	OCSP   []byte

	names []string // the leaf's DNS names, normalised and sorted
	store *Store
	err   error // load failure, remembered for NegativeTTL

	combined bool // the record is in the layout that holds the sealed key (recordfile.go)

	mu       sync.Mutex // guards sealed, key, signer, keyErr, keyErrAt, keyLoad; never held across I/O
	sealed   []byte     // the sealed key as read with the record, until the first open (sealedkey.go)
	key      crypto.Signer
	signer   crypto.Signer // key through Options.Signer (Cert.Signer)
	keyErr   error         // last load failure, remembered for NegativeTTL; never a timeout
	keyErrAt time.Time
	keyLoad  *keyLoad // the load in flight, if any

	// The origin client key (originpool.go), opened once.
	originKeyOnce sync.Once
	originKey     crypto.Signer
	originKeyErr  error
	memo          memo // Memo's values
}

// positiveTTL makes every cached entry re-read now and then, a safety
// net under the journal that costs one read per hot name per period.
const positiveTTL = time.Hour

// withDefaults returns o with every zero field that has a default set
// to it.
func (o Options) withDefaults() Options {
	o.MaxEntries = cmp.Or(o.MaxEntries, 100_000)
	o.MaxBytes = cmp.Or(o.MaxBytes, 256<<20)
	o.NegativeTTL = cmp.Or(o.NegativeTTL, time.Second)
	o.KeyLoadTimeout = cmp.Or(o.KeyLoadTimeout, 10*time.Second)
	o.DeleteGrace = cmp.Or(o.DeleteGrace, time.Minute)
	o.PollInterval = cmp.Or(o.PollInterval, 500*time.Millisecond)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Open returns a Store over opts.Storage. It reads only the journal head
// and the name filter, never a per-tenant file, and starts following the
// journal until Close (unless opts.OneShot).
func Open(ctx context.Context, opts Options) (*Store, error) {
	if opts.Storage == nil {
		return nil, errors.New("keystore: Options.Storage is nil")
	}
	opts = opts.withDefaults()
	s := &Store{
		storage:        opts.Storage,
		fleet:          opts.FleetKey,
		nodeKey:        opts.NodeKey,
		negativeTTL:    opts.NegativeTTL,
		pollInterval:   opts.PollInterval,
		deleteGrace:    opts.DeleteGrace,
		keyLoadTimeout: opts.KeyLoadTimeout,
		signer:         opts.Signer,
		oneShot:        opts.OneShot,
		log:            opts.Logger,
		metrics:        newMetrics(),
		done:           make(chan struct{}),
	}
	maxEntries, maxBytes := opts.MaxEntries, opts.MaxBytes
	// The certs cache is weighed in bytes; giving every entry at least
	// maxBytes/maxEntries of weight makes the one weight bound enforce
	// both the byte and the entry bound.
	minWeight := uint32(min(maxBytes/int64(maxEntries), 1<<30))
	s.certs = otter.Must(&otter.Options[string, *Cert]{
		MaximumWeight: uint64(maxBytes),
		Weigher: func(_ string, c *Cert) uint32 {
			return max(uint32(min(c.size(), 1<<30)), minWeight)
		},
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *Cert]) time.Duration {
			return s.ttl(e.Value.err)
		}),
		OnDeletion: countEvictions[*Cert](s.metrics.evictions.WithLabelValues("certs")),
	})
	s.names = otter.Must(&otter.Options[string, *nameEntry]{
		MaximumSize: maxEntries,
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *nameEntry]) time.Duration {
			if e.Value.refs == nil || e.Value.err != nil {
				return s.negativeTTL
			}
			return positiveTTL
		}),
		OnDeletion: countEvictions[*nameEntry](s.metrics.evictions.WithLabelValues("names")),
	})
	s.policies = s.newPolicyCache()
	s.dataKeys = newDataKeyCache()
	s.reported = otter.Must(&otter.Options[string, string]{MaximumSize: 10_000})
	if err := s.metrics.register(opts.Registerer, s); err != nil {
		return nil, err
	}
	head, ok, err := s.readHead(ctx)
	if err != nil {
		return nil, err
	}
	if !ok && opts.RequireInit {
		return nil, fmt.Errorf("%w: no %s in %v (run keyctl init, or check the keystore location)", ErrNotInitialised, headKey, s.storage)
	}
	s.avail.initialised.Store(ok)
	s.journal.seen = head
	if err := s.openFilter(opts.Registerer); err != nil {
		return nil, err
	}
	if s.oneShot {
		s.stop = func() {}
		close(s.done)
		return s, nil
	}
	s.loadFilter(ctx)
	tailCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	s.stop = stop
	go s.follow(tailCtx)
	if s.nodeKey != nil {
		go s.warmPolicies(tailCtx)
	}
	return s, nil
}

// Close stops following the journal (if it does) and unregisters
// nothing: metrics registered with Options.Registerer stay registered.
func (s *Store) Close() error {
	s.stop()
	<-s.done
	return nil
}

func (s *Store) ttl(err error) time.Duration {
	if err != nil {
		return s.negativeTTL
	}
	return positiveTTL
}

// Lookup returns the certificates for serverName: an exact match, else
// the one-label wildcard covering it. It returns ErrBadName for a name
// that cannot be a host name, ErrNotFound when nothing covers it, and
// an error wrapping ErrCorrupt when its stored files cannot be used.
// When some of a name's certificates load and others do not, the good
// ones are returned and the failure is logged and counted.
func (s *Store) Lookup(ctx context.Context, serverName string) (*Entry, error) {
	e, loadStart, err := s.lookup(ctx, serverName)
	switch {
	case errors.Is(err, ErrNotFound) || errors.Is(err, ErrBadName):
		s.metrics.negative.Inc()
	case err != nil:
		s.metrics.errors.Inc()
	case !loadStart.IsZero():
		s.metrics.misses.Inc()
		s.metrics.loadSeconds.Observe(time.Since(loadStart).Seconds())
	default:
		s.metrics.hits.Inc()
	}
	return e, err
}

// lookup does Lookup's work; loadStart is when it first had to read
// storage, zero for a lookup served from the caches.
func (s *Store) lookup(ctx context.Context, serverName string) (e *Entry, loadStart time.Time, err error) {
	name, err := NormalizeName(serverName)
	if err != nil {
		return nil, loadStart, err
	}
	if name[0] == '*' {
		return nil, loadStart, fmt.Errorf("%w: wildcard as server name", ErrBadName)
	}
	ne, err := s.nameRefs(ctx, name, &loadStart)
	if err == nil && ne.refs == nil && ne.err == nil {
		if w := WildcardOf(name); w != "" {
			ne, err = s.nameRefs(ctx, w, &loadStart)
			name = w
		}
	}
	if err != nil {
		return nil, loadStart, err
	}
	e, err = s.entry(ctx, name, ne, &loadStart)
	return e, loadStart, err
}

// Stored returns the certificates stored under name exactly, a wildcard
// name such as "*.example.com" included and with no fallback from a
// name to its wildcard, for tools listing what Names yields; Lookup is
// what serves a handshake. It reports absence and failures as Lookup
// does, and is not counted in the lookup metrics.
func (s *Store) Stored(ctx context.Context, name string) (*Entry, error) {
	name, err := NormalizeName(name)
	if err != nil {
		return nil, err
	}
	var loadStart time.Time
	ne, err := s.nameRefs(ctx, name, &loadStart)
	if err != nil {
		return nil, err
	}
	return s.entry(ctx, name, ne, &loadStart)
}

// entry loads the certificates ne refers to for the normalised name.
func (s *Store) entry(ctx context.Context, name string, ne *nameEntry, loadStart *time.Time) (*Entry, error) {
	if ne.refs == nil {
		return nil, cmpOr(ne.err, ErrNotFound)
	}
	e := &Entry{Name: name, Certs: make([]*Cert, 0, len(ne.refs))}
	var firstErr, uncovered error
	for _, ref := range ne.refs {
		c, ok := s.certs.GetIfPresent(ref.ID)
		if !ok {
			markLoad(loadStart)
			var err error
			if c, err = s.certs.Get(ctx, ref.ID, otter.LoaderFunc[string, *Cert](s.loadCert)); err != nil {
				return nil, err // ctx done, or the storage unavailable
			}
		}
		switch {
		case c.err != nil:
			firstErr = cmpOr(firstErr, fmt.Errorf("%s: %w", name, c.err))
		case !c.covers(name):
			uncovered = cmpOr(uncovered, fmt.Errorf("%w: certificate %s does not cover the name", errMalformed, c.ID))
		default:
			e.Certs = append(e.Certs, c)
		}
	}
	if uncovered != nil {
		// A hand-edited or swapped name file: never serve another
		// tenant's certificate. The name is corrupt until it is fixed,
		// remembered (and counted and logged) once per NegativeTTL.
		err := s.failed("name", name, nameKey(name), uncovered)
		s.forgetUncovered(name, ne, e.Certs, err)
		firstErr = cmpOr(firstErr, err)
	}
	if len(e.Certs) == 0 {
		return nil, cmpOr(firstErr, ne.err)
	}
	return e, nil
}

// forgetUncovered replaces the cached entry ne of name, unless a newer
// one replaced it meanwhile, by one that keeps only the refs of good,
// which cover the name, and err, for NegativeTTL.
func (s *Store) forgetUncovered(name string, ne *nameEntry, good []*Cert, err error) {
	var refs []nameRef
	for _, r := range ne.refs {
		if slices.ContainsFunc(good, func(c *Cert) bool { return c.ID == r.ID }) {
			refs = append(refs, r)
		}
	}
	s.names.ComputeIfPresent(name, func(old *nameEntry) (*nameEntry, otter.ComputeOp) {
		if old != ne {
			return old, otter.CancelOp
		}
		return &nameEntry{refs: refs, err: err}, otter.WriteOp
	})
}

// covers reports whether the certificate is valid for a normalised name
// as stored: one of its DNS names, normalised, is name ("*.example.com"
// for a wildcard entry).
func (c *Cert) covers(name string) bool {
	_, ok := slices.BinarySearch(c.names, name)
	return ok
}

// markLoad records the start of the first storage read of a lookup.
func markLoad(start *time.Time) {
	if start.IsZero() {
		*start = time.Now()
	}
}

// CertByID returns the stored certificate with the given ID (CertID of
// its leaf), from the cache or storage. It returns ErrNotFound for an ID
// that is malformed or not stored, and an error wrapping ErrCorrupt for
// a record that cannot be used.
func (s *Store) CertByID(ctx context.Context, id string) (*Cert, error) {
	if !isCertID(id) {
		return nil, fmt.Errorf("%w: malformed certificate ID", ErrNotFound)
	}
	c, ok := s.certs.GetIfPresent(id)
	if !ok {
		if !s.storage.Exists(ctx, recordKey(id)) {
			if err := s.unavailable(ctx, recordKey(id), fs.ErrNotExist); err != nil {
				return nil, err
			}
			return nil, fmt.Errorf("%w: certificate %s", ErrNotFound, id)
		}
		var err error
		if c, err = s.certs.Get(ctx, id, otter.LoaderFunc[string, *Cert](s.loadCert)); err != nil {
			return nil, err
		}
	}
	if c.err != nil {
		return nil, c.err
	}
	return c, nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// nameRefs returns the cached or loaded name entry for a normalised name.
func (s *Store) nameRefs(ctx context.Context, name string, loadStart *time.Time) (*nameEntry, error) {
	if ne, ok := s.names.GetIfPresent(name); ok {
		return ne, nil
	}
	if !s.oneShot && !s.mayHold(ctx, name) && !s.mayHoldNow(ctx, name) {
		// Absent from the filter as of the last journal entry read; if
		// the journal cannot be read now, newer names cannot be known:
		// the lookup failed, it did not find nothing.
		if err := s.Err(); err != nil {
			return nil, err
		}
		return &nameEntry{}, nil
	}
	markLoad(loadStart)
	return s.names.Get(ctx, name, otter.LoaderFunc[string, *nameEntry](s.loadName))
}

// loadName reads a name file. Absence and failure are values (cached
// for NegativeTTL), not errors, so otter keeps them.
func (s *Store) loadName(ctx context.Context, name string) (*nameEntry, error) {
	key := nameKey(name)
	buf := readBufs.Get().(*[]byte)
	defer readBufs.Put(buf)
	data, err := s.loadLent(ctx, key, *buf)
	if err != nil {
		if uerr := s.unavailable(ctx, key, err); uerr != nil {
			return nil, uerr // not cached: the next lookup asks again
		}
		if errors.Is(err, fs.ErrNotExist) {
			return &nameEntry{}, nil
		}
	} else {
		var refs []nameRef
		if refs, err = parseNameFile(data); err == nil { // copies what it keeps
			return &nameEntry{refs: refs}, nil
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return &nameEntry{err: s.failed("name", name, key, err)}, nil
}

// loadCert reads and parses a certificate record. A failure becomes a
// Cert carrying the error, cached for NegativeTTL.
func (s *Store) loadCert(ctx context.Context, id string) (*Cert, error) {
	key := recordKey(id)
	buf := readBufs.Get().(*[]byte)
	defer readBufs.Put(buf)
	data, err := s.loadLent(ctx, key, *buf)
	if err != nil {
		if uerr := s.unavailable(ctx, key, err); uerr != nil {
			return nil, uerr // not cached: the next lookup asks again
		}
	} else {
		var c *Cert
		if c, err = s.newCert(id, data); err == nil {
			return c, nil
		}
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	return &Cert{ID: id, err: s.failed("record", id, key, err)}, nil
}

// newCert parses the record of certificate id into a Cert that keeps
// nothing of data, which may be a read buffer (Store.loadLent).
func (s *Store) newCert(id string, data []byte) (*Cert, error) {
	r, leaf, err := parseRecord(id, data)
	if err != nil {
		return nil, err
	}
	c := &Cert{ID: id, Meta: r.Meta, Chain: r.Chain, Leaf: leaf, OCSP: r.OCSP, store: s}
	c.names, _ = leafNames(leaf) // a name that fails to normalise covers nothing
	if r.Policy != "" {
		if c.Policy, err = geo.ParsePolicy(r.Policy); err != nil {
			return nil, fmt.Errorf("%w: %w", errMalformed, err)
		}
	}
	c.combined = isRecordFile(data)
	if sealed := s.keepSealed(c, r.Sealed); sealed != nil {
		c.sealed = bytes.Clone(sealed) // r.Sealed is part of data
	}
	return c, nil
}

// failed turns a load failure into the error callers see, counts it, and
// logs it the first time this file fails this way.
func (s *Store) failed(kind, subject, key string, err error) error {
	s.metrics.loadErrors.WithLabelValues(kind).Inc()
	if errors.Is(err, fs.ErrNotExist) {
		err = fmt.Errorf("%w: file missing", errMalformed)
	}
	err = fmt.Errorf("%w: %s %s: %s: %w", ErrCorrupt, kind, subject, key, err)
	if prev, ok := s.reported.GetIfPresent(key); !ok || prev != err.Error() {
		s.reported.Set(key, err.Error())
		s.log.Error("keystore: cannot load file", "file", key, "err", err)
	}
	return err
}

// size estimates the heap held by a cached Cert: the DER it keeps, the
// parsed leaf (which holds its own copy of the DER plus decoded fields),
// the sealed key until it is opened, and fixed overheads measured by
// BenchmarkCachedCertHeap.
func (c *Cert) size() int64 {
	c.mu.Lock()
	n := int64(len(c.sealed))
	c.mu.Unlock()
	n += int64(certOverhead) + int64(len(c.OCSP)) + int64(len(c.Meta.Tenant)+len(c.Meta.Origin)+len(c.Meta.Policy)) + c.Meta.OriginPool.size() + c.Meta.HTTP.size()
	for _, der := range c.Chain {
		n += int64(len(der))
	}
	for _, name := range c.names {
		n += int64(len(name)) + 16
	}
	if len(c.Chain) > 0 {
		n += 2 * int64(len(c.Chain[0]))
	}
	return n
}

// certOverhead is the measured heap of a parsed ECDSA leaf and the Cert
// around it beyond the DER lengths counted in size.
const certOverhead = 2900

// PrivateKey returns the certificate's private key, reading and unsealing
// it on first use; the key then stays with the cached Cert. It fails with
// ErrCannotOpen when this node cannot open the key (no fleet key, or a key
// sealed for elsewhere) and with ErrCorrupt when the file is bad or does
// not match the certificate. Failures are remembered for NegativeTTL.
//
// However many callers ask at once, the key is loaded once. The load runs
// detached from the callers' contexts, bounded by KeyLoadTimeout: ctx
// bounds only this caller's wait, and neither its end nor the load's
// timeout is remembered as the key's error. A fleet key read with its
// record needs no I/O: the first caller opens it on its own goroutine
// (tens of microseconds of CPU) and others wait for that.
func (c *Cert) PrivateKey(ctx context.Context) (crypto.Signer, error) {
	key, _, err := c.loadedKey(ctx)
	return key, err
}

// Signer returns the signer a handshake signs with: the private key as
// Options.Signer made it when the key was loaded, or the key itself
// without that hook. It loads the key as PrivateKey does, with its
// errors.
func (c *Cert) Signer(ctx context.Context) (crypto.Signer, error) {
	_, signer, err := c.loadedKey(ctx)
	return signer, err
}

// loadedKey returns the key and its signer, loading them (PrivateKey).
func (c *Cert) loadedKey(ctx context.Context) (key, signer crypto.Signer, err error) {
	c.mu.Lock()
	if c.key != nil {
		defer c.mu.Unlock()
		return c.key, c.signer, nil
	}
	if c.keyErr != nil && time.Since(c.keyErrAt) < c.store.negativeTTL {
		defer c.mu.Unlock()
		return nil, nil, c.keyErr
	}
	l := c.keyLoad
	if l == nil {
		l = &keyLoad{done: make(chan struct{})}
		c.keyLoad = l
		if c.opensInline() {
			// No I/O to wait for, so no KeyLoadTimeout to bound it: open
			// on this goroutine (sealedkey.go).
			c.mu.Unlock()
			c.loadKey(context.WithoutCancel(ctx), l)
			return l.key, l.signer, l.err
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.store.keyLoadTimeout)
			defer cancel()
			c.loadKey(ctx, l)
		}()
	}
	c.mu.Unlock()
	select {
	case <-l.done:
		return l.key, l.signer, l.err
	case <-ctx.Done():
		return nil, nil, ctx.Err()
	}
}

// keyLoad is one shared load of a Cert's private key; key, signer and
// err are set before done is closed.
type keyLoad struct {
	done   chan struct{}
	key    crypto.Signer
	signer crypto.Signer // key through Options.Signer
	err    error
}

// loadKey runs l for c and publishes the result. ctx carries the first
// caller's values, not its cancellation, and KeyLoadTimeout's deadline
// when the load may do I/O.
func (c *Cert) loadKey(ctx context.Context, l *keyLoad) {
	start := time.Now()
	l.key, l.err = c.store.openKey(ctx, c)
	if l.signer = l.key; l.err == nil && c.store.signer != nil {
		l.signer = c.store.signer(l.key)
	}
	c.store.metrics.keyOpenSeconds.Observe(time.Since(start).Seconds())
	if l.err != nil && ctx.Err() != nil {
		// The load ran out of time: say so, whatever the storage said.
		l.err = fmt.Errorf("keystore: loading key of %s: %w", c.ID, ctx.Err())
	}
	c.mu.Lock()
	switch {
	case l.err == nil:
		c.key, c.signer, c.keyErr = l.key, l.signer, nil
	case ctx.Err() == nil:
		c.keyErr, c.keyErrAt = l.err, time.Now()
	}
	c.keyLoad = nil
	c.mu.Unlock()
	close(l.done)
}

// openKey reads (sealedKeyFile) and opens c's sealed key as a serving node does: with
// the fleet key, or the policy key its node key opens. Every failure of
// the files is logged and counted (failed).
func (s *Store) openKey(ctx context.Context, c *Cert) (crypto.Signer, error) {
	if c.Meta.Route == RouteKeyless {
		return nil, fmt.Errorf("%w: certificate %s is keyless", ErrCannotOpen, c.ID)
	}
	data, key, err := s.sealedKeyFile(ctx, c)
	corrupt := func(err error) error {
		return s.failed("key", fmt.Sprintf("%s of tenant %q", c.ID, c.Meta.Tenant), key, err)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		if errors.Is(err, errMalformed) {
			return nil, corrupt(err)
		}
		if uerr := s.unavailable(ctx, key, err); uerr != nil {
			return nil, uerr
		}
		return nil, corrupt(err)
	}
	policyKey := func(pid string) (hpke.PrivateKey, error) {
		pk, err := s.policyKey(ctx, pid)
		if err != nil {
			return nil, err
		}
		if pk.priv == nil {
			err := pk.err
			if pk.missing { // a key sealed under it: the file was lost
				err = s.failed("policy", pid, policyFileKey(pid), fs.ErrNotExist)
			}
			return nil, fmt.Errorf("certificate %s: %w", c.ID, err)
		}
		return pk.priv, nil
	}
	priv, der, err := s.openSealed(c.ID, data, policyKey, corrupt)
	if err != nil {
		return nil, err
	}
	clear(der)
	signer, ok := priv.(crypto.Signer)
	if !ok || !certs.SamePublicKey(signer.Public(), c.Leaf.PublicKey) {
		return nil, corrupt(fmt.Errorf("%w: key does not match certificate", errMalformed))
	}
	return signer, nil
}
