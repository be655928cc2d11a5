package keystore

import (
	"context"
	"fmt"
)

// UpdateHTTP changes the HTTP settings of every certificate of a name
// (or of one certificate, by ID), under the write lock: change gets a
// copy of each record's current settings (the zero value when it has
// none) to modify. The result is checked before the record is written;
// settings left at the defaults are stored as none. Every node
// following the journal applies the change within its PollInterval.
// An error from change or Check leaves the records as they were (all
// of a name's records hold the same settings, so the first one fails
// before anything is written).
func (s *Store) UpdateHTTP(ctx context.Context, nameOrID string, change func(*TenantHTTP) error) error {
	return s.updateRecords(ctx, nameOrID, func(id string, r *record) (func() error, error) {
		t := r.HTTP.Clone()
		if err := change(t); err != nil {
			return nil, err
		}
		if err := t.Check(); err != nil {
			return nil, err
		}
		if t.IsZero() {
			t = nil
		}
		r.HTTP = t
		return nil, nil
	})
}

// inheritHTTP gives a certificate stored without HTTP settings those of
// the certificates already serving its names, so a renewal, or an RSA
// certificate added beside an ECDSA one, keeps the tenant's redirect,
// HSTS, rules, rate limit and client authentication. The caller holds
// the write lock.
func (s *Store) inheritHTTP(ctx context.Context, p *prepared) error {
	if p.record.HTTP != nil {
		return p.record.HTTP.Check()
	}
	for _, name := range p.names {
		refs, err := s.readName(ctx, name)
		var r *record
		if err == nil && len(refs) > 0 {
			r, _, _, err = s.readRecord(ctx, refs[0].ID)
		}
		if IsUnavailable(err) {
			return fmt.Errorf("keystore: %s: %w", name, err)
		}
		if err == nil && r != nil && r.HTTP != nil { // absent or unreadable: nothing to keep
			p.record.HTTP = r.HTTP
			return nil
		}
	}
	return nil
}
