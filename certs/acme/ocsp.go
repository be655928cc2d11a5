package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"golang.org/x/crypto/ocsp"
)

// errNoOCSP means a certificate names no OCSP responder (Let's Encrypt
// stopped including one in 2025), so there is nothing to staple.
var errNoOCSP = errors.New("acme: certificate has no OCSP responder")

// ErrRevoked is returned when a certificate's OCSP responder says it is
// revoked. The Manager replaces a revoked certificate it manages.
var ErrRevoked = errors.New("acme: certificate is revoked")

// maxOCSPResponse caps what is read from a responder.
const maxOCSPResponse = 64 << 10

// staple is a verified OCSP response saying "good".
type staple struct {
	raw       []byte
	refreshAt time.Time // halfway through its validity, as certmagic does
}

// fetchOCSP asks the leaf's OCSP responder for its status, checks the
// response is signed for the leaf's issuer (chain[1]), and returns it if
// the status is good. A revoked leaf gives ErrRevoked.
func (m *Manager) fetchOCSP(ctx context.Context, chain [][]byte) (*staple, error) {
	if len(chain) < 2 {
		return nil, errNoOCSP
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return nil, fmt.Errorf("acme: OCSP: %w", err)
	}
	if len(leaf.OCSPServer) == 0 {
		return nil, errNoOCSP
	}
	issuer, err := x509.ParseCertificate(chain[1])
	if err != nil {
		return nil, fmt.Errorf("acme: OCSP: issuer: %w", err)
	}
	reqDER, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return nil, fmt.Errorf("acme: OCSP: failed to create request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, leaf.OCSPServer[0], bytes.NewReader(reqDER))
	if err != nil {
		return nil, fmt.Errorf("acme: OCSP: %w", err)
	}
	req.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := m.httpClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("acme: OCSP: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("acme: OCSP responder %s: HTTP %d", leaf.OCSPServer[0], resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse+1))
	if err != nil {
		return nil, fmt.Errorf("acme: OCSP: failed to read response: %w", err)
	}
	if len(raw) > maxOCSPResponse {
		return nil, fmt.Errorf("acme: OCSP response over %d bytes", maxOCSPResponse)
	}
	parsed, err := ocsp.ParseResponseForCert(raw, leaf, issuer)
	if err != nil {
		return nil, fmt.Errorf("acme: OCSP: bad response: %w", err)
	}
	switch parsed.Status {
	case ocsp.Good:
	case ocsp.Revoked:
		return nil, fmt.Errorf("%w (at %s)", ErrRevoked, parsed.RevokedAt.UTC().Format(time.RFC3339))
	default:
		return nil, fmt.Errorf("acme: OCSP status of %s is unknown to its responder", leaf.Subject.CommonName)
	}
	if !parsed.NextUpdate.IsZero() && !m.now().Before(parsed.NextUpdate) {
		return nil, errors.New("acme: OCSP response is already stale")
	}
	s := &staple{raw: raw, refreshAt: m.now().Add(m.interval)}
	if !parsed.NextUpdate.IsZero() {
		s.refreshAt = parsed.ThisUpdate.Add(parsed.NextUpdate.Sub(parsed.ThisUpdate) / 2)
	}
	return s, nil
}
