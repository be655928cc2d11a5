package keystore

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"sync"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/keystore/geo"
	"golang.org/x/sync/errgroup"
)

// ErrNoSealer is returned by Put for a locally signed certificate with no
// geo policy when the Store has no FleetKey to seal its key at rest.
var ErrNoSealer = errors.New("keystore: no fleet key configured to seal private keys")

// Bundle is a certificate to store.
type Bundle struct {
	Meta  Meta // NotAfter and Version are set by Put
	Chain [][]byte
	// Key is the leaf's private key; nil, and only nil, for RouteKeyless.
	Key  crypto.Signer
	OCSP []byte
}

// writeLock is the storage lock name every keystore writer holds, so
// writers on several machines sharing a backend do not interleave.
const writeLock = "keystore-write"

// writeParallelism bounds concurrent storage writes within one Put.
const writeParallelism = 32

// prepared is a validated bundle, ready to write.
type prepared struct {
	id     string
	alg    string
	names  []string
	record record // its Sealed is nil for RouteKeyless
}

// Put stores certificates and returns their IDs, in order. Each bundle is
// checked first (a parseable leaf with valid DNS names, a key that
// matches it, a valid geo policy, a key to seal it to): one bad bundle
// fails the call before anything is written. A key with a policy is
// sealed to that policy's key, created on first use. A certificate replaces, for each of its names, the
// stored certificate of the same key algorithm; a replaced certificate
// no name refers to any more is deleted. Every file is written
// atomically, keys before the records and names that refer to them, so a
// reader never sees a name without its certificate. All nodes following
// the journal see the change within their PollInterval. A Put that fails
// leaves storage as it was (see undo.go), or returns ErrIncomplete when
// it could not undo what it wrote.
func (s *Store) Put(ctx context.Context, bundles ...*Bundle) ([]string, error) {
	ids := make([]string, len(bundles))
	err := s.locked(ctx, func() error {
		ps := make([]*prepared, len(bundles))
		for i, b := range bundles {
			p, err := s.prepare(ctx, b)
			if err != nil {
				return err
			}
			ps[i], ids[i] = p, p.id
		}
		return s.write(ctx, ps)
	})
	if err != nil {
		return nil, err
	}
	return ids, nil
}

// prepare checks a bundle and seals its key. The caller holds the write
// lock, which creating a policy key needs.
func (s *Store) prepare(ctx context.Context, b *Bundle) (*prepared, error) {
	if len(b.Chain) == 0 {
		return nil, errors.New("keystore: empty certificate chain")
	}
	leaf, err := x509.ParseCertificate(b.Chain[0])
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to parse leaf certificate: %w", err)
	}
	p := &prepared{id: CertID(leaf), record: record{Meta: b.Meta, Chain: b.Chain, OCSP: b.OCSP}}
	p.record.NotAfter = leaf.NotAfter.UTC()
	if p.alg, err = keyAlg(leaf); err != nil {
		return nil, err
	}
	if p.names, err = leafNames(leaf); err != nil {
		return nil, err
	}
	if err := s.inheritHTTP(ctx, p); err != nil {
		return nil, err
	}
	var pol *geo.Policy
	if b.Meta.Policy != "" {
		if pol, err = geo.ParsePolicy(b.Meta.Policy); err != nil {
			return nil, fmt.Errorf("keystore: %s: %w", p.names[0], err)
		}
		p.record.Policy = pol.String()
	}
	switch b.Meta.Route {
	case RouteKeyless:
		if len(b.Meta.KeyServers) == 0 {
			return nil, fmt.Errorf("keystore: %s: a keyless certificate needs at least one key server", p.names[0])
		}
		if b.Key != nil {
			return nil, fmt.Errorf("keystore: %s: a keyless certificate must not carry a private key", p.names[0])
		}
		return p, nil
	case "", RouteLocal:
	default:
		return nil, fmt.Errorf("keystore: unknown route %q", b.Meta.Route)
	}
	if b.Key == nil {
		return nil, fmt.Errorf("keystore: %s: no private key for a locally signed certificate", p.names[0])
	}
	if !certs.SamePublicKey(b.Key.Public(), leaf.PublicKey) {
		return nil, fmt.Errorf("keystore: %s: private key does not match certificate", p.names[0])
	}
	der, err := x509.MarshalPKCS8PrivateKey(b.Key)
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to encode private key: %w", err)
	}
	defer clear(der)
	if p.record.Sealed, err = s.sealFor(ctx, pol, p.id, der); err != nil {
		return nil, fmt.Errorf("keystore: %s: %w", p.names[0], err)
	}
	return p, nil
}

