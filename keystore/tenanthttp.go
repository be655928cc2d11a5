package keystore

import (
	"bytes"
	"crypto/x509"
	"errors"
	"fmt"
	"math"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/excerpt"
	"golang.org/x/net/http/httpguts"
)

// TenantHTTP is what the edge does with a tenant's HTTP requests besides
// proxying them: the port-80 redirect, HSTS, header rules, a rate limit
// and client certificates. It is stored in each certificate record of a
// name (Meta.HTTP) and written to all of them at once (Store.UpdateHTTP),
// so every node picks a change up through the journal. A nil *TenantHTTP,
// like the zero value, means the defaults: port-80 requests redirected to
// https, nothing else.
//
// A TenantHTTP read from the keystore has passed Check and must not be
// modified: the edge uses its compiled parts (ClientAuth.Pool).
type TenantHTTP struct {
	// NoRedirect leaves the name's plain-HTTP requests unredirected: the
	// edge's port-80 listener refuses them (403) instead of sending the
	// client to https. Default false: redirected.
	NoRedirect bool `json:"no_redirect,omitempty"`

	// HSTS, when set, adds a Strict-Transport-Security header to every
	// HTTPS response.
	HSTS *HSTS `json:"hsts,omitempty"`

	// RequestHeaders change the request before it goes to the origin,
	// ResponseHeaders the response before it goes to the client, each
	// rule in order. No rule may name a header the edge manages
	// (ProtectedHeader).
	RequestHeaders  []HeaderRule `json:"request_headers,omitempty"`
	ResponseHeaders []HeaderRule `json:"response_headers,omitempty"`

	// RateLimit, when set, bounds each client address's requests.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`

	// ClientAuth, when set, asks clients for a certificate in the
	// handshake.
	ClientAuth *ClientAuth `json:"client_auth,omitempty"`
}

// HSTS is a Strict-Transport-Security policy (RFC 6797).
type HSTS struct {
	// MaxAge is how long browsers remember to use https only, in whole
	// seconds; 0 tells them to forget.
	MaxAge time.Duration `json:"max_age"`
	// IncludeSubDomains extends the policy to every subdomain.
	IncludeSubDomains bool `json:"include_subdomains,omitempty"`
	// Preload asks to be on browsers' built-in lists (hstspreload.org),
	// which requires IncludeSubDomains and a MaxAge of a year or more.
	Preload bool `json:"preload,omitempty"`
}

// HeaderOp is what a HeaderRule does.
type HeaderOp string

const (
	HeaderSet    HeaderOp = "set"    // replace every value of the header with Value
	HeaderAdd    HeaderOp = "add"    // add Value, keeping the values there are
	HeaderRemove HeaderOp = "remove" // remove the header
)

// HeaderRule changes one header field.
type HeaderRule struct {
	Op    HeaderOp `json:"op"`
	Name  string   `json:"name"`            // canonical form (textproto.CanonicalMIMEHeaderKey)
	Value string   `json:"value,omitempty"` // none for HeaderRemove
}

// RateLimit is a token bucket per client address (an IPv6 client's
// /64): PerSecond tokens a second, up to Burst, one per request.
type RateLimit struct {
	PerSecond float64 `json:"per_second"`
	Burst     int     `json:"burst"`
}

// ClientAuthMode says whether a client certificate is required.
type ClientAuthMode string

const (
	// ClientAuthRequired refuses a handshake without a certificate the
	// CAs verify.
	ClientAuthRequired ClientAuthMode = "required"
	// ClientAuthOptional asks for a certificate and verifies one that is
	// sent, but lets a client without one through.
	ClientAuthOptional ClientAuthMode = "optional"
)

// ClientAuth is client certificate authentication at the edge (mTLS).
type ClientAuth struct {
	// CAs is the PEM bundle of the certificate authorities whose
	// certificates clients may present.
	CAs  string         `json:"ca_pem"`
	Mode ClientAuthMode `json:"mode"`
	// SubjectHeader, if set, names the request header that carries the
	// verified certificate's subject to the origin (RFC 4514 form, as
	// pkix.Name.String). The edge removes it from every request of the
	// tenant first, so a client can never supply it.
	SubjectHeader string `json:"subject_header,omitempty"`

	// Set by Check.
	pool *x509.CertPool
	cas  []*x509.Certificate // pool's
}

