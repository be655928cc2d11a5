package keystore

import (
	"context"
	"iter"
)

// namesDir is the name index: a hashed index (HashedKey) of name files.
const namesDir = "names"

// Names yields every stored name, one hash bucket of the name index at a
// time, so memory stays bounded by a bucket (about 1/256 of the names)
// however large the keystore is. Order is not specified. An error ends
// the sequence.
func (s *Store) Names(ctx context.Context) iter.Seq2[string, error] {
	return HashedNames(ctx, s.storage, namesDir)
}
