package keystore

import (
	"bytes"
	"context"
	"crypto/hpke"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"time"

	"github.com/keyedge/keyedge/keystore/geo"
	"github.com/maypok86/otter/v2"
)

// A key with a geo policy (Meta.Policy) is sealed in two layers, so the
// slow CP-ABE decryption runs once per policy on a node, not once per key:
//
//	geo/params           public parameters of the geo master key (keyctl init)
//	policies/<policyID>  per distinct policy: an HPKE public key, and its
//	                     private key's seed sealed by package geo under the
//	                     policy
//
// The tenant key is sealed with HPKE to its policy's public key (recipient
// "policy:<policyID>"), so once a node has opened the policy key, each
// tenant key costs one HPKE open. A node whose attributes the policy does
// not admit cannot open the policy key, and so none of its tenant keys.
// Policy files never change once written: a policy ID is the hash of the
// policy's canonical text.
const (
	geoParamsKey    = "geo/params"
	policiesPrefix  = "policies"
	policyRecipient = "policy:"
)

// openedPolicyTTL is, in effect, forever.
const openedPolicyTTL = 365 * 24 * time.Hour

func policyFileKey(id string) string { return policiesPrefix + "/" + id }

// ErrNoGeo is returned when a certificate with a policy is stored in a
// keystore that has no geo parameters.
var ErrNoGeo = errors.New("keystore: keystore has no geo parameters (keyctl init creates them)")

// policyFile is the on-disk form of policies/<id>.
type policyFile struct {
	Policy string `json:"policy"`
	Public []byte `json:"public"` // HPKE public key
	Sealed []byte `json:"sealed"` // geo-sealed HPKE private key seed
}

// policyKey is a loaded policy file. pub is set whenever the file parsed;
// priv only when this node opened it. err says why not: missing, corrupt
// (wrapping ErrCorrupt), or not for this node (wrapping ErrCannotOpen).
type policyKey struct {
	policy  *geo.Policy
	pub     hpke.PublicKey
	priv    hpke.PrivateKey
	sealed  []byte
	missing bool
	err     error
}

func (s *Store) newPolicyCache() *otter.Cache[string, *policyKey] {
	return otter.Must(&otter.Options[string, *policyKey]{
		MaximumSize: 10_000,
		// Policy files never change, so an opened policy key is kept as
		// long as the cache has room: reopening costs a CP-ABE decryption.
		ExpiryCalculator: otter.ExpiryWritingFunc(func(e otter.Entry[string, *policyKey]) time.Duration {
			switch {
			case e.Value.pub == nil:
				return s.negativeTTL
			case e.Value.priv == nil:
				return positiveTTL
			}
			return openedPolicyTTL
		}),
	})
}

// policyKey returns the policy key with the given ID, loading and (with
// a NodeKey that satisfies its policy) opening it on first use. However
// many handshakes ask at once, a node opens each policy key once.
func (s *Store) policyKey(ctx context.Context, id string) (*policyKey, error) {
	return s.policies.Get(ctx, id, otter.LoaderFunc[string, *policyKey](s.loadPolicyKey))
}

func (s *Store) loadPolicyKey(ctx context.Context, id string) (*policyKey, error) {
	key := policyFileKey(id)
	data, err := s.storage.Load(ctx, key)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	if errors.Is(err, fs.ErrNotExist) {
		// Not an error yet: a writer is about to create it
		// (policyPublicKey). A key sealed under it reports it (openKey).
		return &policyKey{missing: true}, nil
	}
	pk := new(policyKey)
	if err == nil {
		err = pk.parse(id, data)
	}
	if err != nil {
		return &policyKey{err: s.failed("policy", id, key, err)}, nil
	}
	if s.nodeKey == nil {
		pk.err = fmt.Errorf("%w: key restricted to %q and this node has no node key", ErrCannotOpen, pk.policy)
		return pk, nil
	}
	start := time.Now()
	seed, err := s.nodeKey.Open(pk.policy, pk.sealed)
	switch {
	case errors.Is(err, geo.ErrNotAdmitted):
		s.metrics.policyOpens.WithLabelValues("not_admitted").Inc()
		pk.err = fmt.Errorf("%w: %w", ErrCannotOpen, err)
		return pk, nil
	case err == nil:
		pk.priv, err = sealKEM.NewPrivateKey(seed)
		clear(seed)
	}
	if err == nil && !bytes.Equal(pk.priv.PublicKey().Bytes(), pk.pub.Bytes()) {
		err = fmt.Errorf("%w: sealed private key does not match the public key", errMalformed)
	}
	if err != nil {
		s.metrics.policyOpens.WithLabelValues("error").Inc()
		pk.priv, pk.err = nil, s.failed("policy", id, key, err)
		return pk, nil
	}
	s.metrics.policyOpens.WithLabelValues("ok").Inc()
	s.metrics.policyOpenSeconds.Observe(time.Since(start).Seconds())
	return pk, nil
}

