package rsasigner

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/keyedge/keyedge/internal/testmetrics"
	"github.com/prometheus/client_golang/prometheus"
)

// testKey is one RSA-2048 key for the package's tests (generating one
// takes a while under -race).
var testKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
})

// openSSLSigner returns an OpenSSL signer of testKey, or skips the test
// where libcrypto cannot load (a build without cgo, a machine without
// libcrypto.so.3) unless KEYEDGE_REQUIRE_OPENSSL is set, as CI sets it.
func openSSLSigner(t testing.TB) *Signer {
	t.Helper()
	if _, err := loadDefault(); err != nil {
		if os.Getenv("KEYEDGE_REQUIRE_OPENSSL") != "" {
			t.Fatalf("KEYEDGE_REQUIRE_OPENSSL is set, but: %v", err)
		}
		t.Skipf("no OpenSSL here: %v", err)
	}
	s, err := newSigner(testKey())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func digestOf(h crypto.Hash, msg string) []byte {
	if h == crypto.MD5SHA1 {
		md5, sha1 := crypto.MD5.New(), crypto.SHA1.New()
		md5.Write([]byte(msg))
		sha1.Write([]byte(msg))
		return append(md5.Sum(nil), sha1.Sum(nil)...)
	}
	w := h.New()
	w.Write([]byte(msg))
	return w.Sum(nil)
}

// TestSignVerifies: every signature TLS and the Keyless opcodes ask for
// verifies with crypto/rsa. PKCS #1 v1.5 is deterministic, so it must
// equal Go's signature byte for byte; PSS salts must be the length asked
// for, which a verification pinning another length refuses.
func TestSignVerifies(t *testing.T) {
	s := openSSLSigner(t)
	pub := &testKey().PublicKey
	maxSalt := pub.Size() - 2 // minus the hash length, below
	for _, h := range []crypto.Hash{crypto.MD5SHA1, crypto.SHA1, crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512} {
		d := digestOf(h, "handshake transcript")
		sig, err := s.Sign(nil, d, h)
		if err != nil {
			t.Fatalf("PKCS #1 v1.5 %v: %v", h, err)
		}
		want, err := rsa.SignPKCS1v15(nil, testKey(), h, d)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(sig, want) {
			t.Errorf("PKCS #1 v1.5 %v: OpenSSL's signature differs from Go's", h)
		}
		if err := rsa.VerifyPKCS1v15(pub, h, d, sig); err != nil {
			t.Errorf("PKCS #1 v1.5 %v: %v", h, err)
		}
		if h == crypto.MD5SHA1 {
			continue
		}
		for _, tt := range []struct {
			name     string
			salt     int // asked for
			wantSalt int // in the signature
		}{
			{"EqualsHash (TLS)", rsa.PSSSaltLengthEqualsHash, h.Size()},
			{"Auto (largest)", rsa.PSSSaltLengthAuto, maxSalt - h.Size()},
			{"20 bytes", 20, 20},
		} {
			sig, err := s.Sign(nil, d, &rsa.PSSOptions{Hash: h, SaltLength: tt.salt})
			if err != nil {
				t.Fatalf("PSS %v %s: %v", h, tt.name, err)
			}
			for _, verify := range []int{tt.wantSalt, rsa.PSSSaltLengthAuto} {
				if err := rsa.VerifyPSS(pub, h, d, sig, &rsa.PSSOptions{SaltLength: verify}); err != nil {
					t.Errorf("PSS %v %s: verifying with salt length %d: %v", h, tt.name, verify, err)
				}
			}
			if err := rsa.VerifyPSS(pub, h, d, sig, &rsa.PSSOptions{SaltLength: tt.wantSalt + 1}); err == nil {
				t.Errorf("PSS %v %s: verifies with a salt of %d bytes, not %d", h, tt.name, tt.wantSalt+1, tt.wantSalt)
			}
			other := digestOf(h, "another transcript")
			if err := rsa.VerifyPSS(pub, h, other, sig, nil); err == nil {
				t.Errorf("PSS %v %s: verifies for another digest", h, tt.name)
			}
		}
	}
}

// TestSignRefuses: options Sign does not serve are errors, not crashes
// or signatures, and name what was wrong.
func TestSignRefuses(t *testing.T) {
	s := openSSLSigner(t)
	sha256 := digestOf(crypto.SHA256, "x")
	tests := []struct {
		name        string
		digest      []byte
		opts        crypto.SignerOpts
		unsupported bool // errors.Is ErrUnsupported
		want        string
	}{
		{"no options", sha256, nil, true, "no options"},
		{"no hash (raw PKCS #1)", sha256, crypto.Hash(0), true, "hash"},
		{"MD5", digestOf(crypto.MD5, "x"), crypto.MD5, true, "MD5"},
		{"SHA-512/256", sha256, crypto.SHA512_256, true, "SHA-512/256"},
		{"PSS with MD5SHA1", digestOf(crypto.MD5SHA1, "x"), &rsa.PSSOptions{Hash: crypto.MD5SHA1}, true, "MD5SHA1"},
		{"PSS salt length -5", sha256, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: -5}, true, "salt length -5"},
		{"digest too short", sha256[:31], crypto.SHA256, false, "31-byte digest"},
		{"digest too long", digestOf(crypto.SHA384, "x"), crypto.SHA256, false, "48-byte digest"},
		{"PSS salt too long for the key", sha256, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: 4096}, false, "OpenSSL signing failed"},
	}
	for _, tt := range tests {
		sig, err := s.Sign(nil, tt.digest, tt.opts)
		if err == nil || sig != nil {
			t.Errorf("%s: signed (%d bytes), want an error", tt.name, len(sig))
			continue
		}
		if errors.Is(err, ErrUnsupported) != tt.unsupported || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q, want one with %q (ErrUnsupported: %v)", tt.name, err, tt.want, tt.unsupported)
		}
	}
	// The signer still signs after the failures (the error queue was
	// emptied).
	if _, err := s.Sign(nil, sha256, crypto.SHA256); err != nil {
		t.Errorf("after the refusals: %v", err)
	}
}

