package keystore

import (
	"context"
	"errors"
	"io/fs"
	"iter"
	"path"
)

// Names yields every stored name, one hash bucket of the name index at a
// time, so memory stays bounded by a bucket (about 1/256 of the names)
// however large the keystore is. Order is not specified. An error ends
// the sequence.
func (s *Store) Names(ctx context.Context) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		buckets, err := s.storage.List(ctx, "names", false)
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if err != nil {
			yield("", err)
			return
		}
		for _, b := range buckets {
			keys, err := s.storage.List(ctx, b, false)
			if err != nil {
				yield("", err)
				return
			}
			for _, k := range keys {
				if !yield(path.Base(k), nil) {
					return
				}
			}
		}
	}
}