// parse decodes a policy file and checks it belongs under id.
func (pk *policyKey) parse(id string, data []byte) error {
	var f policyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	pol, err := geo.ParsePolicy(f.Policy)
	if err != nil {
		return fmt.Errorf("%w: %v", errMalformed, err)
	}
	if pol.ID() != id {
		return fmt.Errorf("%w: policy %q does not hash to %s", errMalformed, pol, id)
	}
	pub, err := sealKEM.NewPublicKey(f.Public)
	if err != nil {
		return fmt.Errorf("%w: public key: %v", errMalformed, err)
	}
	pk.policy, pk.pub, pk.sealed = pol, pub, f.Sealed
	return nil
}

// warmPolicies opens, in the background after Open, the policy keys this
// node may open, so the first handshake of a restricted tenant does not
// wait for a CP-ABE decryption. There is one file per distinct policy,
// not per tenant.
func (s *Store) warmPolicies(ctx context.Context) {
	keys, err := s.storage.List(ctx, policiesPrefix, false)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
			s.log.Warn("keystore: cannot list policy keys to warm up", "err", err)
		}
		return
	}
	for _, k := range keys {
		id := k[strings.LastIndexByte(k, '/')+1:]
		if _, err := s.policyKey(ctx, id); err != nil {
			return // ctx done
		}
	}
}

// sealFor seals a tenant key for storage: to the fleet key when pol is
// nil, else to pol's policy key, which it creates on first use. The
// caller holds the write lock, so two writers never create rival keys
// for one policy.
func (s *Store) sealFor(ctx context.Context, pol *geo.Policy, certID string, der []byte) ([]byte, error) {
	if pol == nil {
		if s.fleet == nil {
			return nil, ErrNoSealer
		}
		return s.seal(s.fleet.priv.PublicKey(), FleetRecipient, certID, der)
	}
	pub, err := s.policyPublicKey(ctx, pol)
	if err != nil {
		return nil, err
	}
	return s.seal(pub, policyRecipient+pol.ID(), certID, der)
}

// policyPublicKey returns pol's policy public key, creating the policy
// key when the keystore has none yet. The caller holds the write lock.
func (s *Store) policyPublicKey(ctx context.Context, pol *geo.Policy) (hpke.PublicKey, error) {
	pk, err := s.policyKey(ctx, pol.ID())
	if err != nil {
		return nil, err
	}
	if pk.pub != nil {
		return pk.pub, nil
	}
	if !pk.missing {
		return nil, pk.err
	}
	params, err := s.geoParams(ctx)
	if err != nil {
		return nil, err
	}
	priv, err := sealKEM.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to generate policy key: %w", err)
	}
	seed, err := priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to generate policy key: %w", err)
	}
	defer clear(seed)
	sealed, err := params.Seal(pol, seed)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(policyFile{Policy: pol.String(), Public: priv.PublicKey().Bytes(), Sealed: sealed})
	if err != nil {
		return nil, err
	}
	if err := s.storage.Store(ctx, policyFileKey(pol.ID()), data); err != nil {
		return nil, fmt.Errorf("keystore: failed to write policy key %s: %w", pol.ID(), err)
	}
	s.policies.Invalidate(pol.ID())
	return priv.PublicKey(), nil
}

func (s *Store) geoParams(ctx context.Context) (*geo.Params, error) {
	data, err := s.storage.Load(ctx, geoParamsKey)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNoGeo
	}
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to read geo parameters: %w", err)
	}
	return geo.ParseParams(data)
}

// SetGeoParams stores the public parameters of the geo master key, which
// sealing keys under policies needs. It is done once per keystore (keyctl
// init); storing different parameters over existing ones fails, since
// policy keys sealed with the old ones would then not match new node keys.
func (s *Store) SetGeoParams(ctx context.Context, params *geo.Params) error {
	data, err := params.MarshalBinary()
	if err != nil {
		return err
	}
	return s.locked(ctx, func() error {
		old, err := s.storage.Load(ctx, geoParamsKey)
		switch {
		case err == nil && bytes.Equal(old, data):
			return nil
		case err == nil:
			return errors.New("keystore: keystore already has geo parameters of another master key")
		case !errors.Is(err, fs.ErrNotExist):
			return fmt.Errorf("keystore: failed to read geo parameters: %w", err)
		}
		return s.storage.Store(ctx, geoParamsKey, data)
	})
}

