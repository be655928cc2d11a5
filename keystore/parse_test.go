package keystore

import (
	"bytes"
	"os"
	"path"
	"path/filepath"
	"strings"
	"testing"
)

// goldenFiles are the files of the golden keystore, by storage key.
func goldenFiles(tb testing.TB) map[string][]byte {
	tb.Helper()
	data, err := os.ReadFile(goldenKeystore)
	if err != nil {
		tb.Fatal(err)
	}
	return parseGolden(tb, data)
}

// The fuzz targets below feed stored files, as an attacker with write
// access to one tenant's files could shape them, to every parser. None
// may panic, and what parses must re-encode to an equivalent value.

func FuzzParseNameFile(f *testing.F) {
	f.Add([]byte("8c67909c044861fc915b78cf63f18099b494195e907e25304df2d5c3d217e212 ecdsa\n"))
	f.Add([]byte("x rsa\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		refs, err := parseNameFile(data)
		if err != nil {
			return
		}
		again, err := parseNameFile(formatNameFile(refs))
		if err != nil || len(again) != len(refs) {
			t.Fatalf("re-parse of %q: %v %v", data, again, err)
		}
	})
}

// FuzzParseRecord: the seeds are the golden keystore's records under
// their own IDs, so mutations of their meta parse and the success path
// is explored; what parses carries a leaf whose key hashes to the ID, and
// re-encodes to an encoding that is stable from then on.
func FuzzParseRecord(f *testing.F) {
	for key, data := range goldenFiles(f) {
		if strings.HasSuffix(key, "/record") {
			f.Add(path.Base(path.Dir(key)), data)
		}
	}
	f.Add("00", []byte(`{"tenant":"t","chain":["AAAA"]}`))
	f.Add("00", []byte(`{"chain":[]}`))
	f.Add("00", []byte(`{`))
	f.Fuzz(func(t *testing.T, id string, data []byte) {
		r, leaf, err := parseRecord(id, data)
		if err != nil {
			return
		}
		if r == nil || leaf == nil || CertID(leaf) != id {
			t.Fatalf("accepted a record for %q without its leaf", id)
		}
		out, err := r.marshal()
		if err != nil {
			t.Fatal(err)
		}
		again, _, err := parseRecord(id, out)
		if err != nil {
			t.Fatalf("re-parse of %q: %v", out, err)
		}
		if out2, err := again.marshal(); err != nil || !bytes.Equal(out, out2) {
			t.Fatalf("re-encoding is not stable: %q, then %q", out, out2)
		}
	})
}

// FuzzParseSealed: a sealed key file of either version that parses
// re-encodes to the very bytes it was parsed from, so no two files parse
// alike and nothing a parser skipped can hide in one.
func FuzzParseSealed(f *testing.F) {
	for key, data := range goldenFiles(f) {
		if strings.HasSuffix(key, "/key.sealed") {
			f.Add(data)
		}
	}
	v1, err := os.ReadFile(filepath.Join("testdata", "keystore-v1.golden"))
	if err != nil {
		f.Fatal(err)
	}
	for key, data := range parseGolden(f, v1) {
		if strings.HasSuffix(key, "/key.sealed") {
			f.Add(data)
		}
	}
	f.Add([]byte("KES2\x05fleet\x00\x01\x00\x02\x00\x03\x00\x01w"))
	f.Add([]byte("KES1\x05fleet"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sf, err := parseSealed(data)
		if err != nil {
			return
		}
		if out := sf.marshal(); !bytes.Equal(out, data) {
			t.Fatalf("parsed %x, re-encoded %x", data, out)
		}
	})
}

