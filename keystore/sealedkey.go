package keystore

import (
	"context"
	"errors"
	"io/fs"

	"github.com/maypok86/otter/v2"
)

// Where a certificate's sealed key is read from. A record in the layout
// written now holds it (recordfile.go), so the record read of a cold
// lookup brings the key along and the first local signature needs no
// read of its own; a record written before has it in key.sealed. A Cert
// keeps the sealed bytes read with its record until its key is first
// opened, and only when this node may open it: not for a keyless
// certificate (which has none), nor one whose geo policy does not admit
// this node, nor on a node without the fleet key. The bytes are used
// once: opened or not, they are dropped, the cache entry re-weighed,
// and a later open (after a failure's NegativeTTL) reads storage again,
// so a repaired file is seen.

// keepSealed returns what of a loaded record's sealed key c keeps.
func (s *Store) keepSealed(c *Cert, sealed []byte) []byte {
	switch {
	case sealed == nil || c.Meta.Route == RouteKeyless:
		return nil
	case c.Policy == nil && s.fleet == nil:
		return nil
	case c.Policy != nil && (s.nodeKey == nil || !c.Policy.Admits(s.nodeKey.Attributes())):
		return nil
	}
	return sealed
}

// sealedKeyFile returns c's sealed key file and the storage key it is
// (or is in): the bytes c kept from its record's load, else read from
// storage, first where c's record layout puts it, then the other place,
// so a key moved between them (keyctl reseal) meanwhile is still found.
// It returns an error wrapping fs.ErrNotExist, naming the first place,
// when neither holds it, and one wrapping errMalformed for a record in
// the current layout that does not parse.
func (s *Store) sealedKeyFile(ctx context.Context, c *Cert) ([]byte, string, error) {
	c.mu.Lock()
	data := c.sealed
	c.sealed = nil
	c.mu.Unlock()
	if data != nil {
		s.certs.ComputeIfPresent(c.ID, func(old *Cert) (*Cert, otter.ComputeOp) {
			if old != c {
				return old, otter.CancelOp
			}
			return c, otter.WriteOp // re-weighed without the sealed bytes
		})
		return data, recordKey(c.ID), nil
	}
	files := [2]string{sealedKey(c.ID), recordKey(c.ID)}
	if c.combined {
		files[0], files[1] = files[1], files[0]
	}
	for _, file := range files {
		data, err := s.storage.Load(ctx, file)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return nil, file, err
		case file == sealedKey(c.ID):
			return data, file, nil
		case !isRecordFile(data):
			continue // a record of the layout before: its key is in key.sealed
		}
		var r record
		if err := parseRecordFile(data, &r); err != nil {
			return nil, file, err
		}
		if r.Sealed != nil {
			return r.Sealed, file, nil
		}
	}
	return nil, files[0], fs.ErrNotExist
}

// opensInline reports whether c's key, not yet opened, can be opened
// without I/O, so that the first caller opens it on its own goroutine
// instead of starting a load goroutine and waiting for it: the sealed
// bytes came with the record and are sealed to the fleet key, whose data
// keys are opened in memory (datakey.go). A key sealed to a geo policy
// may need its policy key read from storage, and a key in key.sealed
// needs a read: those load on a goroutine of their own, bounded by
// KeyLoadTimeout. On one CPU the goroutine's start, its stack growth
// through the PKCS#8 parse and the two switches are a measurable part of
// a cold tenant's cost (bench/RESULTS.md, "Cold tenants: where the CPU
// of a cold load goes"). c.mu must be held.
func (c *Cert) opensInline() bool {
	if c.sealed == nil || c.Policy != nil || c.store.fleet == nil {
		return false
	}
	f, err := parseSealed(c.sealed)
	return err == nil && f.recipient == FleetRecipient
}
