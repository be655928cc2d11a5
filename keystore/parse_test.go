package keystore

import (
	"bytes"
	"os"
	"path"
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

// FuzzOpenSealed: only the genuine sealed key opens. The fuzzer shapes
// the header (recipient, suite) and damages the HPKE payload (one byte
// changed, a tail cut off) rather than mutating a 1 KB input, so its
// inputs stay small and cheap to minimise; the expensive setup (key
// generation, the seal) runs once. Seeds start from the genuine file,
// which opens.
func FuzzOpenSealed(f *testing.F) {
	k, err := GenerateFleetKey()
	if err != nil {
		f.Fatal(err)
	}
	good, err := sealTo(k.priv.PublicKey(), FleetRecipient, "id", []byte("key bytes"))
	if err != nil {
		f.Fatal(err)
	}
	h, payload, err := parseSealed(good)
	if err != nil {
		f.Fatal(err)
	}
	header := h.append(nil)
	f.Add(header, uint16(0), byte(0), uint16(0))
	f.Add(header, uint16(7), byte(1), uint16(0))
	f.Add(header, uint16(0), byte(0), uint16(16))
	f.Add(sealedHeader{policyRecipient + "0123", h.kem, h.kdf, h.aead}.append(nil), uint16(0), byte(0), uint16(0))
	f.Add(sealedHeader{FleetRecipient, h.kem, h.kdf, h.aead + 1}.append(nil), uint16(0), byte(0), uint16(0))
	f.Add([]byte("KES1\x05fleet"), uint16(0), byte(0), uint16(0))
	f.Fuzz(func(t *testing.T, header []byte, at uint16, xor byte, cut uint16) {
		ct := bytes.Clone(payload)
		ct[int(at)%len(ct)] ^= xor
		ct = ct[:len(ct)-int(cut)%len(ct)]
		data := append(bytes.Clone(header), ct...)
		h, ct, err := parseSealed(data)
		if err != nil {
			return
		}
		out, err := openWith(k.priv, h, ct, "id")
		if err != nil {
			return
		}
		if !bytes.Equal(data, good) || !bytes.Equal(out, []byte("key bytes")) {
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