// FuzzOpenSealed: only the genuine sealed key opens, in either version.
// The fuzzer shapes the header (recipient, suite) and damages the rest
// (one byte changed, a tail cut off) rather than mutating a 1 KB input,
// so its inputs stay small and cheap to minimise; the expensive setup
// (key generation, the seals) runs once. Seeds start from the genuine
// files, which open.
func FuzzOpenSealed(f *testing.F) {
	k, err := GenerateFleetKey()
	if err != nil {
		f.Fatal(err)
	}
	v1, err := sealV1(k.priv.PublicKey(), FleetRecipient, "id", []byte("key bytes"))
	if err != nil {
		f.Fatal(err)
	}
	v2, err := newOpener().seal(k.priv.PublicKey(), FleetRecipient, "id", []byte("key bytes"))
	if err != nil {
		f.Fatal(err)
	}
	goods := [][]byte{v1, v2}
	var header, payload [2][]byte
	for i, good := range goods {
		sf, err := parseSealed(good)
		if err != nil {
			f.Fatal(err)
		}
		header[i] = sf.append(nil, string(good[:4]))
		payload[i] = good[len(header[i]):]
	}
	for v := range byte(2) {
		f.Add(v, header[v], uint16(0), byte(0), uint16(0))
		f.Add(v, header[v], uint16(7), byte(1), uint16(0))
		f.Add(v, header[v], uint16(0), byte(0), uint16(16))
		f.Add(v, header[v], uint16(1200), byte(1), uint16(0)) // the nonce, or a ciphertext byte
		f.Add(v, sealedHeader{policyRecipient + "0123", sealKEM.ID(), sealKDF.ID(), sealAEAD.ID()}.append(nil, string(goods[v][:4])), uint16(0), byte(0), uint16(0))
		f.Add(v, sealedHeader{FleetRecipient, sealKEM.ID(), sealKDF.ID(), sealAEAD.ID() + 1}.append(nil, string(goods[v][:4])), uint16(0), byte(0), uint16(0))
	}
	f.Add(byte(0), []byte("KES1\x05fleet"), uint16(0), byte(0), uint16(0))
	f.Add(byte(1), []byte("KES2\x05fleet"), uint16(0), byte(0), uint16(0))
	opener := newOpener()
	f.Fuzz(func(t *testing.T, v byte, header []byte, at uint16, xor byte, cut uint16) {
		v %= 2
		ct := bytes.Clone(payload[v])
		ct[int(at)%len(ct)] ^= xor
		ct = ct[:len(ct)-int(cut)%len(ct)]
		data := append(bytes.Clone(header), ct...)
		sf, err := parseSealed(data)
		if err != nil {
			return
		}
		out, err := opener.open(k.priv, sf, "id")
		if err != nil {
			return
		}
		if !bytes.Equal(data, goods[0]) && !bytes.Equal(data, goods[1]) || !bytes.Equal(out, []byte("key bytes")) {
			t.Fatalf("opened an altered sealed key %x to %q", data, out)
		}
	})
}

func FuzzParseChange(f *testing.F) {
	f.Add([]byte("name a.example.com\nid 8c67909c044861fc915b78cf63f18099b494195e907e25304df2d5c3d217e212\n"))
	f.Add([]byte("name ../x\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := parseChange(data)
		if err != nil {
			return
		}
		again, err := parseChange(c.marshal())
		if err != nil || len(again.names) != len(c.names) || len(again.ids) != len(c.ids) {
			t.Fatalf("re-parse of %q: %v %v", data, again, err)
		}
	})
}

// FuzzParseTenantSettings: what keyctl's parsers of per-tenant settings
// accept (an HSTS policy, a header rule) prints back to a string they
// parse to the same value; nothing panics on any input.
func FuzzParseTenantSettings(f *testing.F) {
	for _, s := range []string{"max-age=31536000,includeSubDomains,preload", "max-age=0", "set:X-Tenant:a:b", "add:X-A:1", "remove:Cookie", "remove:Cookie:x", "set:Host:h", "http://10.0.0.7:8080=3", "https://a.example", "100/s"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if h, err := ParseHSTS(s); err == nil {
			again, err := ParseHSTS(h.String())
			if err != nil || *again != *h {
				t.Fatalf("HSTS %q printed as %q parses to %+v, %v; want %+v", s, h.String(), again, err, *h)
			}
		}
		if r, err := ParseHeaderRule(s); err == nil {
			again, err := ParseHeaderRule(r.String())
			if err != nil || again != r {
				t.Fatalf("header rule %q printed as %q parses to %+v, %v; want %+v", s, r.String(), again, err, r)
			}
		}
		ParseOriginTarget(s)
		ParseRateLimit(s, 1)
	})
}