// Pool returns the CAs, parsed by Check.
func (c *ClientAuth) Pool() *x509.CertPool { return c.pool }

// HasCA reports whether ca is one of the CAs: the end of a chain
// verified against Pool.
func (c *ClientAuth) HasCA(ca *x509.Certificate) bool {
	return slices.ContainsFunc(c.cas, func(o *x509.Certificate) bool { return bytes.Equal(o.Raw, ca.Raw) })
}

var (
	// ErrBadHTTPSettings is wrapped by every error Check returns.
	ErrBadHTTPSettings = errors.New("keystore: bad HTTP settings")

	// ErrProtectedHeader is wrapped, with ErrBadHTTPSettings, by the
	// error for a header rule (or subject header) naming a header the
	// edge manages itself.
	ErrProtectedHeader = errors.New("header is managed by the edge")
)

// Limits Check enforces, so a record stays small and a request's
// rules cheap.
const (
	maxHeaderRules   = 32
	maxHeaderValue   = 4096
	maxClientCABytes = 256 << 10
	maxRate          = 1e6
	maxHSTSAge       = 2 * 365 * 24 * time.Hour // hstspreload.org's recommended two years, as an upper bound
	preloadMinAge    = 365 * 24 * time.Hour
)

// ProtectedHeader reports whether a header rule may not name the
// header: those the edge sets for the origin (X-Forwarded-*,
// Forwarded, X-Real-IP, X-Request-ID), the hop-by-hop ones (RFC 9110,
// section 7.6.1) with Host and the framing headers, which would break
// the message.
func ProtectedHeader(name string) bool {
	c := textproto.CanonicalMIMEHeaderKey(name)
	if strings.HasPrefix(c, "X-Forwarded-") {
		return true
	}
	switch c {
	case "Forwarded", "X-Real-Ip", "X-Request-Id", "Host",
		"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length":
		return true
	}
	return false
}

// Check validates t and compiles what the edge uses: the client CA pool.
// Its errors wrap ErrBadHTTPSettings and say which setting is wrong and
// what is expected. A nil t is valid.
func (t *TenantHTTP) Check() error {
	if t == nil {
		return nil
	}
	var subject string
	if t.ClientAuth != nil {
		subject = t.ClientAuth.SubjectHeader
	}
	var errs []error
	if t.HSTS != nil {
		errs = append(errs, t.HSTS.check())
	}
	errs = append(errs, checkRules("request header", t.RequestHeaders, subject), checkRules("response header", t.ResponseHeaders, ""))
	if t.RateLimit != nil {
		errs = append(errs, t.RateLimit.check())
	}
	if t.ClientAuth != nil {
		errs = append(errs, t.ClientAuth.check())
	}
	return errors.Join(errs...)
}

// IsZero reports whether t holds only the defaults.
func (t *TenantHTTP) IsZero() bool {
	return t == nil || (!t.NoRedirect && t.HSTS == nil && len(t.RequestHeaders) == 0 && len(t.ResponseHeaders) == 0 && t.RateLimit == nil && t.ClientAuth == nil)
}

// Clone returns a deep copy of t for a writer to change.
func (t *TenantHTTP) Clone() *TenantHTTP {
	if t == nil {
		return &TenantHTTP{}
	}
	c := *t
	c.RequestHeaders, c.ResponseHeaders = slices.Clone(t.RequestHeaders), slices.Clone(t.ResponseHeaders)
	if t.HSTS != nil {
		h := *t.HSTS
		c.HSTS = &h
	}
	if t.RateLimit != nil {
		r := *t.RateLimit
		c.RateLimit = &r
	}
	if t.ClientAuth != nil {
		a := *t.ClientAuth
		c.ClientAuth = &a
	}
	return &c
}

func badf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrBadHTTPSettings}, args...)...)
}

