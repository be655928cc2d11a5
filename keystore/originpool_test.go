package keystore_test

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

func TestParseOriginTarget(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    keystore.OriginTarget
		problem string
	}{
		{"http://10.0.0.7:8080", keystore.OriginTarget{URL: "http://10.0.0.7:8080", Weight: 1}, ""},
		{"http://10.0.0.7:8080=3", keystore.OriginTarget{URL: "http://10.0.0.7:8080", Weight: 3}, ""},
		{"https://o.example/app?x=1", keystore.OriginTarget{URL: "https://o.example/app?x=1", Weight: 1}, ""},
		{"http://a:1=heavy", keystore.OriginTarget{}, `weight "heavy" is not a number`},
	} {
		got, err := keystore.ParseOriginTarget(tt.in)
		switch {
		case tt.problem == "" && (err != nil || got != tt.want):
			t.Errorf("ParseOriginTarget(%q) = %+v, %v; want %+v", tt.in, got, err, tt.want)
		case tt.problem != "" && (!errors.Is(err, keystore.ErrBadOriginSettings) || !strings.Contains(err.Error(), tt.problem)):
			t.Errorf("ParseOriginTarget(%q) = %v, want ErrBadOriginSettings saying %q", tt.in, err, tt.problem)
		}
	}
}

func TestOriginPoolCheck(t *testing.T) {
	ca, err := testpki.NewCA("origin CA")
	if err != nil {
		t.Fatal(err)
	}
	one := []keystore.OriginTarget{{URL: "https://10.0.0.7", Weight: 1}}
	plain := []keystore.OriginTarget{{URL: "http://10.0.0.7", Weight: 1}}
	for _, tt := range []struct {
		name     string
		pool     keystore.OriginPool
		sentinel error  // nil when valid
		problem  string // in the message
	}{
		{"one origin", keystore.OriginPool{Targets: plain}, nil, ""},
		{"everything", keystore.OriginPool{
			Targets:        []keystore.OriginTarget{{URL: "https://10.0.0.7", Weight: 3}, {URL: "http://10.0.0.8:81", Weight: 1}},
			Health:         keystore.OriginHealth{Path: "/healthz", Interval: 5 * time.Second, Healthy: 1, Unhealthy: 2},
			ConnectTimeout: time.Second, ResponseTimeout: time.Minute,
			TLS: &keystore.OriginTLS{CA: ca.CertPEM(), ServerName: "origin.internal"},
		}, nil, ""},
		{"none", keystore.OriginPool{}, keystore.ErrBadOriginSettings, "no origin"},
		{"no scheme", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: "10.0.0.7:80", Weight: 1}}}, keystore.ErrBadOrigin, "no scheme"},
		{"twice", keystore.OriginPool{Targets: append(slices.Clone(plain), plain...)}, keystore.ErrBadOriginSettings, "given twice"},
		{"weight 0", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: "http://a", Weight: 0}}}, keystore.ErrBadOriginSettings, "weight 0, want 1 to 1000"},
		{"relative path", keystore.OriginPool{Targets: plain, Health: keystore.OriginHealth{Path: "healthz"}}, keystore.ErrBadOriginSettings, "want an absolute path"},
		{"interval alone", keystore.OriginPool{Targets: plain, Health: keystore.OriginHealth{Interval: time.Second}}, keystore.ErrBadOriginSettings, "without a health check path"},
		{"fast interval", keystore.OriginPool{Targets: plain, Health: keystore.OriginHealth{Path: "/h", Interval: time.Millisecond}}, keystore.ErrBadOriginSettings, "interval 1ms"},
		{"threshold", keystore.OriginPool{Targets: plain, Health: keystore.OriginHealth{Path: "/h", Unhealthy: 11}}, keystore.ErrBadOriginSettings, "unhealthy threshold 11"},
		{"timeout", keystore.OriginPool{Targets: plain, ConnectTimeout: -time.Second}, keystore.ErrBadOriginSettings, "connect timeout -1s"},
		{"tls without https", keystore.OriginPool{Targets: plain, TLS: &keystore.OriginTLS{ServerName: "a.example"}}, keystore.ErrBadOriginSettings, "no https origin"},
		{"bad CA", keystore.OriginPool{Targets: one, TLS: &keystore.OriginTLS{CA: []byte("not PEM")}}, keystore.ErrBadOriginSettings, "CA bundle"},
		{"IP server name", keystore.OriginPool{Targets: one, TLS: &keystore.OriginTLS{ServerName: "10.0.0.7"}}, keystore.ErrBadOriginSettings, "is an IP address"},
		{"bad server name", keystore.OriginPool{Targets: one, TLS: &keystore.OriginTLS{ServerName: "a b"}}, keystore.ErrBadOriginSettings, "not a host name"},
		{"cert without key", keystore.OriginPool{Targets: one, TLS: &keystore.OriginTLS{ClientCert: ca.CertPEM()}}, keystore.ErrBadOriginSettings, "without its key"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.pool.Check()
			switch {
			case tt.sentinel == nil && err != nil:
				t.Errorf("Check() = %v, want nil", err)
			case tt.sentinel != nil && (!errors.Is(err, tt.sentinel) || !strings.Contains(err.Error(), tt.problem)):
				t.Errorf("Check() = %v, want %v saying %q", err, tt.sentinel, tt.problem)
			}
		})
	}
}

