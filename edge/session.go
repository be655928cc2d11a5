package edge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/keyedge/keyedge/keystore"
)

// Session tickets are bound to the tenant they were issued for (RFC 6066
// §3: a server must not resume a session for another name). Each ticket
// carries, in its SessionState.Extra, the normalised server name of the
// handshake and the IDs of the certificates that name was served with.
// A ticket resumes only on a handshake for the same name, while the name
// still has every one of those certificates: a ticket for another
// tenant, for a name no tenant has, or for a certificate since removed
// or replaced gets a full handshake, which then succeeds or fails on its
// own. The check runs on every node against the keystore it reads, so a
// removal stops resumption everywhere as soon as it has propagated.
//
// Resumption skips the handshake signature, so a resumed session costs
// no key server round trip and no key opening, for keyless and geo
// tenants too; the binding above is what keeps that safe.

// bindingLabel starts the Extra entry holding a session's binding; the
// version lets a later format coexist during an upgrade.
const bindingLabel = "keyedge session binding v1\x00"

// sessionBinding is what a session ticket is bound to.
type sessionBinding struct {
	name  string   // normalised server name; "" without SNI
	certs []string // IDs of the certificates served for name, sorted
}

// marshal encodes b as an Extra entry: the label, the name, then the
// certificate IDs, each line-separated (neither can contain a newline).
func (b sessionBinding) marshal() []byte {
	return []byte(bindingLabel + b.name + "\n" + strings.Join(b.certs, "\n"))
}

// bindingOf returns the binding a session carries, if any.
func bindingOf(ss *tls.SessionState) (sessionBinding, bool) {
	for _, e := range ss.Extra {
		rest, ok := bytes.CutPrefix(e, []byte(bindingLabel))
		if !ok {
			continue
		}
		name, ids, _ := strings.Cut(string(rest), "\n")
		b := sessionBinding{name: name}
		if ids != "" {
			b.certs = strings.Split(ids, "\n")
		}
		return b, true
	}
	return sessionBinding{}, false
}

// admits reports whether a session bound to b may resume on a handshake
// whose current binding is now: the same name, and every certificate the
// session was issued under still served for it.
func (b sessionBinding) admits(now sessionBinding) bool {
	if b.name != now.name || len(b.certs) == 0 {
		return false
	}
	for _, id := range b.certs {
		if !slices.Contains(now.certs, id) {
			return false
		}
	}
	return true
}

// currentBinding returns the binding of a handshake for serverName as
// the keystore stands: the tenant's certificates, or the fallback
// certificate's ID for a name no tenant has. An error means no session
// may be issued or resumed for the name now.
func (s *Server) currentBinding(ctx context.Context, serverName string) (sessionBinding, error) {
	st := s.settings.Load()
	if serverName == "" {
		return st.fallbackBinding("")
	}
	name, err := keystore.NormalizeName(serverName)
	if err != nil {
		return sessionBinding{}, err
	}
	entry, err := s.store.Lookup(ctx, name)
	if errors.Is(err, keystore.ErrNotFound) {
		return st.fallbackBinding(name)
	}
	if err != nil {
		return sessionBinding{name: name}, err
	}
	b := sessionBinding{name: name, certs: make([]string, len(entry.Certs))}
	for i, c := range entry.Certs {
		b.certs[i] = c.ID
	}
	slices.Sort(b.certs)
	return b, nil
}

// errNoFallback is currentBinding's answer for a name that no tenant has
// on a server without a fallback certificate.
var errNoFallback = errors.New("edge: no certificate for the name")

// fallbackBinding is the binding of a session on the fallback
// certificate for name.
func (st *settings) fallbackBinding(name string) (sessionBinding, error) {
	if st.fallbackID == "" {
		return sessionBinding{name: name}, errNoFallback
	}
	return sessionBinding{name: name, certs: []string{st.fallbackID}}, nil
}

// fallbackID identifies a fallback certificate in session bindings: a
// hash of its leaf, marked so that it can never equal a tenant's ID.
func fallbackID(c *tls.Certificate) string {
	if c == nil || len(c.Certificate) == 0 {
		return ""
	}
	sum := sha256.Sum256(c.Certificate[0])
	return "fallback:" + hex.EncodeToString(sum[:])
}

// wrapSession is tls.Config.WrapSession: it binds the session to the
// handshake's name and certificates, then encrypts it with the ticket
// keys. If the binding cannot be read (the keystore failed just now),
// the ticket is issued bound to no certificate, so it never resumes:
// the handshake itself has succeeded and must not fail for a ticket.
func (s *Server) wrapSession(cs tls.ConnectionState, ss *tls.SessionState) ([]byte, error) {
	ctx := newDeadlineCtx(context.Background(), time.Now().Add(s.settings.Load().limits.HandshakeTimeout))
	defer ctx.end()
	b, err := s.currentBinding(ctx, cs.ServerName)
	if err != nil {
		b = sessionBinding{name: b.name}
	}
	ss.Extra = append(ss.Extra, b.marshal())
	return s.tlsConfig.Load().EncryptTicket(cs, ss)
}

// unwrapSession is tls.Config.UnwrapSession: it decrypts a ticket and
// returns its session only if the session's binding admits this
// handshake; otherwise (nil, nil), and the client gets a full handshake.
func (s *Server) unwrapSession(identity []byte, cs tls.ConnectionState) (*tls.SessionState, error) {
	ss, err := s.tlsConfig.Load().DecryptTicket(identity, cs)
	if ss == nil || err != nil {
		return nil, err
	}
	bound, ok := bindingOf(ss)
	if !ok {
		s.metrics.resumptions.WithLabelValues("unbound").Inc()
		return nil, nil
	}
	ctx := newDeadlineCtx(context.Background(), time.Now().Add(s.settings.Load().limits.HandshakeTimeout))
	defer ctx.end()
	now, err := s.currentBinding(ctx, cs.ServerName)
	result := "resumed"
	switch {
	case errors.Is(err, keystore.ErrBadName) || errors.Is(err, errNoFallback):
		result = "unknown_name"
	case err != nil:
		result = "error"
	case bound.name != now.name:
		result = "other_name"
	case !bound.admits(now):
		result = "certificate_changed"
	}
	s.metrics.resumptions.WithLabelValues(result).Inc()
	if result != "resumed" {
		return nil, nil
	}
	return ss, nil
}