func (h *HSTS) check() error {
	switch {
	case h.MaxAge < 0 || h.MaxAge > maxHSTSAge || h.MaxAge%time.Second != 0:
		return badf("hsts max-age %v: want whole seconds from 0 to %d", h.MaxAge, int64(maxHSTSAge/time.Second))
	case h.Preload && (!h.IncludeSubDomains || h.MaxAge < preloadMinAge):
		return badf("hsts preload needs includeSubDomains and a max-age of at least %d (a year), as hstspreload.org requires", int64(preloadMinAge/time.Second))
	}
	return nil
}

// Header returns the Strict-Transport-Security header value.
func (h *HSTS) Header() string { return h.format("; ") }

// String is the HSTS policy as keyctl http takes it.
func (h *HSTS) String() string { return h.format(",") }

func (h *HSTS) format(sep string) string {
	v := "max-age=" + strconv.FormatInt(int64(h.MaxAge/time.Second), 10)
	if h.IncludeSubDomains {
		v += sep + "includeSubDomains"
	}
	if h.Preload {
		v += sep + "preload"
	}
	return v
}

// ParseHSTS parses "max-age=SECONDS[,includeSubDomains][,preload]"
// (keywords in any case) and checks the result.
func ParseHSTS(s string) (*HSTS, error) {
	h := &HSTS{MaxAge: -1}
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		k, v, hasValue := strings.Cut(part, "=")
		switch {
		case strings.EqualFold(k, "max-age") && hasValue:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || n > int64(maxHSTSAge/time.Second) {
				return nil, badf("hsts max-age %q: want whole seconds from 0 to %d", excerpt.Of(v, 40), int64(maxHSTSAge/time.Second))
			}
			h.MaxAge = time.Duration(n) * time.Second
		case strings.EqualFold(part, "includeSubDomains"):
			h.IncludeSubDomains = true
		case strings.EqualFold(part, "preload"):
			h.Preload = true
		default:
			return nil, badf("hsts %q: want max-age=SECONDS[,includeSubDomains][,preload]", excerpt.Of(part, 40))
		}
	}
	if h.MaxAge < 0 {
		return nil, badf("hsts %q: max-age=SECONDS missing", excerpt.Of(s, 40))
	}
	return h, h.check()
}

// ParseHeaderRule parses "set:Name:Value", "add:Name:Value" or
// "remove:Name" (the value may contain colons) and checks it.
func ParseHeaderRule(s string) (HeaderRule, error) {
	op, rest, _ := strings.Cut(s, ":")
	name, value, hasValue := strings.Cut(rest, ":")
	r := HeaderRule{Op: HeaderOp(op), Name: textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(name)), Value: strings.TrimSpace(value)}
	if r.Op == HeaderRemove && hasValue {
		return HeaderRule{}, badf("header rule %q: remove takes no value; want remove:NAME", excerpt.Of(s, 60))
	}
	return r, r.check()
}

// String is the rule as ParseHeaderRule takes it.
func (r HeaderRule) String() string {
	if r.Op == HeaderRemove {
		return string(r.Op) + ":" + r.Name
	}
	return string(r.Op) + ":" + r.Name + ":" + r.Value
}

func (r HeaderRule) check() error {
	switch r.Op {
	case HeaderSet, HeaderAdd:
		if r.Value == "" || len(r.Value) > maxHeaderValue || !httpguts.ValidHeaderFieldValue(r.Value) {
			return badf("header rule %q: want %s:NAME:VALUE with a value of 1 to %d bytes, no control characters", excerpt.Of(r.String(), 60), r.Op, maxHeaderValue)
		}
	case HeaderRemove:
		if r.Value != "" {
			return badf("header rule %q: remove takes no value", excerpt.Of(r.String(), 60))
		}
	default:
		return badf("header rule %q: want set:NAME:VALUE, add:NAME:VALUE or remove:NAME", excerpt.Of(r.String(), 60))
	}
	return checkHeaderName("header rule "+strconv.Quote(excerpt.Of(r.String(), 60)), r.Name)
}

// checkHeaderName checks a header name a setting names.
func checkHeaderName(what, name string) error {
	switch {
	case !httpguts.ValidHeaderFieldName(name):
		return badf("%s: %q is not a header name", what, excerpt.Of(name, 40))
	case name != textproto.CanonicalMIMEHeaderKey(name):
		return badf("%s: header name %q is not in canonical form (%s)", what, name, textproto.CanonicalMIMEHeaderKey(name))
	case ProtectedHeader(name):
		return fmt.Errorf("%w: %s: %s %w (X-Forwarded-*, Forwarded, X-Real-IP, X-Request-ID, Host, hop-by-hop and framing headers are)", ErrBadHTTPSettings, what, name, ErrProtectedHeader)
	}
	return nil
}

