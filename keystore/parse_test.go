package keystore

import (
	"bytes"
	"testing"
)

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

func FuzzParseRecord(f *testing.F) {
	f.Add([]byte(`{"tenant":"t","chain":["AAAA"]}`))
	f.Add([]byte(`{"chain":[]}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r, leaf, err := parseRecord("00", data)
		if err == nil && (r == nil || leaf == nil) {
			t.Fatal("nil record without error")
		}
	})
}

func FuzzOpenSealed(f *testing.F) {
	k, err := GenerateFleetKey()
	if err != nil {
		f.Fatal(err)
	}
	good, err := sealTo(k.priv.PublicKey(), FleetRecipient, "id", []byte("key bytes"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte("KES1"))
	f.Add([]byte("KES1\x05fleet"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, ct, err := parseSealed(data)
		if err != nil {
			return
		}
		out, err := openWith(k.priv, h, ct, "id")
		if err == nil && !bytes.Equal(out, []byte("key bytes")) {
			t.Fatalf("opened forged input to %q", out)
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
