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
	Skipped  int // legacy keys sealed to a policy, left as they were: no geo master key
	Failed   int // keys that could not be read or opened, left as they were
}

// maxResealErrors bounds the errors Reseal reports; the rest are counted.
const maxResealErrors = 10

// Reseal rewrites every sealed key still in the legacy format (KES1: one
// HPKE decapsulation per key on every node) in the envelope format,
// sealed to the same recipient: the fleet key, opened with the Store's
// fleet key, or a policy key, opened with master (nil: such keys are
// skipped and counted). The key itself does not change, so neither do
// records, caches or the journal; nodes open the new file the next time
// they load the key, and open either format meanwhile. The run holds
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

// resealKey re-seals certificate id's key if it is a legacy one. The
// caller holds the write lock.
func (s *Store) resealKey(ctx context.Context, id string, master *geo.MasterKey, policies map[string]hpke.PrivateKey, st *ResealStats) error {
	data, err := s.storage.Load(ctx, sealedKey(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil // keyless, or removed meanwhile
	}
	if err != nil {
		return fmt.Errorf("keystore: failed to read key of %s: %w", id, err)
	}
	f, err := parseSealed(data)
	if err != nil {
		return fmt.Errorf("%w: key %s: %w", ErrCorrupt, id, err)
	}
	if f.envelope {
		st.Current++
		return nil
	}
	var priv hpke.PrivateKey
	switch pid, ok := strings.CutPrefix(f.recipient, policyRecipient); {
	case f.recipient == FleetRecipient:
		if s.fleet == nil {
			return fmt.Errorf("%w: key of %s: no fleet key configured", ErrCannotOpen, id)
		}
		priv = s.fleet.priv
	case ok && master == nil:
		st.Skipped++
		return nil
	case ok:
		if priv = policies[pid]; priv == nil {
			r, _, _, err := s.readRecord(ctx, id) // its policy stands in for a damaged policy file's
			if err != nil {
				return err
			}
			if priv, err = s.adminPolicyKey(ctx, pid, r.Policy, master); err != nil {
				return err
			}
			policies[pid] = priv
		}
	default:
		return fmt.Errorf("%w: key %s: sealed to unknown recipient %q", ErrCorrupt, id, f.recipient)
	}
	der, err := s.open(priv, f, id)
	if err != nil {
		return fmt.Errorf("%w: key %s: %w", ErrCorrupt, id, err)
	}
	defer clear(der)
	sealed, err := s.seal(priv.PublicKey(), f.recipient, id, der)
	if err != nil {
		return err
	}
	if err := s.storage.Store(ctx, sealedKey(id), sealed); err != nil {
		return fmt.Errorf("keystore: failed to write key of %s: %w", id, err)
	}
	st.Resealed++
	return nil
}
