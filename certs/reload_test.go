package certs_test

import (
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/secretfile"
	"github.com/keyedge/keyedge/internal/testlog"
	"github.com/keyedge/keyedge/internal/testpki"
)

// renewedPair is a KeyPairFile over files a test renews, on a clock the
// test moves: files written get the clock's time as modification time,
// as a renewal some time later would.
type renewedPair struct {
	t        *testing.T
	ca       *testpki.CA
	certFile string
	keyFile  string
	clock    time.Time
	k        *certs.KeyPairFile
}

func newRenewedPair(t *testing.T) *renewedPair {
	dir := t.TempDir()
	p := &renewedPair{t: t, ca: newTestCA(t), certFile: filepath.Join(dir, "id.pem"), keyFile: filepath.Join(dir, "id.key"),
		clock: time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)}
	p.k = &certs.KeyPairFile{CertFile: p.certFile, KeyFile: p.keyFile, Now: func() time.Time { return p.clock }}
	return p
}

// renew writes a key pair for name, or garbage as the key when name is "".
func (p *renewedPair) renew(name string) {
	p.t.Helper()
	if name == "" {
		if err := os.WriteFile(p.keyFile, []byte("garbage"), 0o600); err != nil {
			p.t.Fatal(err)
		}
	} else {
		leaf, err := p.ca.Issue(testpki.LeafSpec{Names: []string{name}, ClientAuth: true})
		if err != nil {
			p.t.Fatal(err)
		}
		if err := leaf.WritePEM(p.certFile, p.keyFile); err != nil {
			p.t.Fatal(err)
		}
	}
	for _, f := range []string{p.certFile, p.keyFile} {
		if err := os.Chtimes(f, p.clock, p.clock); err != nil {
			p.t.Fatal(err)
		}
	}
}

// step renews the files as a table's step says: "" leaves them alone,
// "broken" writes garbage as the key, any other name a pair for it.
func (p *renewedPair) step(renew string) {
	p.t.Helper()
	switch renew {
	case "":
	case "broken":
		p.renew("")
	default:
		p.renew(renew)
	}
}

// name is the common name of the pair Load returns.
func (p *renewedPair) name() string {
	p.t.Helper()
	c, err := p.k.Load()
	if err != nil {
		p.t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		p.t.Fatal(err)
	}
	return leaf.Subject.CommonName
}

// TestKeyPairFileReloads: a renewed pair is picked up at the first Load
// a certs.Recheck period after the last look, not before; a broken renewal
// keeps the last good pair.
func TestKeyPairFileReloads(t *testing.T) {
	p := newRenewedPair(t)
	p.renew("first.example")
	start := p.clock
	for _, step := range []struct {
		advance time.Duration
		renew   string // "" leaves the files alone
		want    string
	}{
		{0, "", "first.example"},
		{time.Nanosecond, "second.example", "first.example"}, // renewed, not yet looked at
		{certs.Recheck - 2*time.Nanosecond, "", "first.example"},
		{time.Nanosecond, "", "second.example"},
		{certs.Recheck, "broken", "second.example"},
	} {
		p.clock = p.clock.Add(step.advance)
		p.step(step.renew)
		if got := p.name(); got != step.want {
			t.Fatalf("%v after the first load (renewed: %q): loaded %q, want %q", p.clock.Sub(start), step.renew, got, step.want)
		}
	}
}

// TestKeyFilesExposed: every reader of a private key file in this
// package refuses one that other users can read, with the fleet key's
// rule (secretfile.ErrExposed), and accepts it once it is 0600 again.
// (testpki tests its LoadCA the same way.)
func TestKeyFilesExposed(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"id.example"}, ClientAuth: true})
	if err != nil {
		t.Fatal(err)
	}
	idCert, idKey := filepath.Join(dir, "id.pem"), filepath.Join(dir, "id.key")
	if err := leaf.WritePEM(idCert, idKey); err != nil {
		t.Fatal(err)
	}
	readers := []struct {
		name, key string
		read      func() error
	}{
		{"KeyPairFile", idKey, func() error { _, err := (&certs.KeyPairFile{CertFile: idCert, KeyFile: idKey}).Load(); return err }},
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

// TestKeyPairFileRefusesExposedRenewal: a renewed key pair whose key
// file others can read is not picked up; the previous pair stays.
func TestKeyPairFileRefusesExposedRenewal(t *testing.T) {
	p := newRenewedPair(t)
	p.renew("first.example")
	if got := p.name(); got != "first.example" {
		t.Fatalf("loaded %q", got)
	}
	p.clock = p.clock.Add(certs.Recheck) // past the next stat
	p.renew("second.example")
	if err := os.Chmod(p.keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	if got := p.name(); got != "first.example" {
		t.Fatalf("a renewal with a world-readable key was loaded (%q)", got)
	}
}

// TestKeyPairFileLogsBrokenRenewal: a renewal that does not load keeps
// the last good pair in use, and says so in one ERROR naming the files
// and the reason, once per version of the files: not on every look,
// and again for the next broken version. A good renewal is then picked
// up.
func TestKeyPairFileLogsBrokenRenewal(t *testing.T) {
	p := newRenewedPair(t)
	var log testlog.Buffer
	p.k.Logger = slog.New(slog.NewTextHandler(&log, nil))
	p.renew("first.example")
	p.name()
	for i, want := range []struct {
		renew  string // "" leaves the files alone
		errors int    // ERROR lines logged so far
		loaded string
	}{
		{"broken", 1, "first.example"},
		{"", 1, "first.example"},
		{"broken", 2, "first.example"}, // a new version of the files, broken too
		{"second.example", 2, "second.example"},
	} {
		p.clock = p.clock.Add(certs.Recheck)
		p.step(want.renew)
		if got := p.name(); got != want.loaded {
			t.Fatalf("step %d: loaded %q, want %q", i, got, want.loaded)
		}
		out := log.String()
		if n := strings.Count(out, "level=ERROR"); n != want.errors {
			t.Fatalf("step %d: %d ERROR lines, want %d:\n%s", i, n, want.errors, out)
		}
		if want.errors > 0 && (!strings.Contains(out, p.keyFile) || !strings.Contains(out, "previous")) {
			t.Fatalf("step %d: the log does not name the key file and say the previous pair stays in use:\n%s", i, out)
		}
	}
}
