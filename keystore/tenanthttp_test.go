package keystore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

func TestParseHeaderRule(t *testing.T) {
	for _, tc := range []struct {
		in        string
		want      string // String() of the rule; "" for an error
		protected bool
	}{
		{"set:X-Frame-Options:DENY", "set:X-Frame-Options:DENY", false},
		{"add:cache-control:no-store", "add:Cache-Control:no-store", false},
		{"set:Content-Security-Policy:default-src 'self'; img-src https://x:8443", "set:Content-Security-Policy:default-src 'self'; img-src https://x:8443", false},
		{"remove:Server", "remove:Server", false},
		{"remove:Server:x", "", false},
		{"set:X-Empty:", "", false},
		{"replace:X-A:b", "", false},
		{"set:Bad Name:v", "", false},
		{"set:X-A:bad\nvalue", "", false},
		{"set:X-Forwarded-For:1.2.3.4", "", true},
		{"remove:x-forwarded-proto", "", true},
		{"set:Forwarded:for=1.2.3.4", "", true},
		{"set:X-Request-Id:abc", "", true},
		{"remove:Connection", "", true},
		{"set:Host:evil.example", "", true},
		{"remove:Transfer-Encoding", "", true},
		{"add:Upgrade:websocket", "", true},
	} {
		r, err := keystore.ParseHeaderRule(tc.in)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("ParseHeaderRule(%q) = %v, want an error", tc.in, r)
		case tc.want == "" && !errors.Is(err, keystore.ErrBadHTTPSettings):
			t.Errorf("ParseHeaderRule(%q): %v, want ErrBadHTTPSettings", tc.in, err)
		case tc.want == "" && errors.Is(err, keystore.ErrProtectedHeader) != tc.protected:
			t.Errorf("ParseHeaderRule(%q): %v; protected: %v", tc.in, err, tc.protected)
		case tc.want != "" && (err != nil || r.String() != tc.want):
			t.Errorf("ParseHeaderRule(%q) = %v, %v; want %s", tc.in, r, err, tc.want)
		}
	}
}

func TestParseHSTS(t *testing.T) {
	for _, tc := range []struct{ in, header string }{
		{"max-age=300", "max-age=300"},
		{"max-age=31536000,includeSubDomains", "max-age=31536000; includeSubDomains"},
		{"max-age=63072000, includesubdomains, preload", "max-age=63072000; includeSubDomains; preload"},
		{"max-age=0", "max-age=0"},
		{"max-age=300,preload", ""},                   // preload without includeSubDomains
		{"max-age=300,includeSubDomains,preload", ""}, // preload under a year
		{"includeSubDomains", ""},
		{"max-age=-1", ""},
		{"max-age=1e9", ""},
		{"max-age=300,always", ""},
	} {
		h, err := keystore.ParseHSTS(tc.in)
		switch {
		case tc.header == "" && !errors.Is(err, keystore.ErrBadHTTPSettings):
			t.Errorf("ParseHSTS(%q) = %v, %v; want ErrBadHTTPSettings", tc.in, h, err)
		case tc.header != "" && (err != nil || h.Header() != tc.header):
			t.Errorf("ParseHSTS(%q) = %v, %v; want header %q", tc.in, h, err, tc.header)
		}
	}
}

func TestParseRateLimit(t *testing.T) {
	for _, tc := range []struct {
		rate  string
		burst int
		perS  float64
	}{
		{"100/s", 200, 100},
		{"60/m", 10, 1},
		{"0.5/s", 1, 0.5},
		{"0/s", 1, 0},
		{"100/s", 0, 0},
		{"100", 1, 0},
		{"100/d", 1, 0},
		{"NaN/s", 1, 0},
		{"Inf/s", 1, 0},
	} {
		r, err := keystore.ParseRateLimit(tc.rate, tc.burst)
		switch {
		case tc.perS == 0 && !errors.Is(err, keystore.ErrBadHTTPSettings):
			t.Errorf("ParseRateLimit(%q, %d) = %v, %v; want ErrBadHTTPSettings", tc.rate, tc.burst, r, err)
		case tc.perS != 0 && (err != nil || r.PerSecond != tc.perS || r.Burst != tc.burst):
			t.Errorf("ParseRateLimit(%q, %d) = %v, %v", tc.rate, tc.burst, r, err)
		}
	}
}