// SetPolicy restricts where the keys of a name's certificates (or one
// certificate, by ID) may be used, re-sealing each key under the new
// policy; an empty policy lifts the restriction (the key is sealed to the
// fleet key). Opening a key sealed under a policy needs the geo master
// key; a fleet-sealed key needs only the fleet key. A key whose stored
// policy no longer parses (written by an older version, or damaged) is
// opened by the master key all the same, so it can always be moved to a
// policy that parses, or to none.
//
// Every certificate's key is opened before anything is written, so a
// policy, a certificate or a key that cannot be used fails the call
// with nothing changed. Each record is then written atomically with the
// new policy and its key sealed anew in it (a key.sealed of the layout
// before is deleted after), so at every moment the stored key opens for
// the nodes of one of the two policies; should a write fail, what was
// written is put back. Nodes see the
// change within PollInterval, with no restart.
func (s *Store) SetPolicy(ctx context.Context, nameOrID, policy string, master *geo.MasterKey) error {
	var pol *geo.Policy
	if policy != "" {
		var err error
		if pol, err = geo.ParsePolicy(policy); err != nil {
			return err
		}
	}
	return s.locked(ctx, func() error {
		_, ids, err := s.resolveIDs(ctx, nameOrID)
		if err != nil {
			return err
		}
		moves := make([]*keyMove, 0, len(ids))
		defer func() {
			for _, m := range moves {
				clear(m.der)
			}
		}()
		for _, id := range ids {
			m, err := s.openForMove(ctx, id, master)
			if err != nil {
				return err
			}
			moves = append(moves, m)
		}
		// Sealing may create pol's policy file: the first write.
		newPolicyFile := pol != nil && !s.storage.Exists(ctx, policyFileKey(pol.ID()))
		for _, m := range moves {
			if m.sealed, err = s.sealFor(ctx, pol, m.id, m.der); err != nil {
				return s.undoMoves(ctx, nil, newPolicyFile, pol, err)
			}
		}
		var c change
		for i, m := range moves {
			m.record.Policy = ""
			if pol != nil {
				m.record.Policy = pol.String()
			}
			m.record.Sealed = m.sealed
			m.record.Version++
			if err := s.writeRecord(ctx, m.id, m.record); err != nil {
				return s.undoMoves(ctx, moves[:i+1], newPolicyFile, pol, err)
			}
			if err := s.dropKeyFile(ctx, nil, m.id); err != nil {
				return s.undoMoves(ctx, moves[:i+1], newPolicyFile, pol, err)
			}
			names, _ := leafNames(m.leaf)
			c.names = append(c.names, names...)
			c.ids = append(c.ids, m.id)
		}
		return s.commit(ctx, c, nil)
	})
}

// keyMove is one certificate's key on its way to a new policy: what
// is stored now, to put back if a write fails, and what replaces it.
type keyMove struct {
	id        string
	leaf      *x509.Certificate
	record    *record
	oldRecord []byte // the record file as stored
	oldSealed []byte // the key file (key.sealed) as stored; nil when the record holds the key
	der       []byte // the opened key; cleared when SetPolicy returns
	sealed    []byte // the key sealed anew
}

// openForMove reads certificate id's record and key and opens the key
// with the admin's keys, refusing a keyless certificate.
func (s *Store) openForMove(ctx context.Context, id string, master *geo.MasterKey) (*keyMove, error) {
	m := &keyMove{id: id}
	var err error
	if m.record, m.leaf, m.oldRecord, err = s.readRecord(ctx, id); err != nil {
		return nil, err
	}
	if m.record.Route == RouteKeyless {
		return nil, fmt.Errorf("keystore: certificate %s is keyless: its key is on the tenant's key server, not in the keystore", id)
	}
	sealed := m.record.Sealed
	if sealed == nil {
		if m.oldSealed, err = s.storage.Load(ctx, sealedKey(id)); err != nil {
			return nil, fmt.Errorf("keystore: failed to read key of %s: %w", id, err)
		}
		sealed = m.oldSealed
	}
	if m.der, err = s.adminOpen(ctx, id, sealed, m.record.Policy, master); err != nil {
		return nil, err
	}
	return m, nil
}