// TestSetOrigins stores a pool with a client certificate for a name
// with two certificates: both records get it, the lookup serves it,
// each record's client key opens to the key given, and a refused pool
// writes nothing.
func TestSetOrigins(t *testing.T) {
	f := newFixture(t)
	s := f.open(t, keystore.Options{})
	ctx := context.Background()
	put(t, s, f.bundle(t, testpki.ECDSAP256, "shop.example"), f.bundle(t, testpki.RSA2048, "shop.example"))
	client, err := f.ca.Issue(testpki.LeafSpec{Names: []string{"edge.client"}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, f.dir, false)

	bad := keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: "http://a", Weight: 1}}, Health: keystore.OriginHealth{Path: "x"}}
	if err := s.SetOrigins(ctx, "shop.example", bad, nil); !errors.Is(err, keystore.ErrBadOriginSettings) {
		t.Fatalf("SetOrigins(bad) = %v, want ErrBadOriginSettings", err)
	}
	other, _ := f.ca.Issue(testpki.LeafSpec{Names: []string{"other.client"}})
	withTLS := keystore.OriginPool{
		Targets: []keystore.OriginTarget{{URL: "https://10.0.0.7", Weight: 2}, {URL: "https://10.0.0.8", Weight: 1}},
		TLS:     &keystore.OriginTLS{CA: f.ca.CertPEM(), ServerName: "origin.internal", ClientCert: testpki.ChainPEM(client.Chain)},
	}
	if err := s.SetOrigins(ctx, "shop.example", withTLS, other.Key); !errors.Is(err, keystore.ErrBadOriginSettings) || !strings.Contains(err.Error(), "client key") {
		t.Fatalf("SetOrigins(mismatched key) = %v, want ErrBadOriginSettings about the client key", err)
	}
	if after := snapshot(t, f.dir, false); after != before {
		t.Fatal("a refused pool changed the keystore")
	}

	if err := s.SetOrigins(ctx, "shop.example", withTLS, client.Key); err != nil {
		t.Fatal(err)
	}
	fresh := f.open(t, keystore.Options{})
	e, err := fresh.Lookup(ctx, "shop.example")
	if err != nil || len(e.Certs) != 2 {
		t.Fatalf("Lookup = %v, %v; want 2 certificates", e, err)
	}
	for _, c := range e.Certs {
		p := c.Meta.Origins()
		if len(p.Targets) != 2 || p.TLS == nil || p.TLS.ServerName != "origin.internal" || c.Meta.Origin != "https://10.0.0.7" {
			t.Errorf("cert %s: origins %+v, origin %q", c.ID, p, c.Meta.Origin)
		}
		key, err := c.OriginClientKey()
		if err != nil || !certs.SamePublicKey(key.Public(), client.Key.Public()) {
			t.Errorf("cert %s: OriginClientKey = %v, want the client key", c.ID, err)
		}
	}
	if err := s.SetOrigins(ctx, "shop.example", keystore.OriginPool{Targets: []keystore.OriginTarget{{URL: "http://10.0.0.9", Weight: 1}}}, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "a single default origin stored as Meta.Origin alone, carried by the journal", func() bool {
		e, err := fresh.Lookup(ctx, "shop.example")
		return err == nil && e.Certs[0].Meta.OriginPool == nil && e.Certs[0].Meta.Origin == "http://10.0.0.9"
	})
}
