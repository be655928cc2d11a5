package testpki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/secretfile"
)

func newTestCA(t testing.TB) *CA {
	t.Helper()
	ca, err := NewCA("testpki test root")
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// verifyLeaf checks that leaf chains to ca for each of hosts.
func verifyLeaf(t *testing.T, ca *CA, leaf *Leaf, hosts ...string) {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, host := range hosts {
		_, err := leaf.Cert.Verify(x509.VerifyOptions{
			Roots:     roots,
			DNSName:   host,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			t.Errorf("Verify(%q): %v", host, err)
		}
	}
}

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in      string
		want    KeyType
		wantErr bool
	}{
		{in: "ecdsa", want: ECDSAP256},
		{in: "ECDSA-P256", want: ECDSAP256},
		{in: "p256", want: ECDSAP256},
		{in: "rsa", want: RSA2048},
		{in: "RSA-2048", want: RSA2048},
		{in: "Ed25519", want: Ed25519},
		{in: "", wantErr: true},
		{in: "rsa-4096", wantErr: true},
		{in: "p384", wantErr: true},
		{in: " ecdsa", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParseKeyType(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseKeyType(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestNewCA(t *testing.T) {
	ca := newTestCA(t)
	c := ca.Certificate()
	if !c.IsCA || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v, MaxPathLenZero %v, KeyUsage %b", c.IsCA, c.MaxPathLenZero, c.KeyUsage)
	}
	if c.Subject.CommonName != "testpki test root" || len(c.SubjectKeyId) == 0 {
		t.Errorf("CA subject %q, SubjectKeyId %x", c.Subject.CommonName, c.SubjectKeyId)
	}
	if got, want := c.NotAfter.Sub(c.NotBefore), 10*365*24*time.Hour; got < want {
		t.Errorf("CA validity %v, want at least %v", got, want)
	}
	if time.Since(c.NotBefore) < 59*time.Minute {
		t.Errorf("CA NotBefore %v is not backdated by an hour", c.NotBefore)
	}
	if _, err := NewCA(""); err == nil {
		t.Error("NewCA(\"\") succeeded")
	}
}

func TestIssue(t *testing.T) {
	ca := newTestCA(t)
	tests := []struct {
		keyType KeyType
		check   func(any) bool
	}{
		{"", func(k any) bool { _, ok := k.(*ecdsa.PrivateKey); return ok }},
		{ECDSAP256, func(k any) bool { _, ok := k.(*ecdsa.PrivateKey); return ok }},
		{RSA2048, func(k any) bool { k2, ok := k.(*rsa.PrivateKey); return ok && k2.N.BitLen() == 2048 }},
		{Ed25519, func(k any) bool { _, ok := k.(ed25519.PrivateKey); return ok }},
	}
	for _, tt := range tests {
		t.Run(string(tt.keyType), func(t *testing.T) {
			names := []string{"tenant-1.example.com", "*.tenant-1.example.net"}
			leaf, err := ca.Issue(LeafSpec{Names: names, KeyType: tt.keyType})
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(leaf.Key) {
				t.Errorf("key is %T", leaf.Key)
			}
			if len(leaf.Chain) != 2 || !bytes.Equal(leaf.Chain[0], leaf.Cert.Raw) || !bytes.Equal(leaf.Chain[1], ca.Certificate().Raw) {
				t.Fatal("Chain is not [leaf, CA]")
			}
			if err := certs.KeyMatchesCert(leaf.Key, leaf.Cert); err != nil {
				t.Error(err)
			}
			verifyLeaf(t, ca, leaf, "tenant-1.example.com", "api.tenant-1.example.net")

			c := leaf.Cert
			if c.Subject.CommonName != names[0] || len(c.SubjectKeyId) == 0 || c.IsCA {
				t.Errorf("CN %q, SubjectKeyId %x, IsCA %v", c.Subject.CommonName, c.SubjectKeyId, c.IsCA)
			}
			if !bytes.Equal(c.AuthorityKeyId, ca.Certificate().SubjectKeyId) {
				t.Errorf("AuthorityKeyId %x, want %x", c.AuthorityKeyId, ca.Certificate().SubjectKeyId)
			}
			if c.SerialNumber.BitLen() > 128 || c.SerialNumber.Sign() <= 0 {
				t.Errorf("serial %v is not a positive 128-bit number", c.SerialNumber)
			}
			wantUsage := x509.KeyUsageDigitalSignature
			if tt.keyType == RSA2048 {
				wantUsage |= x509.KeyUsageKeyEncipherment
			}
			if c.KeyUsage != wantUsage {
				t.Errorf("KeyUsage %b, want %b", c.KeyUsage, wantUsage)
			}
			if got := c.NotAfter.Sub(c.NotBefore); got != 90*24*time.Hour {
				t.Errorf("default validity %v, want 90 days", got)
			}
		})
	}
}

func TestIssueValidity(t *testing.T) {
	ca := newTestCA(t)
	names := []string{"tenant.example.com"}
	notBefore := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	tests := []struct {
		name                  string
		notBefore, notAfter   time.Time
		wantBefore, wantAfter time.Time
		wantErr               bool
	}{
		{name: "explicit", notBefore: notBefore, notAfter: notBefore.Add(time.Hour), wantBefore: notBefore, wantAfter: notBefore.Add(time.Hour)},
		{name: "default NotAfter", notBefore: notBefore, wantBefore: notBefore, wantAfter: notBefore.Add(90 * 24 * time.Hour)},
		{name: "NotAfter before NotBefore", notBefore: notBefore, notAfter: notBefore.Add(-time.Second), wantErr: true},
		{name: "NotAfter equals NotBefore", notBefore: notBefore, notAfter: notBefore, wantErr: true},
	}
	for _, tt := range tests {
		leaf, err := ca.Issue(LeafSpec{Names: names, NotBefore: tt.notBefore, NotAfter: tt.notAfter})
		if tt.wantErr {
			if err == nil {
				t.Errorf("%s: Issue succeeded", tt.name)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if !leaf.Cert.NotBefore.Equal(tt.wantBefore) || !leaf.Cert.NotAfter.Equal(tt.wantAfter) {
			t.Errorf("%s: validity [%v, %v], want [%v, %v]", tt.name, leaf.Cert.NotBefore, leaf.Cert.NotAfter, tt.wantBefore, tt.wantAfter)
		}
	}
}

func TestIssueNames(t *testing.T) {
	ca := newTestCA(t)
	label63 := strings.Repeat("a", 63)
	long := strings.Repeat(label63+".", 4)[:250] + ".com" // 254 bytes
	tests := []struct {
		names []string
		bad   string // name the error must mention; "" means valid
	}{
		{names: []string{"localhost"}},
		{names: []string{"a.b"}},
		{names: []string{"*.a.b"}},
		{names: []string{"Tenant-0001.Example.COM"}},
		{names: []string{"xn--bcher-kva.example"}},
		{names: []string{label63 + ".example.com"}},
		{names: []string{"a.example.com", "*.example.com", "b.example.org"}},
		{names: nil, bad: "no DNS names"},
		{names: []string{}, bad: "no DNS names"},
		{names: []string{""}, bad: `""`},
		{names: []string{"*"}, bad: `"*"`},
		{names: []string{"*.com"}, bad: `"*.com"`},
		{names: []string{"*."}, bad: `"*."`},
		{names: []string{"a.*.example.com"}, bad: `"a.*.example.com"`},
		{names: []string{"*.*.example.com"}, bad: `"*.*.example.com"`},
		{names: []string{"foo*.example.com"}, bad: `"foo*.example.com"`},
		{names: []string{"-a.example.com"}, bad: `"-a.example.com"`},
		{names: []string{"a-.example.com"}, bad: `"a-.example.com"`},
		{names: []string{"a..example.com"}, bad: `"a..example.com"`},
		{names: []string{".example.com"}, bad: `".example.com"`},
		{names: []string{"example.com."}, bad: `"example.com."`},
		{names: []string{"under_score.example.com"}, bad: `"under_score.example.com"`},
		{names: []string{"space .example.com"}, bad: `"space .example.com"`},
		{names: []string{"bücher.example"}, bad: `"bücher.example"`},
		{names: []string{"a" + label63 + ".example.com"}, bad: "longer than 63"},
		{names: []string{long}, bad: "longer than 253"},
		{names: []string{"192.0.2.1"}, bad: `"192.0.2.1"`},
		{names: []string{"ok.example.com", "bad_one.example.com"}, bad: `"bad_one.example.com"`},
	}
	for _, tt := range tests {
		_, err := ca.Issue(LeafSpec{Names: tt.names})
		switch {
		case tt.bad == "" && err != nil:
			t.Errorf("Issue(%q): %v", tt.names, err)
		case tt.bad != "" && err == nil:
			t.Errorf("Issue(%q) succeeded", tt.names)
		case tt.bad != "" && !strings.Contains(err.Error(), tt.bad):
			t.Errorf("Issue(%q) error %q does not mention %s", tt.names, err, tt.bad)
		}
	}
}

func TestIssueUnknownKeyType(t *testing.T) {
	ca := newTestCA(t)
	if _, err := ca.Issue(LeafSpec{Names: []string{"a.example.com"}, KeyType: "dsa"}); err == nil {
		t.Error("Issue with key type dsa succeeded")
	}
}

func TestIssueConcurrent(t *testing.T) {
	ca := newTestCA(t)
	const workers, perWorker = 4, 25
	var mu sync.Mutex
	serials := make(map[string]bool)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for range perWorker {
				leaf, err := ca.Issue(LeafSpec{Names: []string{"tenant.example.com"}, KeyType: Ed25519})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				serials[leaf.Cert.SerialNumber.String()] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(serials) != workers*perWorker {
		t.Errorf("%d distinct serials from %d certificates", len(serials), workers*perWorker)
	}
}

func TestWriteLoadCA(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")

	// An existing world-readable key file must be replaced, not rewritten in place.
	if err := os.WriteFile(keyFile, []byte("old"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := ca.Write(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	if runtime.GOOS != "windows" {
		for file, want := range map[string]os.FileMode{certFile: 0o644, keyFile: 0o600} {
			fi, err := os.Stat(file)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s has mode %v, want %v", filepath.Base(file), got, want)
			}
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 2 {
		t.Errorf("directory holds %d files after Write, want 2", len(entries))
	}
	certPEM, _ := os.ReadFile(certFile)
	if !bytes.Equal(certPEM, ca.CertPEM()) {
		t.Error("certificate file differs from CertPEM")
	}

	loaded, err := LoadCA(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Certificate().Equal(ca.Certificate()) {
		t.Error("loaded CA certificate differs")
	}
	leaf, err := loaded.Issue(LeafSpec{Names: []string{"tenant.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	verifyLeaf(t, ca, leaf, "tenant.example.com")
}

func TestLoadCAErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	ca, other := newTestCA(t), newTestCA(t)
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")
	if err := ca.Write(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey := filepath.Join(dir, "other.pem"), filepath.Join(dir, "other-key.pem")
	if err := other.Write(otherCert, otherKey); err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Issue(LeafSpec{Names: []string{"tenant.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	leafCert := write("leaf.pem", ChainPEM(leaf.Chain[:1]))
	leafKeyPEM, err := KeyPEM(leaf.Key)
	if err != nil {
		t.Fatal(err)
	}
	leafKey := write("leaf-key.pem", leafKeyPEM)
	bundle := write("bundle.pem", ChainPEM(leaf.Chain))

	tests := []struct {
		name, cert, key string
		is              error
	}{
		{name: "mismatched key", cert: caCert, key: otherKey, is: certs.ErrKeyMismatch},
		{name: "not a CA", cert: leafCert, key: leafKey},
		{name: "two certificates", cert: bundle, key: caKey},
		{name: "key as certificate", cert: caKey, key: caKey},
		{name: "certificate as key", cert: caCert, key: caCert},
		{name: "missing certificate", cert: filepath.Join(dir, "missing.pem"), key: caKey, is: os.ErrNotExist},
		{name: "missing key", cert: caCert, key: filepath.Join(dir, "missing.pem"), is: os.ErrNotExist},
	}
	for _, tt := range tests {
		_, err := LoadCA(tt.cert, tt.key)
		if err == nil {
			t.Errorf("%s: LoadCA succeeded", tt.name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "testpki: ") || strings.Count(err.Error(), "testpki: ") != 1 {
			t.Errorf("%s: error %q is not prefixed exactly once with \"testpki: \"", tt.name, err)
		}
		if tt.is != nil && !errors.Is(err, tt.is) {
			t.Errorf("%s: error %q is not %v", tt.name, err, tt.is)
		}
	}
}

// TestKeyFilesExposed: every reader of a private key file in this
// package refuses one that other users can read, with the fleet key's
// rule (secretfile.ErrExposed), and accepts it once it is 0600 again.
// (certs tests its KeyPairFile the same way.)
func TestKeyFilesExposed(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca.key")
	if err := ca.Write(caCert, caKey); err != nil {
		t.Fatal(err)
	}
	readers := []struct {
		name, key string
		read      func() error
	}{
		{"LoadCA", caKey, func() error { _, err := LoadCA(caCert, caKey); return err }},
	}
	for _, r := range readers {
		for _, mode := range []os.FileMode{0o644, 0o604, 0o620} {
			if err := os.Chmod(r.key, mode); err != nil {
				t.Fatal(err)
			}
			if err := r.read(); !errors.Is(err, secretfile.ErrExposed) {
				t.Errorf("%s with key mode %v: %v, want secretfile.ErrExposed", r.name, mode, err)
			}
		}
		if err := os.Chmod(r.key, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := r.read(); err != nil {
			t.Errorf("%s with key mode 0600: %v", r.name, err)
		}
	}
}