// undoMoves puts back the record and key files of moves, which a failed
// SetPolicy wrote (the last one's too: a failed write may still have
// landed, so it is put back all the same), removes
// pol's policy file if SetPolicy created it, and journals the
// certificates it wrote, since nodes may have read them meanwhile. It
// returns cause joined with anything it could not put back. It runs
// even once ctx is done: the keystore must not stay half changed.
func (s *Store) undoMoves(ctx context.Context, moves []*keyMove, newPolicyFile bool, pol *geo.Policy, cause error) error {
	ctx = context.WithoutCancel(ctx)
	errs := []error{cause}
	var c change
	for _, m := range slices.Backward(moves) {
		if err := s.storage.Store(ctx, recordKey(m.id), m.oldRecord); err != nil {
			errs = append(errs, fmt.Errorf("keystore: failed to restore record of %s: %w", m.id, err))
		}
		if m.oldSealed != nil { // else the old record, put back, holds the key
			if err := s.storage.Store(ctx, sealedKey(m.id), m.oldSealed); err != nil {
				errs = append(errs, fmt.Errorf("keystore: failed to restore key of %s: %w", m.id, err))
			}
		}
		names, _ := leafNames(m.leaf)
		c.names = append(c.names, names...)
		c.ids = append(c.ids, m.id)
	}
	if newPolicyFile {
		if err := s.storage.Delete(ctx, policyFileKey(pol.ID())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("keystore: failed to remove new policy key %s: %w", pol.ID(), err))
		}
		s.policies.Invalidate(pol.ID())
	}
	if len(c.ids) > 0 {
		errs = append(errs, s.commit(ctx, c, nil))
	}
	return errors.Join(errs...)
}

// adminOpen opens certificate id's sealed key file as an admin does:
// with the fleet key or, for a policy-sealed key, the geo master key,
// and returns its PKCS#8 DER. recordPolicy is the policy the record
// names, which may stand in for a damaged policy file's text.
func (s *Store) adminOpen(ctx context.Context, id string, sealed []byte, recordPolicy string, master *geo.MasterKey) ([]byte, error) {
	policyKey := func(pid string) (hpke.PrivateKey, error) {
		if master == nil {
			return nil, fmt.Errorf("%w: key of %s is sealed to %q (a policy key needs the geo master key)", ErrCannotOpen, id, policyRecipient+pid)
		}
		return s.adminPolicyKey(ctx, pid, recordPolicy, master)
	}
	corrupt := func(err error) error { return fmt.Errorf("%w: key %s: %w", ErrCorrupt, id, err) }
	_, der, err := s.openSealed(id, sealed, policyKey, corrupt)
	return der, err
}

// adminPolicyKey opens policy key pid with the geo master key. Unlike a
// node, it does not parse the policy: the admin layer needs only its
// canonical text, which is the policy file's or, should that be
// damaged, the record's, whichever hashes to pid. So a policy this
// version refuses never locks the admin out of the keys sealed under it.
func (s *Store) adminPolicyKey(ctx context.Context, pid, recordPolicy string, master *geo.MasterKey) (hpke.PrivateKey, error) {
	key := policyFileKey(pid)
	data, err := s.storage.Load(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("%w: policy %s: %s: %w", ErrCorrupt, pid, key, err)
	}
	var f policyFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("%w: policy %s: %s: %w: %v", ErrCorrupt, pid, key, errMalformed, err)
	}
	var text string
	switch {
	case geo.PolicyID(f.Policy) == pid:
		text = f.Policy
	case geo.PolicyID(recordPolicy) == pid:
		text = recordPolicy
	default:
		return nil, fmt.Errorf("%w: policy %s: %s: %w: neither its policy nor the record's hashes to its ID", ErrCorrupt, pid, key, errMalformed)
	}
	seed, err := master.OpenStored(text, f.Sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: policy %s: %s: %w", ErrCorrupt, pid, key, err)
	}
	defer clear(seed)
	priv, err := sealKEM.NewPrivateKey(seed)
	if err != nil {
		return nil, fmt.Errorf("%w: policy %s: %s: %w", ErrCorrupt, pid, key, err)
	}
	return priv, nil
}

// NodeAttributes returns the attributes Options.NodeKey was issued for:
// where this node is, as far as geo policies go. The keys whose policy
// admits them are the restricted keys this store opens. Without a node
// key it returns no attributes.
func (s *Store) NodeAttributes() geo.Attributes {
	if s.nodeKey == nil {
		return geo.Attributes{}
	}
	return s.nodeKey.Attributes()
}
