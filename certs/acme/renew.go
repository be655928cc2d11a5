package acme

import (
	"context"
	"errors"
	"math"
	mathrand "math/rand/v2"
	"time"

	"github.com/keyedge/keyedge/keystore"
)

// Run keeps the managed certificates current until ctx ends: a pass at
// once, then one every CheckInterval ±10%, so the nodes of a fleet do not
// all knock at once (the per-name lock makes one of them do each order).
// It returns ctx's error.
func (m *Manager) Run(ctx context.Context) error {
	for {
		if err := m.Check(ctx); err != nil && ctx.Err() == nil {
			m.log.Warn("acme: maintenance pass had failures", "err", err)
		}
		t := time.NewTimer(time.Duration(float64(m.interval) * (0.9 + 0.2*mathrand.Float64())))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Check makes one maintenance pass over the managed index: it obtains
// certificates for declared names that have none, renews those in their
// renewal window, refreshes OCSP staples that are due, and replaces
// revoked certificates. Names backing off after a failure are skipped
// until their retry time. A failure for one name does not stop the pass;
// the failures are returned joined.
func (m *Manager) Check(ctx context.Context) error {
	var errs []error
	managed := 0
	soonest := time.Time{}
	for name, err := range m.managedNames(ctx) {
		if err != nil {
			errs = append(errs, err)
			break
		}
		e, err := m.loadEntry(ctx, name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if e, err = m.maintain(ctx, e, m.now()); err != nil {
			errs = append(errs, err)
		}
		managed++
		if !e.NotAfter.IsZero() && (soonest.IsZero() || e.NotAfter.Before(soonest)) {
			soonest = e.NotAfter
		}
		if ctx.Err() != nil {
			break
		}
	}
	m.metrics.managed.Set(float64(managed))
	if !soonest.IsZero() {
		m.metrics.minDaysToExpiry.Set(soonest.Sub(m.now()).Hours() / 24)
	} else {
		m.metrics.minDaysToExpiry.Set(math.Inf(1))
	}
	return errors.Join(errs...)
}

// maintain does what one managed entry needs now and returns the entry
// as it then is.
func (m *Manager) maintain(ctx context.Context, e *managedEntry, now time.Time) (*managedEntry, error) {
	if now.Before(e.RetryAt) {
		return e, nil
	}
	var kind orderKind
	switch {
	case e.CertID == "":
		kind = orderObtain
	case m.needsOrder(e, orderRenew, now):
		if m.replacedByTenant(ctx, e.Names[0]) {
			m.log.Info("acme: not renewing: the name is now served by a certificate its tenant brought", "name", e.Names[0])
			return e, nil
		}
		kind = orderRenew
	default:
		return m.refreshOCSP(ctx, e, now)
	}
	ne, err := m.issue(ctx, e.Names[0], kind, "")
	if err != nil {
		return e, err
	}
	return ne, nil
}

// replacedByTenant reports whether the name is served only by
// certificates that did not come from ACME (imported after it was
// managed); those are never overwritten by a renewal.
func (m *Manager) replacedByTenant(ctx context.Context, name string) bool {
	entry, err := m.store.Lookup(ctx, name)
	if err != nil {
		return false
	}
	for _, c := range entry.Certs {
		if c.Meta.ACMECA != "" {
			return false
		}
	}
	return true
}

// refreshOCSP fetches a new staple for e's certificate when the stored
// one is past half its validity, stores it beside the certificate, and
// replaces the certificate if the responder says it is revoked.
func (m *Manager) refreshOCSP(ctx context.Context, e *managedEntry, now time.Time) (*managedEntry, error) {
	if now.Before(e.OCSPNext) {
		return e, nil
	}
	c, err := m.store.CertByID(ctx, e.CertID)
	if errors.Is(err, keystore.ErrNotFound) {
		return e, nil // removed from the keystore; renewal puts it back when due
	}
	if err != nil {
		return e, err
	}
	if len(c.Leaf.OCSPServer) == 0 {
		return e, nil
	}
	st, err := m.fetchOCSP(ctx, c.Chain)
	switch {
	case errors.Is(err, ErrRevoked):
		m.metrics.ocsp.WithLabelValues("revoked").Inc()
		m.log.Warn("acme: certificate revoked; replacing it", "name", e.Names[0], "id", c.ID)
		ne, err := m.issue(ctx, e.Names[0], orderRevoked, c.ID)
		if err != nil {
			return e, err
		}
		return ne, nil
	case err != nil:
		m.metrics.ocsp.WithLabelValues("error").Inc()
		return e, err
	}
	var out *managedEntry
	err = withNameLock(ctx, m.storage, m.log, e.Names[0], func() error {
		cur, err := m.loadEntry(ctx, e.Names[0])
		if err != nil {
			return err
		}
		out = cur
		if cur.CertID != c.ID {
			return nil // renewed meanwhile; the new one gets its own staple
		}
		key, err := c.PrivateKey(ctx)
		if err != nil {
			return err
		}
		if _, err := m.store.Put(ctx, &keystore.Bundle{Meta: c.Meta, Chain: c.Chain, Key: key, OCSP: st.raw}); err != nil {
			return err
		}
		cur.OCSPNext = st.refreshAt
		return m.storeEntry(ctx, cur)
	})
	if err != nil {
		m.metrics.ocsp.WithLabelValues("error").Inc()
		return e, err
	}
	m.metrics.ocsp.WithLabelValues("good").Inc()
	return out, nil
}
