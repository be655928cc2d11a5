package secretfile

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"go/parser"
	"go/token"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadWrite(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := Write(path, []byte("secret")); err != nil {
		t.Fatal(err)
	}
	if err := Write(path, []byte("other")); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second Write: %v, want fs.ErrExist", err)
	}
	if got, err := Read(path); err != nil || string(got) != "secret" {
		t.Errorf("Read = %q, %v", got, err)
	}
	if !Exists(path) || Exists(filepath.Join(dir, "nope")) {
		t.Error("Exists is wrong")
	}

	// A Kubernetes Secret mounted for a non-root pod is root:fsGroup 0440;
	// running as root, this process is in the file's group.
	tests := []struct {
		mode fs.FileMode
		want bool
	}{
		{0o600, true},
		{0o400, true},
		{0o644, false},
		{0o604, false},
		{0o620, false},
		{0o660, false},
		{0o440, os.Geteuid() == 0},
	}
	for _, tt := range tests {
		if err := os.Chmod(path, tt.mode); err != nil {
			t.Fatal(err)
		}
		_, err := Read(path)
		if ok := err == nil; ok != tt.want {
			t.Errorf("mode %v: Read error %v, want readable = %v", tt.mode, err, tt.want)
		}
		if !tt.want && !errors.Is(err, ErrExposed) {
			t.Errorf("mode %v: %v, want ErrExposed", tt.mode, err)
		}
	}
}

// TestKeyPair: the key of a key pair is held to Read's rule; the
// certificate is not.
func TestKeyPair(t *testing.T) {
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "id.example"}, NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "id.pem"), filepath.Join(dir, "id.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := Write(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		mode fs.FileMode
		want error
	}{
		{0o600, nil},
		{0o644, ErrExposed},
		{0o604, ErrExposed},
	} {
		if err := os.Chmod(keyFile, tt.mode); err != nil {
			t.Fatal(err)
		}
		cert, err := KeyPair(certFile, keyFile)
		if !errors.Is(err, tt.want) || (tt.want == nil && cert.PrivateKey == nil) {
			t.Errorf("key mode %v: KeyPair error %v, want %v", tt.mode, err, tt.want)
		}
	}
	if _, err := KeyPair(filepath.Join(dir, "nope.pem"), keyFile); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing certificate: %v", err)
	}
}

// TestStandardLibraryOnly keeps this package importable by certs, which
// imports nothing else of ours (DESIGN.md, "Layout").
func TestStandardLibraryOnly(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(token.NewFileSet(), name, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			if path := strings.Trim(imp.Path.Value, `"`); strings.Contains(strings.SplitN(path, "/", 2)[0], ".") {
				t.Errorf("%s imports %s: secretfile must import only the standard library", name, path)
			}
		}
	}
}