func TestClientAuthCheck(t *testing.T) {
	ca, err := testpki.NewCA("client CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"client.example"}})
	if err != nil {
		t.Fatal(err)
	}
	good := string(ca.CertPEM())
	for _, tc := range []struct {
		name string
		ca   keystore.ClientAuth
		ok   bool
	}{
		{"required", keystore.ClientAuth{CAs: good, Mode: keystore.ClientAuthRequired, SubjectHeader: "X-Client-Subject"}, true},
		{"optional, no header", keystore.ClientAuth{CAs: good, Mode: keystore.ClientAuthOptional}, true},
		{"no mode", keystore.ClientAuth{CAs: good}, false},
		{"no CA", keystore.ClientAuth{Mode: keystore.ClientAuthRequired}, false},
		{"a leaf, not a CA", keystore.ClientAuth{CAs: string(testpki.ChainPEM(leaf.Chain[:1])), Mode: keystore.ClientAuthRequired}, false},
		{"a malformed block", keystore.ClientAuth{CAs: good + "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n", Mode: keystore.ClientAuthRequired}, false},
		{"a key", keystore.ClientAuth{CAs: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", Mode: keystore.ClientAuthRequired}, false},
		{"protected subject header", keystore.ClientAuth{CAs: good, Mode: keystore.ClientAuthRequired, SubjectHeader: "X-Forwarded-User"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := &keystore.TenantHTTP{ClientAuth: &tc.ca}
			err := h.Check()
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, keystore.ErrBadHTTPSettings)) {
				t.Fatalf("Check = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && h.ClientAuth.Pool() == nil {
				t.Error("no pool after Check")
			}
		})
	}
	// A request rule may not touch the subject header.
	h := &keystore.TenantHTTP{
		ClientAuth:     &keystore.ClientAuth{CAs: good, Mode: keystore.ClientAuthOptional, SubjectHeader: "X-Client-Subject"},
		RequestHeaders: []keystore.HeaderRule{{Op: keystore.HeaderSet, Name: "X-Client-Subject", Value: "CN=admin"}},
	}
	if err := h.Check(); !errors.Is(err, keystore.ErrProtectedHeader) {
		t.Errorf("a request rule setting the subject header: %v, want ErrProtectedHeader", err)
	}
}

// UpdateHTTP writes every certificate of a name, a follower sees the
// change through the journal, a renewal keeps the settings, and a
// refused change writes nothing.
func TestUpdateHTTP(t *testing.T) {
	f := newFixture(t)
	writer := f.open(t, keystore.Options{})
	ctx := context.Background()
	put(t, writer, f.bundle(t, testpki.ECDSAP256, "shop.example.com"), f.bundle(t, testpki.RSA2048, "shop.example.com"))
	node := f.open(t, keystore.Options{PollInterval: 10 * time.Millisecond})
	if e, err := node.Lookup(ctx, "shop.example.com"); err != nil || e.Certs[0].Meta.HTTP != nil {
		t.Fatalf("before: %v, %v", e, err)
	}

	err := writer.UpdateHTTP(ctx, "shop.example.com", func(h *keystore.TenantHTTP) error {
		h.HSTS = &keystore.HSTS{MaxAge: time.Hour}
		h.RateLimit = &keystore.RateLimit{PerSecond: 10, Burst: 20}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the node sees the new settings of both certificates", func() bool {
		e, err := node.Lookup(ctx, "shop.example.com")
		if err != nil || len(e.Certs) != 2 {
			return false
		}
		for _, c := range e.Certs {
			if c.Meta.HTTP == nil || c.Meta.HTTP.HSTS == nil || c.Meta.HTTP.HSTS.Header() != "max-age=3600" || c.Meta.HTTP.RateLimit.Burst != 20 {
				return false
			}
		}
		return true
	})

	// Refused: nothing written.
	before := snapshot(t, f.dir, false)
	err = writer.UpdateHTTP(ctx, "shop.example.com", func(h *keystore.TenantHTTP) error {
		h.RequestHeaders = append(h.RequestHeaders, keystore.HeaderRule{Op: keystore.HeaderSet, Name: "X-Forwarded-For", Value: "1.2.3.4"})
		return nil
	})
	if !errors.Is(err, keystore.ErrProtectedHeader) {
		t.Fatalf("protected rule: %v", err)
	}
	if after := snapshot(t, f.dir, false); after != before {
		t.Error("a refused change wrote files")
	}

	// A renewal (a new key, so a new certificate ID) keeps the settings.
	renewed := put(t, writer, f.bundle(t, testpki.ECDSAP256, "shop.example.com"))[0]
	c, err := writer.CertByID(ctx, renewed)
	if err != nil || c.Meta.HTTP == nil || c.Meta.HTTP.RateLimit == nil || c.Meta.HTTP.RateLimit.PerSecond != 10 {
		t.Fatalf("renewed certificate's settings: %+v, %v", c.Meta.HTTP, err)
	}

	// Back to the defaults: stored as none.
	err = writer.UpdateHTTP(ctx, "shop.example.com", func(h *keystore.TenantHTTP) error {
		h.HSTS, h.RateLimit = nil, nil
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	e, err := writer.Lookup(ctx, "shop.example.com")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range e.Certs {
		if c.Meta.HTTP != nil {
			t.Errorf("certificate %s: settings %+v after clearing", c.ID, c.Meta.HTTP)
		}
	}
}
