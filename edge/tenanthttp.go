package edge

import (
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"golang.org/x/net/http/httpguts"
)

// The per-tenant HTTP layer: what a tenant's keystore.TenantHTTP asks of
// its HTTPS requests, applied before the proxy serves them (the port-80
// redirect is plainhttp.go's, client certificates in the handshake
// clientauth.go's). The settings are read from the host's keystore cache
// entry, parsed and checked once when the entry was loaded; a tenant
// without settings costs one cached lookup.
//
// In order, for a tenant with settings:
//  1. HSTS and the response rules are set on every response, the
//     edge's own error responses included (not on a protocol switch,
//     which ReverseProxy answers on the hijacked connection).
//  2. Client certificates: the subject header is removed from the
//     request, and set to the verified certificate's subject; a
//     required certificate that the connection does not hold (it was
//     opened before the requirement, or for another name) gets a 421.
//  3. The rate limit: past it, a 429 with Retry-After.
//  4. The request rules. They cannot name the headers the proxy sets
//     afterwards (X-Forwarded-*, Forwarded, X-Request-ID; keystore
//     refuses such rules), so the origin sees the edge's own values.

// errClientCertRequired is logged for a request whose connection holds
// no certificate its tenant's CAs verified.
var errClientCertRequired = errors.New("edge: the tenant requires a client certificate this connection does not hold")

// applyTenant applies the settings of c, r's tenant (s.tenant: only
// names the connection's certificate covers are tenants here, so
// made-up hosts cost the keystore nothing), to r before p serves it,
// and returns the writer to serve it through, or false when it has
// answered r itself (a 421 or 429), through p, so that the request is
// counted and logged like any other.
func (s *Server) applyTenant(w http.ResponseWriter, r *http.Request, p *Proxy, c *keystore.Cert) (http.ResponseWriter, bool) {
	if c.Meta.HTTP == nil {
		return w, true
	}
	h := c.Meta.HTTP
	if h.HSTS != nil || len(h.ResponseHeaders) > 0 {
		w = &tenantWriter{ResponseWriter: w, h: h}
	}
	if a := h.ClientAuth; a != nil {
		if a.SubjectHeader != "" {
			delete(r.Header, a.SubjectHeader)
		}
		subject, ok := verifiedSubject(r.TLS, a)
		switch {
		case !ok && a.Mode == keystore.ClientAuthRequired:
			p.refuse(w, r, proxyReasonMisdirected, errClientCertRequired)
			return nil, false
		case ok && a.SubjectHeader != "" && httpguts.ValidHeaderFieldValue(subject):
			r.Header[a.SubjectHeader] = []string{subject}
		}
	}
	if lim := h.RateLimit; lim != nil {
		if client, ok := clientOf(r); ok {
			if ok, wait := s.limiter.allow(c.ID, client, lim); !ok {
				p.tooManyRequests(w, r, wait)
				return nil, false
			}
		}
	}
	applyRules(r.Header, h.RequestHeaders)
	return w, true
}

// clientOf is r's client as the rate limit counts it (clientPrefix):
// RemoteAddr is the PROXY header's client when PROXY protocol is on, as
// net/http and the HTTP/1.1 loop take it from the connection.
func clientOf(r *http.Request) (netip.Prefix, bool) {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Prefix{}, false
	}
	return clientNetwork(ap.Addr())
}

// applyRules applies header rules to h, in order.
func applyRules(h http.Header, rules []keystore.HeaderRule) {
	for _, rule := range rules {
		switch rule.Op {
		case keystore.HeaderSet:
			h[rule.Name] = []string{rule.Value}
		case keystore.HeaderAdd:
			h[rule.Name] = append(h[rule.Name], rule.Value)
		case keystore.HeaderRemove:
			delete(h, rule.Name)
		}
	}
}

// tenantWriter sets a tenant's HSTS header and applies its response
// rules to the response header just before it is sent. It is used by
// one request's goroutine only.
type tenantWriter struct {
	http.ResponseWriter
	h    *keystore.TenantHTTP
	done bool // the header was sent
}

func (w *tenantWriter) WriteHeader(code int) {
	if code >= 200 {
		w.final()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *tenantWriter) Write(b []byte) (int, error) {
	w.final()
	return w.ResponseWriter.Write(b)
}

// final changes the response header, once.
func (w *tenantWriter) final() {
	if w.done {
		return
	}
	w.done = true
	hdr := w.ResponseWriter.Header()
	applyRules(hdr, w.h.ResponseHeaders)
	if w.h.HSTS != nil {
		hdr["Strict-Transport-Security"] = []string{w.h.HSTS.Header()}
	}
}

// Unwrap lets http.ResponseController reach the server's writer, to
// flush and hijack.
func (w *tenantWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// refuse answers r with the failure response for reason, counted and
// logged as the proxy's own failures are.
func (p *Proxy) refuse(w http.ResponseWriter, r *http.Request, reason string, err error) {
	ex := p.track(w, r)
	defer ex.finish()
	p.fail(&ex.w, r, reason, &ex.route, err)
}

// proxyReasonRateLimited is the access log's error for a request a
// tenant's rate limit refused; keyedge_edge_rate_limited_total counts
// them.
const proxyReasonRateLimited = "rate_limited"

// tooManyRequests answers r with a 429 and a Retry-After of wait, in
// whole seconds, counted and logged like every request the proxy
// answers.
func (p *Proxy) tooManyRequests(w http.ResponseWriter, r *http.Request, wait time.Duration) {
	ex := p.track(w, r)
	defer ex.finish()
	pw := &ex.w
	ex.route.reason = proxyReasonRateLimited
	pw.Header().Set("Retry-After", strconv.FormatInt(retryAfterSeconds(wait), 10))
	http.Error(pw, "429 Too Many Requests: this client's request rate is over the site's limit", http.StatusTooManyRequests)
}