// leafNames returns the leaf's DNS names, normalised and de-duplicated.
func leafNames(leaf *x509.Certificate) ([]string, error) {
	if len(leaf.DNSNames) == 0 {
		return nil, errors.New("keystore: certificate has no DNS names")
	}
	names := make([]string, 0, len(leaf.DNSNames))
	for _, n := range leaf.DNSNames {
		norm, err := NormalizeName(n)
		if err != nil {
			return nil, fmt.Errorf("keystore: certificate name %q: %w", n, err)
		}
		names = append(names, norm)
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// locked runs fn holding this process's write mutex and the storage lock
// (taken for fn alone unless Hold holds it already).
func (s *Store) locked(ctx context.Context, fn func() error) error {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if !s.held {
		if err := s.lockStorage(ctx); err != nil {
			return err
		}
		defer s.unlockStorage(ctx)
	}
	return fn()
}

// Hold takes the storage write lock for a bulk run of writes through s
// and returns the function that releases it (safe to call more than
// once). Until then s's writes skip taking the lock each, and every
// other writer on the storage (other keyctl runs, edges renewing
// certificates) waits. A bulk run must hold the lock once rather than
// per batch: each certmagic.FileStorage Lock starts a goroutine that
// rewrites the lock file every five seconds until it finds the file
// gone, so a lock taken per batch leaves dozens of them rewriting one
// file, and one reading it just as another truncated it logs "Keeping
// lock file fresh: unexpected end of JSON input". It fails if s holds
// the lock already.
func (s *Store) Hold(ctx context.Context) (release func(), err error) {
	s.writeMu.Lock()
	defer s.writeMu.Unlock()
	if s.held {
		return nil, errors.New("keystore: write lock already held by this store")
	}
	if err := s.lockStorage(ctx); err != nil {
		return nil, err
	}
	s.held = true
	return sync.OnceFunc(func() {
		s.writeMu.Lock()
		defer s.writeMu.Unlock()
		s.held = false
		s.unlockStorage(ctx)
	}), nil
}

// lockStorage takes the storage write lock; the caller holds writeMu.
func (s *Store) lockStorage(ctx context.Context) error {
	if err := s.storage.Lock(ctx, writeLock); err != nil {
		s.clearFailedLock(ctx, writeLock)
		return fmt.Errorf("keystore: failed to take write lock: %w", err)
	}
	return nil
}

// unlockStorage releases the storage write lock, even when ctx is done;
// the caller holds writeMu.
func (s *Store) unlockStorage(ctx context.Context) {
	if err := s.storage.Unlock(context.WithoutCancel(ctx), writeLock); err != nil {
		s.log.Error("keystore: failed to release write lock", "err", err)
	}
}

// write stores prepared bundles and commits them (see undo.go): if it
// fails before the commit point, it undoes what it stored.
func (s *Store) write(ctx context.Context, ps []*prepared) error {
	u := &undoLog{}
	c, err := s.writeFiles(ctx, ps, u)
	if err == nil {
		err = s.commit(ctx, c, u)
	}
	if err != nil {
		return s.undo(ctx, u, err)
	}
	return nil
}

// writeFiles stores keys and records, retires the certificates the new
// ones replace, then stores name files, recording each step in u, and
// returns the change to journal.
func (s *Store) writeFiles(ctx context.Context, ps []*prepared, u *undoLog) (change, error) {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(writeParallelism)
	for _, p := range ps {
		g.Go(func() error { return s.writeCert(gctx, p, u) })
	}
	if err := g.Wait(); err != nil {
		return change{}, err
	}

	// Group by name, so a batch naming one host twice writes its file once.
	byName := map[string][]nameRef{}
	var names []string
	for _, p := range ps {
		for _, n := range p.names {
			if _, ok := byName[n]; !ok {
				names = append(names, n)
			}
			byName[n] = replaceRef(byName[n], nameRef{p.id, p.alg})
		}
	}
	if err := s.addToStoredFilter(ctx, names); err != nil {
		return change{}, err
	}
	updates := make([]*nameUpdate, len(names))
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(writeParallelism)
	for i, n := range names {
		g.Go(func() (err error) {
			updates[i], err = s.mergeName(gctx, n, byName[n])
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return change{}, err
	}

	// Replaced certificates are retired before the names stop referring
	// to them, so an undo that cannot put a name back leaves them retired.
	c := change{names: names}
	for _, p := range ps {
		c.ids = append(c.ids, p.id)
	}
	for _, up := range updates {
		for _, old := range up.replaced {
			if err := s.retire(ctx, old, u); err != nil {
				return change{}, err
			}
			c.ids = append(c.ids, old)
		}
	}

	u.names = names
	g, gctx = errgroup.WithContext(ctx)
	g.SetLimit(writeParallelism)
	for _, up := range updates {
		g.Go(func() error {
			if err := s.store(gctx, u, nameKey(up.name), up.prev, formatNameFile(up.refs)); err != nil {
				return fmt.Errorf("keystore: failed to write name %s: %w", up.name, err)
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return change{}, err
	}
	return c, nil
}

// commit journals c, the commit point of a write (recorded in u, if not
// nil, up to the journal head), drops its entries from this node's
// caches at once, and deletes retired certificates whose grace has
// passed. Only a failure to journal is returned: once the head is
// written the write is done, and a sweep that fails is retried by the
// next write.
func (s *Store) commit(ctx context.Context, c change, u *undoLog) error {
	err := s.appendChange(ctx, c, u)
	s.invalidate(c)
	if err != nil {
		return err
	}
	if err := s.sweep(ctx); err != nil {
		s.log.Warn("keystore: failed to delete retired certificates; the next write retries", "err", err)
	}
	return nil
}

// A certificate a renewal replaced is not deleted at once: handshakes on
// other nodes may have chosen it just before and still need its key. It
// is retired (trash/<id> holds the time) and deleted by a later write
// once DeleteGrace has passed, if no name refers to it again by then.
const trashDir = "trash"

func (s *Store) retire(ctx context.Context, id string, u *undoLog) error {
	key := trashDir + "/" + id
	prev, err := s.load(ctx, key)
	if err != nil {
		return err
	}
	stamp := []byte(time.Now().UTC().Format(time.RFC3339Nano))
	if err := s.store(ctx, u, key, prev, stamp); err != nil {
		return fmt.Errorf("keystore: failed to retire certificate %s: %w", id, err)
	}
	return nil
}

// sweep deletes retired certificates older than DeleteGrace.
func (s *Store) sweep(ctx context.Context) error {
	keys, err := s.storage.List(ctx, trashDir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("keystore: failed to list retired certificates: %w", err)
	}
	for _, key := range keys {
		id := path.Base(key)
		data, err := s.storage.Load(ctx, key)
		if err != nil {
			continue
		}
		at, err := time.Parse(time.RFC3339Nano, string(data))
		if err == nil && time.Since(at) < s.deleteGrace || !isCertID(id) {
			continue
		}
		if err := s.deleteIfOrphan(ctx, id); err != nil {
			return err
		}
		if err := s.storage.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keystore: failed to clear retired certificate %s: %w", id, err)
		}
	}
	return nil
}

// writeCert writes a certificate's record, its sealed key in it, with
// the version after the stored one, then deletes a key.sealed of the
// layout before, which the record replaces. A new certificate is undone
// by deleting its directory, a stored one by putting its files back.
func (s *Store) writeCert(ctx context.Context, p *prepared, u *undoLog) error {
	old, err := s.load(ctx, recordKey(p.id))
	if err != nil {
		return err
	}
	p.record.Version = 1
	fileUndo := u
	if old == nil {
		u.add(certDir(p.id), nil)
		fileUndo = nil
	} else if r, _, err := parseRecord(p.id, old); err == nil {
		p.record.Version = r.Version + 1
	}
	data, err := p.record.marshal()
	if err != nil {
		return fmt.Errorf("keystore: failed to encode record of %s: %w", p.names[0], err)
	}
	if err := s.store(ctx, fileUndo, recordKey(p.id), old, data); err != nil {
		return fmt.Errorf("keystore: failed to write record of %s: %w", p.names[0], err)
	}
	if old == nil {
		return nil
	}
	return s.dropKeyFile(ctx, fileUndo, p.id)
}

// dropKeyFile deletes certificate id's key.sealed, if any, once its
// record was written without needing it (holding the key, or keyless),
// recording in u, if not nil, what it held. A stale key file must not
// stay: it may be sealed to a recipient the record no longer allows.
func (s *Store) dropKeyFile(ctx context.Context, u *undoLog, id string) error {
	prev, err := s.load(ctx, sealedKey(id))
	if err != nil || prev == nil {
		return err
	}
	if u != nil {
		u.add(sealedKey(id), prev)
	}
	if err := s.storage.Delete(ctx, sealedKey(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keystore: failed to delete key file of %s: %w", id, err)
	}
	return nil
}

// replaceRef adds r to refs, replacing a ref of the same algorithm.
func replaceRef(refs []nameRef, r nameRef) []nameRef {
	refs = slices.DeleteFunc(refs, func(o nameRef) bool { return o.Alg == r.Alg })
	return append(refs, r)
}

// nameUpdate is a name file's new content, with its previous content and
// the IDs the new one no longer refers to.
type nameUpdate struct {
	name     string
	prev     []byte // nil when the name is new
	refs     []nameRef
	replaced []string
}

// mergeName reads a name file and merges add into its refs. An
// unreadable name file is overwritten: the new refs are the truth.
func (s *Store) mergeName(ctx context.Context, name string, add []nameRef) (*nameUpdate, error) {
	prev, err := s.load(ctx, nameKey(name))
	if err != nil {
		return nil, err
	}
	var refs []nameRef
	if prev != nil {
		refs, _ = parseNameFile(prev) // only errMalformed: overwritten
	}
	var replaced []string
	for _, r := range add {
		for _, o := range refs {
			if o.Alg == r.Alg && o.ID != r.ID {
				replaced = append(replaced, o.ID)
			}
		}
		refs = replaceRef(refs, r)
	}
	return &nameUpdate{name: name, prev: prev, refs: refs, replaced: replaced}, nil
}

// readName returns a name file's refs; none, without error, if absent.
func (s *Store) readName(ctx context.Context, name string) ([]nameRef, error) {
	data, err := s.storage.Load(ctx, nameKey(name))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to read name %s: %w", name, err)
	}
	return parseNameFile(data)
}

// deleteIfOrphan deletes certificate id unless one of its names still
// refers to it.
func (s *Store) deleteIfOrphan(ctx context.Context, id string) error {
	names, err := s.storedNames(ctx, id)
	if err != nil {
		return err
	}
	for _, n := range names {
		refs, err := s.readName(ctx, n)
		if err != nil && !errors.Is(err, errMalformed) {
			return err
		}
		if slices.ContainsFunc(refs, func(r nameRef) bool { return r.ID == id }) {
			return nil
		}
	}
	return s.deleteCert(ctx, id)
}

// storedNames returns the names in a stored certificate's leaf, or none
// when its record is missing or unreadable.
func (s *Store) storedNames(ctx context.Context, id string) ([]string, error) {
	data, err := s.storage.Load(ctx, recordKey(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to read record %s: %w", id, err)
	}
	_, leaf, err := parseRecord(id, data)
	if err != nil {
		return nil, nil
	}
	return leafNames(leaf)
}

func (s *Store) deleteCert(ctx context.Context, id string) error {
	if err := s.storage.Delete(ctx, certDir(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("keystore: failed to delete certificate %s: %w", id, err)
	}
	return nil
}

// Remove deletes a certificate by ID, or every certificate serving a name,
// along with the name entries of all their names. It returns ErrNotFound
// when nothing matches and ErrBadName for input that is neither.
func (s *Store) Remove(ctx context.Context, nameOrID string) error {
	return s.locked(ctx, func() error {
		name, ids, err := s.resolveIDs(ctx, nameOrID)
		if err != nil {
			return err
		}
		var c change
		for _, id := range ids {
			names, err := s.storedNames(ctx, id)
			if err != nil {
				return err
			}
			if name != "" && !slices.Contains(names, name) {
				names = append(names, name)
			}
			for _, n := range names {
				if err := s.dropRef(ctx, n, id); err != nil {
					return err
				}
			}
			if err := s.deleteCert(ctx, id); err != nil {
				return err
			}
			c.names = append(c.names, names...)
			c.ids = append(c.ids, id)
		}
		return s.commit(ctx, c, nil)
	})
}

// resolveIDs turns a writer's name-or-ID argument into certificate IDs,
// and a name into its normalised form (name is "" for an ID). Only the
// normalised name may reach storage keys and the journal: followers
// reject anything else.
func (s *Store) resolveIDs(ctx context.Context, nameOrID string) (name string, ids []string, err error) {
	if isCertID(nameOrID) {
		if !s.storage.Exists(ctx, recordKey(nameOrID)) {
			return "", nil, fmt.Errorf("%w: %s", ErrNotFound, nameOrID)
		}
		return "", []string{nameOrID}, nil
	}
	if name, err = NormalizeName(nameOrID); err != nil {
		return "", nil, err
	}
	refs, err := s.readName(ctx, name)
	if err != nil {
		return "", nil, err
	}
	if len(refs) == 0 {
		return "", nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	ids = make([]string, len(refs))
	for i, r := range refs {
		ids[i] = r.ID
	}
	return name, ids, nil
}

// dropRef removes id from a name file, deleting the file when empty.
func (s *Store) dropRef(ctx context.Context, name, id string) error {
	refs, err := s.readName(ctx, name)
	if err != nil && !errors.Is(err, errMalformed) {
		return err
	}
	refs = slices.DeleteFunc(refs, func(r nameRef) bool { return r.ID == id })
	if len(refs) == 0 {
		if err := s.storage.Delete(ctx, nameKey(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("keystore: failed to delete name %s: %w", name, err)
		}
		return nil
	}
	return s.storage.Store(ctx, nameKey(name), formatNameFile(refs))
}

// SetRoute changes where the certificates of a name (or one certificate,
// by ID) are signed. Switching to RouteKeyless needs key servers, and
// deleteKey to remove the sealed key from the keystore: the edge must
// not keep a key its owner moved to their own key server. Switching to
// RouteLocal needs the sealed key to be present.
func (s *Store) SetRoute(ctx context.Context, nameOrID string, route Route, keyServers []string, deleteKey bool) error {
	switch {
	case route == RouteKeyless && len(keyServers) == 0:
		return errors.New("keystore: keyless route needs at least one key server")
	case route == RouteLocal && len(keyServers) > 0:
		return errors.New("keystore: a local route has no key servers")
	case route != RouteLocal && route != RouteKeyless:
		return fmt.Errorf("keystore: unknown route %q", route)
	}
	return s.updateRecords(ctx, nameOrID, func(id string, r *record) (func() error, error) {
		hasKey := r.Sealed != nil || s.storage.Exists(ctx, sealedKey(id))
		if route == RouteLocal && !hasKey {
			return nil, fmt.Errorf("keystore: certificate %s has no key in the keystore; import it with its key instead", id)
		}
		if route == RouteKeyless && hasKey && !deleteKey {
			return nil, fmt.Errorf("keystore: certificate %s still has its key in the keystore; confirm deleting it once the key server holds it", id)
		}
		r.Route, r.KeyServers = route, keyServers
		if route != RouteKeyless || !hasKey {
			return nil, nil
		}
		// The record is written without the key; a key file of the
		// layout before goes once the record no longer needs it.
		r.Sealed = nil
		return func() error { return s.dropKeyFile(ctx, nil, id) }, nil
	})
}

// updateRecords applies update to the record of each certificate of a
// name (or of one certificate, by ID), under the write lock: it reads
// the record, lets update modify it (or fail, which stops before this
// record is written), writes it with its version bumped, runs what
// update returned to do after the write, if anything, and journals every
// name and ID touched.
func (s *Store) updateRecords(ctx context.Context, nameOrID string, update func(id string, r *record) (after func() error, err error)) error {
	return s.locked(ctx, func() error {
		_, ids, err := s.resolveIDs(ctx, nameOrID)
		if err != nil {
			return err
		}
		var c change
		for _, id := range ids {
			r, leaf, _, err := s.readRecord(ctx, id)
			if err != nil {
				return err
			}
			after, err := update(id, r)
			if err != nil {
				return err
			}
			r.Version++
			if err := s.writeRecord(ctx, id, r); err != nil {
				return err
			}
			if after != nil {
				if err := after(); err != nil {
					return err
				}
			}
			names, _ := leafNames(leaf)
			c.names = append(c.names, names...)
			c.ids = append(c.ids, id)
		}
		return s.commit(ctx, c, nil)
	})
}

// readRecord reads and parses a stored record for a writer, and
// returns the file as stored too. It does not parse the record's
// policy, so a writer can repair a record whose policy edges refuse.
func (s *Store) readRecord(ctx context.Context, id string) (*record, *x509.Certificate, []byte, error) {
	data, err := s.storage.Load(ctx, recordKey(id))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("keystore: failed to read record %s: %w", id, err)
	}
	r, leaf, err := parseRecord(id, data)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("%w: record %s: %w", ErrCorrupt, id, err)
	}
	return r, leaf, data, nil
}

// writeRecord stores a record; the caller bumps its version.
func (s *Store) writeRecord(ctx context.Context, id string, r *record) error {
	out, err := r.marshal()
	if err != nil {
		return err
	}
	if err := s.storage.Store(ctx, recordKey(id), out); err != nil {
		return fmt.Errorf("keystore: failed to write record %s: %w", id, err)
	}
	return nil
}