// TestSignConcurrently signs from many goroutines at once with one
// signer, as handshakes do, and checks every signature.
func TestSignConcurrently(t *testing.T) {
	s := openSSLSigner(t)
	pub := &testKey().PublicKey
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for i := range 8 {
				d := digestOf(crypto.SHA256, strings.Repeat("m", g*8+i))
				sig, err := s.Sign(rand.Reader, d, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash})
				if err == nil {
					err = rsa.VerifyPSS(pub, crypto.SHA256, d, sig, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestNew: the backend chosen for each setting, with libcrypto loading
// or not, what Wrap then does, and the metric saying which is in use.
func TestNew(t *testing.T) {
	missing := func() (string, error) { return loadLibrary("/nonexistent/libcrypto.so.3") }
	loads := func() (string, error) { return "OpenSSL 3.0.99 (test)", nil }
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		backend Backend
		load    func() (string, error)
		want    Backend // "" for an error
		log     string
	}{
		{"auto, libcrypto missing", Auto, missing, Go, "libcrypto did not load"},
		{"unset, libcrypto missing", "", missing, Go, "libcrypto did not load"},
		{"openssl, libcrypto missing", OpenSSL, missing, "", ""},
		{"go", Go, func() (string, error) { panic("go loads no libcrypto") }, Go, "rsa_signer: go"},
		{"auto, libcrypto loads", Auto, loads, OpenSSL, "OpenSSL 3.0.99"},
		{"openssl, libcrypto loads", OpenSSL, loads, OpenSSL, "OpenSSL 3.0.99"},
		{"misspelt", "OpenSSL", loads, "", ""},
	}
	for _, tt := range tests {
		var logs bytes.Buffer
		reg := prometheus.NewRegistry()
		s, err := newWith(Options{Backend: tt.backend, Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg}, tt.load)
		if tt.want == "" {
			if err == nil {
				t.Errorf("%s: chose %s, want an error", tt.name, s.Backend())
			}
			if tt.backend == OpenSSL && !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: error %v, want ErrUnavailable", tt.name, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		if s.Backend() != tt.want {
			t.Errorf("%s: backend %s, want %s", tt.name, s.Backend(), tt.want)
		}
		if !strings.Contains(logs.String(), tt.log) {
			t.Errorf("%s: log %q, want it to say %q", tt.name, logs.String(), tt.log)
		}
		if v := testmetrics.Sum(t, reg, "keyedge_rsa_signer_backend", map[string]string{"backend": string(tt.want)}); v != 1 {
			t.Errorf("%s: keyedge_rsa_signer_backend{backend=%q} = %v, want 1", tt.name, tt.want, v)
		}
		if tt.want == Go {
			if got := s.Wrap(testKey()); got != crypto.Signer(testKey()) {
				t.Errorf("%s: Wrap made a %T of an RSA key", tt.name, got)
			}
		}
		if got := s.Wrap(ecKey); got != crypto.Signer(ecKey) {
			t.Errorf("%s: Wrap made a %T of an ECDSA key", tt.name, got)
		}
	}
	var none *Signers
	if got := none.Wrap(testKey()); got != crypto.Signer(testKey()) {
		t.Errorf("nil Signers: Wrap made a %T", got)
	}
}

// TestWrapOpenSSL: with libcrypto, an RSA key becomes a *Signer of the
// same key.
func TestWrapOpenSSL(t *testing.T) {
	openSSLSigner(t)
	s, err := New(Options{Backend: OpenSSL, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	got, ok := s.Wrap(testKey()).(*Signer)
	if !ok {
		t.Fatalf("Wrap made a %T, want a *Signer", got)
	}
	if got.PrivateKey() != testKey() || !testKey().PublicKey.Equal(got.Public()) {
		t.Error("the *Signer holds another key")
	}
}
