package keystore_test

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// TestCorruptFiles damages one tenant's files in every way we know and
// checks that only that tenant fails, with an error naming it and the
// file, counted and logged once, and that nothing is deleted. Each
// case runs on a keystore as written now, where the sealed key is the
// record's last section (the key damage is done to that section, then
// written back: the error names the record), and on one in the layout
// before, the key in key.sealed beside a JSON record.
func TestCorruptFiles(t *testing.T) {
	tests := []struct {
		name    string
		damage  func(t *testing.T, p paths)
		inKey   bool   // the failure shows in PrivateKey, not Lookup
		file    string // storage kind named in the error
		counter string
	}{
		{"name garbage", func(t *testing.T, p paths) { write(t, p.name, "hello\n") }, false, "names/", "name"},
		{"name empty", func(t *testing.T, p paths) { write(t, p.name, "") }, false, "names/", "name"},
		{"name truncated", func(t *testing.T, p paths) { truncateFile(t, p.name) }, false, "names/", "name"},
		{"record garbage", func(t *testing.T, p paths) { write(t, p.record, "{not json") }, false, "/record", "record"},
		{"record truncated", func(t *testing.T, p paths) { truncateFile(t, p.record) }, false, "/record", "record"},
		{"record of another cert", func(t *testing.T, p paths) { copyFile(t, p.otherRecord, p.record) }, false, "/record", "record"},
		{"record missing", func(t *testing.T, p paths) { os.Remove(p.record) }, false, "/record", "record"},
		{"key garbage", func(t *testing.T, p paths) { write(t, p.key, "garbage") }, true, "/key.sealed", "key"},
		{"key truncated", func(t *testing.T, p paths) { truncateFile(t, p.key) }, true, "/key.sealed", "key"},
		{"key tampered", func(t *testing.T, p paths) { flipByte(t, p.key, -1) }, true, "/key.sealed", "key"},
		// Byte 40 is in the wrapped data key, which the bystander's file
		// holds intact: its key still opens.
		{"key's data key tampered", func(t *testing.T, p paths) { flipByte(t, p.key, 40) }, true, "/key.sealed", "key"},
		{"key's nonce tampered", func(t *testing.T, p paths) { flipByte(t, p.key, nonceOffset(t, p.key)) }, true, "/key.sealed", "key"},
		{"key of another cert", func(t *testing.T, p paths) { copyFile(t, p.otherKey, p.key) }, true, "/key.sealed", "key"},
		{"key missing", func(t *testing.T, p paths) { os.Remove(p.key) }, true, "/key.sealed", "key"},
	}
	for _, split := range []bool{false, true} {
		for _, tt := range tests {
			layout := "key in record"
			if split {
				layout = "key.sealed"
			}
			t.Run(layout+"/"+tt.name, func(t *testing.T) {
				testCorruptFile(t, split, tt.damage, tt.inKey, tt.file, tt.counter)
			})
		}
	}
}

type paths struct{ name, record, key, otherRecord, otherKey string }

func testCorruptFile(t *testing.T, split bool, damage func(t *testing.T, p paths), inKey bool, file, counter string) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	ids := put(t, w, f.bundle(t, "", "victim.example.com"), f.bundle(t, "", "bystander.example.com"))
	p := paths{
		name:        filepath.Join(f.dir, "names", h2("victim.example.com"), "victim.example.com"),
		record:      filepath.Join(f.dir, "certs", ids[0][:2], ids[0], "record"),
		key:         filepath.Join(f.dir, "certs", ids[0][:2], ids[0], "key.sealed"),
		otherRecord: filepath.Join(f.dir, "certs", ids[1][:2], ids[1], "record"),
		otherKey:    filepath.Join(f.dir, "certs", ids[1][:2], ids[1], "key.sealed"),
	}
	if split {
		if err := keystore.SplitKeys(f.dir); err != nil {
			t.Fatal(err)
		}
		damage(t, p)
	} else {
		// The keys, taken out of their records to be damaged as files.
		scratch := t.TempDir()
		p.key, p.otherKey = filepath.Join(scratch, "key"), filepath.Join(scratch, "other")
		for _, k := range [][2]string{{p.record, p.key}, {p.otherRecord, p.otherKey}} {
			sealed, err := keystore.SealedKey(k[0])
			if err != nil {
				t.Fatal(err)
			}
			write(t, k[1], string(sealed))
		}
		damage(t, p)
		if inKey {
			sealed, err := os.ReadFile(p.key)
			if err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
			if err := keystore.SetSealedKey(p.record, sealed); err != nil {
				t.Fatal(err)
			}
			file = "/record"
		}
	}
	before := listFiles(t, f.dir)

	logs := &logCounter{}
	reg := prometheus.NewRegistry()
	s := f.open(t, keystore.Options{Logger: slog.New(logs), Registerer: reg, NegativeTTL: time.Millisecond})
	ctx := context.Background()
	var err error
	for range 3 { // failures are re-read after NegativeTTL but logged once
		var e *keystore.Entry
		e, err = s.Lookup(ctx, "victim.example.com")
		if inKey {
			if err != nil {
				t.Fatalf("Lookup: %v (key damage must not fail the lookup)", err)
			}
			_, err = e.Certs[0].PrivateKey(ctx)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !errors.Is(err, keystore.ErrCorrupt) {
		t.Fatalf("error = %v, want ErrCorrupt", err)
	}
	if !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "victim.example.com") && !strings.Contains(err.Error(), ids[0]) {
		t.Errorf("error %q does not name the tenant and %s", err, file)
	}
	if n := logs.errs.Load(); n != 1 {
		t.Errorf("logged %d errors for one bad file, want 1", n)
	}
	if m := gather(t, reg); m[`keyedge_keystore_load_errors_total{file="`+counter+`"}`] < 1 {
		t.Errorf("load error not counted under file=%q: %v", counter, m)
	}
	if strings.Contains(logs.buf.String(), "PRIVATE KEY") {
		t.Error("log mentions key material")
	}

	e, err := s.Lookup(ctx, "bystander.example.com")
	if err != nil {
		t.Fatalf("bystander affected: %v", err)
	}
	if _, err := e.Certs[0].PrivateKey(ctx); err != nil {
		t.Fatalf("bystander key affected: %v", err)
	}
	if after := listFiles(t, f.dir); after != before {
		t.Errorf("files changed by reading a corrupt tenant:\n%s\nbecame\n%s", before, after)
	}
}