// checkRules checks a list of rules; subject is the client subject
// header, which request rules may not touch either.
func checkRules(what string, rules []HeaderRule, subject string) error {
	if len(rules) > maxHeaderRules {
		return badf("%d %s rules: at most %d", len(rules), what, maxHeaderRules)
	}
	for _, r := range rules {
		if err := r.check(); err != nil {
			return err
		}
		if subject != "" && strings.EqualFold(r.Name, subject) {
			return fmt.Errorf("%w: %s rule %q: %s carries the verified client certificate subject: %w", ErrBadHTTPSettings, what, r.String(), subject, ErrProtectedHeader)
		}
	}
	return nil
}

// ParseRateLimit parses "N/s" (or "N/m", "N/h") and a burst, and checks
// them.
func ParseRateLimit(perPeriod string, burst int) (*RateLimit, error) {
	n, unit, ok := strings.Cut(perPeriod, "/")
	per := map[string]float64{"s": 1, "m": 60, "h": 3600}[unit]
	v, err := strconv.ParseFloat(n, 64)
	if !ok || per == 0 || err != nil {
		return nil, badf("rate %q: want N/s, N/m or N/h, e.g. 100/s", excerpt.Of(perPeriod, 40))
	}
	r := &RateLimit{PerSecond: v / per, Burst: burst}
	return r, r.check()
}

func (r *RateLimit) check() error {
	switch {
	case !(r.PerSecond > 0 && r.PerSecond <= maxRate) || math.IsInf(r.PerSecond, 0):
		return badf("rate %v/s: want more than 0 and at most %d/s", r.PerSecond, int(maxRate))
	case r.Burst < 1 || r.Burst > maxRate:
		return badf("burst %d: want 1 to %d", r.Burst, int(maxRate))
	}
	return nil
}

// String is the limit as keyctl http shows it.
func (r *RateLimit) String() string {
	return strconv.FormatFloat(r.PerSecond, 'g', -1, 64) + "/s, burst " + strconv.Itoa(r.Burst)
}

// check validates c and parses its CAs into its pool.
func (c *ClientAuth) check() error {
	if c.Mode != ClientAuthRequired && c.Mode != ClientAuthOptional {
		return badf("client auth %q: want required or optional", excerpt.Of(string(c.Mode), 40))
	}
	if c.SubjectHeader != "" {
		if err := checkHeaderName("client subject header", c.SubjectHeader); err != nil {
			return err
		}
	}
	if len(c.CAs) > maxClientCABytes {
		return badf("client CA bundle of %d bytes: at most %d", len(c.CAs), maxClientCABytes)
	}
	ders, err := certs.ParseChainPEM([]byte(c.CAs))
	if err != nil {
		return badf("client CA bundle: %v; want one or more PEM CERTIFICATE blocks", err)
	}
	pool := x509.NewCertPool()
	cas := make([]*x509.Certificate, len(ders))
	for i, der := range ders {
		ca, _ := x509.ParseCertificate(der) // ParseChainPEM parsed it
		if !ca.IsCA {
			return badf("client CA bundle: certificate %d (%s) is not a CA", i+1, excerpt.Of(ca.Subject.String(), 80))
		}
		pool.AddCert(ca)
		cas[i] = ca
	}
	c.pool, c.cas = pool, cas
	return nil
}

// size estimates the heap t holds in a cached Cert: its text, and the
// parsed CA certificates at about twice their PEM.
func (t *TenantHTTP) size() int64 {
	if t == nil {
		return 0
	}
	n := int64(128)
	for _, r := range slices.Concat(t.RequestHeaders, t.ResponseHeaders) {
		n += int64(len(r.Name)+len(r.Value)) + 48
	}
	if t.ClientAuth != nil {
		n += 3 * int64(len(t.ClientAuth.CAs))
	}
	return n
}
