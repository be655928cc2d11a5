package edge

import (
	"cmp"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyedge/keyedge/internal/secretfile"
)

// TicketKeys derives the session ticket keys of a fleet from a shared
// secret, one key per epoch of Period: HKDF-SHA256 over the secret with
// the epoch number as info. Every node computes the same keys with no
// coordination, so a session resumes on any node of the fleet; keys
// rotate at each epoch boundary, the previous Accept epochs still
// decrypt, and an older ticket gets a full handshake.
//
// The secret itself is rotated with an overlap: give the new secret as
// Secret and the old one as Previous on every node (its keys decrypt,
// never encrypt), then drop Previous once every node has the new one.
type TicketKeys struct {
	Secret   []byte        // the fleet secret, at least 32 bytes
	Previous []byte        // the secret being rotated out, or nil
	Period   time.Duration // epoch length [1h]
	Accept   int           // previous epochs whose tickets still resume [2]

	// Now tells the time that picks the epoch [time.Now]. Tests set it
	// to step through epochs without waiting for them.
	Now func() time.Time
}

// minSecret is the shortest fleet secret accepted.
const minSecret = 32

// ErrWeakSecret is returned for a ticket secret shorter than 32 bytes.
var ErrWeakSecret = errors.New("edge: session ticket secret shorter than 32 bytes")

// rotation is the epoch scheme of the ticket keys.
func (t *TicketKeys) rotation() rotation {
	return rotation{period: cmp.Or(t.Period, time.Hour), accept: cmp.Or(t.Accept, 2), now: t.Now}
}

func (t *TicketKeys) now() time.Time               { return t.rotation().time() }
func (t *TicketKeys) next(now time.Time) time.Time { return t.rotation().next(now) }

// check validates the secrets and the period.
func (t *TicketKeys) check() error {
	if len(t.Secret) < minSecret || (t.Previous != nil && len(t.Previous) < minSecret) {
		return ErrWeakSecret
	}
	if t.Period < 0 || t.Accept < 0 || t.rotation().period < time.Second {
		return fmt.Errorf("edge: session ticket period %v / accept %d out of range", t.Period, t.Accept)
	}
	return nil
}

// Keys returns the ticket keys at time now, for tls.Config's
// SetSessionTicketKeys: the current epoch's key of Secret first (it
// encrypts), then the keys that still decrypt: the next epoch's (so a
// node whose clock runs slightly behind accepts a ticket from one ahead),
// the Accept previous epochs', and the same epochs of Previous.
func (t *TicketKeys) Keys(now time.Time) [][32]byte {
	window := t.rotation().window(now)
	var keys [][32]byte
	for _, secret := range [][]byte{t.Secret, t.Previous} {
		if secret == nil {
			continue
		}
		for _, e := range window {
			keys = append(keys, [32]byte(epochKey(secret, "keyedge session ticket key v1", e, 32)))
		}
	}
	return keys
}

// ReadTicketSecret reads a fleet ticket secret: hex digits (at least 64,
// that is 32 bytes) on one line, from a file only its owner may read.
func ReadTicketSecret(path string) ([]byte, error) {
	data, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("edge: session ticket secret: %w", err)
	}
	secret, err := hex.DecodeString(strings.TrimSpace(string(data)))
	if err != nil {
		return nil, fmt.Errorf("edge: session ticket secret %s: not hex", path)
	}
	if len(secret) < minSecret {
		return nil, fmt.Errorf("%w: %s", ErrWeakSecret, path)
	}
	return secret, nil
}