func TestOtherFleetKeyCannotOpen(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	put(t, w, f.bundle(t, "", "fleet.example.com"))
	otherFleet, err := keystore.GenerateFleetKey()
	if err != nil {
		t.Fatal(err)
	}
	s := f.open(t, keystore.Options{FleetKey: otherFleet})
	e, err := s.Lookup(context.Background(), "fleet.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Certs[0].PrivateKey(context.Background()); !errors.Is(err, keystore.ErrCorrupt) {
		t.Fatalf("PrivateKey with another fleet's key: %v, want ErrCorrupt", err)
	}
}

func h2(name string) string {
	sum := sha256.Sum256([]byte(name))
	return hex.EncodeToString(sum[:1])
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

func truncateFile(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	write(t, path, string(b[:len(b)/2]))
}

// flipByte flips the low bit of a file's byte at, counted from the end
// when negative.
func flipByte(t *testing.T, path string, at int) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if at < 0 {
		at += len(b)
	}
	b[at] ^= 1
	write(t, path, string(b))
}

// nonceOffset is where the nonce of a KES2 sealed key file starts: after
// magic, recipient, suite and the length-prefixed wrapped data key.
func nonceOffset(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(b[:4]) != "KES2" {
		t.Fatalf("%s is not a KES2 file", path)
	}
	at := 4 + 1 + int(b[4]) + 6
	return at + 2 + int(binary.BigEndian.Uint16(b[at:]))
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	write(t, to, string(b))
}

// listFiles describes every file under dir (path and size), to detect
// any change.
func listFiles(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		b.WriteString(rel + " " + fi.ModTime().String() + "\n")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// Swapped name files (each tenant's name pointing at the other's
// certificate) serve neither tenant the other's certificate: a name whose
// certificate does not cover it is corrupt for that name, counted and
// logged once, and a wildcard is checked under its wildcard name.
func TestNameFilesSwapped(t *testing.T) {
	f := newFixture(t)
	w := f.open(t, keystore.Options{})
	put(t, w, f.bundle(t, "", "a.example.com"), f.bundle(t, "", "*.b.example.com"))
	nameFile := func(n string) string { return filepath.Join(f.dir, "names", h2(n), n) }
	a, err := os.ReadFile(nameFile("a.example.com"))
	if err != nil {
		t.Fatal(err)
	}
	copyFile(t, nameFile("*.b.example.com"), nameFile("a.example.com"))
	write(t, nameFile("*.b.example.com"), string(a))

	logs := &logCounter{}
	reg := prometheus.NewRegistry()
	s := f.open(t, keystore.Options{Logger: slog.New(logs), Registerer: reg, NegativeTTL: time.Hour})
	for range 3 {
		for _, sni := range []string{"a.example.com", "x.b.example.com"} {
			e, err := s.Lookup(context.Background(), sni)
			if !errors.Is(err, keystore.ErrCorrupt) {
				var served []string
				if e != nil {
					served = e.Certs[0].Leaf.DNSNames
				}
				t.Fatalf("Lookup(%s) with swapped name files = %v (serving %v), want ErrCorrupt", sni, err, served)
			}
			if !strings.Contains(err.Error(), "does not cover") {
				t.Errorf("Lookup(%s): %v, want it to say the certificate does not cover the name", sni, err)
			}
		}
	}
	if n := logs.errs.Load(); n != 2 {
		t.Errorf("%d errors logged for two corrupt names looked up 3 times each, want 2", n)
	}
	if n := counterSum(t, reg, "keyedge_keystore_load_errors_total"); n != 2 {
		t.Errorf("keyedge_keystore_load_errors_total = %v, want 2", n)
	}
}
