package keystore

import (
	"context"
	"crypto/hpke"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/keyedge/keyedge/keystore/geo"
)

// ResealStats counts the sealed keys Reseal saw.
type ResealStats struct {
	Resealed int // legacy keys rewritten in the envelope format
	Current  int // keys already in the envelope format
	Skipped  int // legacy keys sealed to a policy, left in that format: no geo master key
	Failed   int // keys that could not be read or opened, left as they were
	Moved    int // keys moved from key.sealed into their record (either format)
}

// maxResealErrors bounds the errors Reseal reports; the rest are counted.
const maxResealErrors = 10

// Reseal rewrites every sealed key still in the legacy format (KES1: one
// HPKE decapsulation per key on every node) in the envelope format,
// sealed to the same recipient: the fleet key, opened with the Store's
// fleet key, or a policy key, opened with master (nil: such keys are
// skipped and counted), and moves every key still in a key.sealed file
// into its record (recordfile.go: one read fewer per cold tenant). The
// key and the record's content do not change, nor its version, so
// neither do caches or the journal; nodes open the key where they find
// it next time they load it, and find it in either place meanwhile. The run holds
// the write lock once, from start to end (see Hold for why not per
// batch), so other writers wait for it. A key that cannot be read or
// opened is left as it was and counted, and the run goes on; the
// returned error then names the first few.
func (s *Store) Reseal(ctx context.Context, master *geo.MasterKey) (ResealStats, error) {
	var (
		st       ResealStats
		errs     []error
		policies = map[string]hpke.PrivateKey{} // policy ID → key opened with master, once per run
	)
	err := s.locked(ctx, func() error {
		for id, err := range HashedNames(ctx, s.storage, certsDir) {
			if err != nil {
				return fmt.Errorf("keystore: failed to list certificates: %w", err)
			}
			if !isCertID(id) {
				continue // not a certificate's directory
			}
			if err := s.resealKey(ctx, id, master, policies, &st); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				st.Failed++
				if len(errs) < maxResealErrors {
					errs = append(errs, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		return st, err
	}
	if st.Failed > 0 {
		return st, fmt.Errorf("keystore: %d keys could not be re-sealed (left as they were): %w", st.Failed, errors.Join(errs...))
	}
	return st, nil
}

// resealKey re-seals certificate id's key if it is a legacy one, and
// moves it into the record if it is in a key.sealed of the layout
// before. The record's content and version do not change. The caller
// holds the write lock.
func (s *Store) resealKey(ctx context.Context, id string, master *geo.MasterKey, policies map[string]hpke.PrivateKey, st *ResealStats) error {
	r, _, _, err := s.readRecord(ctx, id)
	if errors.Is(err, fs.ErrNotExist) {
		if !s.storage.Exists(ctx, sealedKey(id)) {
			return nil // removed meanwhile
		}
		return fmt.Errorf("%w: key %s: %w: its record is missing", ErrCorrupt, id, errMalformed)
	}
	if err != nil {
		return err
	}
	data, inFile := r.Sealed, r.Sealed == nil
	if inFile {
		data, err = s.storage.Load(ctx, sealedKey(id))
		if errors.Is(err, fs.ErrNotExist) {
			return nil // keyless
		}
		if err != nil {
			return fmt.Errorf("keystore: failed to read key of %s: %w", id, err)
		}
	}
	f, err := parseSealed(data)
	if err != nil {
		return fmt.Errorf("%w: key %s: %w", ErrCorrupt, id, err)
	}
	resealed := false
	if f.envelope {
		st.Current++
	} else {
		out, err := s.resealLegacy(ctx, id, f, r.Policy, master, policies)
		switch {
		case err != nil:
			return err
		case out == nil:
			st.Skipped++
		default:
			data, resealed = out, true
			st.Resealed++
		}
	}
	if !inFile && !resealed {
		return nil
	}
	r.Sealed = data
	if err := s.writeRecord(ctx, id, r); err != nil {
		return err
	}
	if inFile {
		st.Moved++
	}
	return s.dropKeyFile(ctx, nil, id)
}

// resealLegacy opens a KES1 key and seals it anew in the envelope format
// to the same recipient. It returns nil, and no error, for a key sealed
// to a policy when master is nil.
func (s *Store) resealLegacy(ctx context.Context, id string, f sealedFile, recordPolicy string, master *geo.MasterKey, policies map[string]hpke.PrivateKey) ([]byte, error) {
	var priv hpke.PrivateKey
	switch pid, ok := strings.CutPrefix(f.recipient, policyRecipient); {
	case f.recipient == FleetRecipient:
		if s.fleet == nil {
			return nil, fmt.Errorf("%w: key of %s: no fleet key configured", ErrCannotOpen, id)
		}
		priv = s.fleet.priv
	case ok && master == nil:
		return nil, nil
	case ok:
		if priv = policies[pid]; priv == nil {
			var err error
			if priv, err = s.adminPolicyKey(ctx, pid, recordPolicy, master); err != nil { // the record's policy stands in for a damaged policy file's
				return nil, err
			}
			policies[pid] = priv
		}
	default:
		return nil, fmt.Errorf("%w: key %s: sealed to unknown recipient %q", ErrCorrupt, id, f.recipient)
	}
	der, err := s.open(priv, f, id)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrCorrupt, id, err)
	}
	defer clear(der)
	return s.seal(priv.PublicKey(), f.recipient, id, der)
}
