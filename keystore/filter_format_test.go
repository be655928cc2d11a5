package keystore

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"flag"
	"hash/crc32"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files in testdata (namefilter.hex, keystore.golden) from the encoders")

// TestNameFilterFormat pins the stored filter's bytes (the layout and
// the hash functions every node must agree on) and checks that every
// single-byte change and every truncation is refused, never parsed into
// a filter that could hide a tenant.
func TestNameFilterFormat(t *testing.T) {
	names := []string{"shop.example.com", "*.apps.example.com", "xn--bcher-kva.example"}
	f := newNameFilter(0)
	f.add(names...)
	data, err := f.marshal()
	if err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "namefilter.hex")
	if *updateGolden {
		if err := os.WriteFile(golden, []byte(hex.Dump(data)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create)", err)
	}
	if got := hex.Dump(data); got != string(want) {
		t.Errorf("name filter encoding changed (a fleet would disagree on it); run go test -update only for a deliberate format change:\n%s", got)
	}

	g, err := parseNameFilter(data)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !g.mayContain(n) {
			t.Errorf("parsed filter lost %s", n)
		}
	}
	if g.capacity != f.capacity || g.size() != 3 {
		t.Errorf("parsed capacity %d size %d, want %d 3", g.capacity, g.size(), f.capacity)
	}
	for i := range data {
		bad := bytes.Clone(data)
		bad[i] ^= 0x01
		if _, err := parseNameFilter(bad); err == nil {
			t.Fatalf("byte %d flipped: parsed", i)
		}
	}
	for n := range len(data) {
		if _, err := parseNameFilter(data[:n]); err == nil {
			t.Fatalf("truncated to %d bytes: parsed", n)
		}
	}
}

// TestNameFilterSizing: a filter at its capacity keeps its false-positive
// rate near filterFPR; past it, full reports it so writers grow it.
func TestNameFilterSizing(t *testing.T) {
	f := newNameFilter(10_000)
	for i := range 10_000 {
		f.add("t" + strconv.Itoa(i) + ".example.com")
	}
	if f.full() {
		t.Fatal("full at its capacity")
	}
	fp := 0
	for i := range 100_000 {
		if f.mayContain("unknown-" + strconv.Itoa(i) + ".example.net") {
			fp++
		}
	}
	if rate := float64(fp) / 100_000; rate > 2*filterFPR {
		t.Errorf("false-positive rate at capacity %.4f, want about %.4f", rate, filterFPR)
	}
	for i := range 1000 { // 10% more: a few of the first 10,000 were false positives
		f.add("more-" + strconv.Itoa(i) + ".example.com")
	}
	if !f.full() {
		t.Error("not full past its capacity")
	}
}

// FuzzParseNameFilter: no input crashes the parser or makes it allocate
// beyond the input's size, and what it accepts re-encodes to the input.
// The fuzzer shapes the filter's body and the checksum is appended here:
// mutations then reach the dimension checks and the bit set instead of
// all stopping at the checksum (TestNameFilterFormat checks that a bad
// checksum is refused).
func FuzzParseNameFilter(f *testing.F) {
	nf := newNameFilter(0)
	nf.add("a.example.com")
	data, err := nf.marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(data[:len(data)-4])
	f.Add([]byte(filterMagic))
	f.Fuzz(func(t *testing.T, body []byte) {
		data := binary.BigEndian.AppendUint32(bytes.Clone(body), crc32.Checksum(body, crc32c))
		g, err := parseNameFilter(data)
		if err != nil {
			return
		}
		out, err := g.marshal()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("accepted input re-encodes differently")
		}
	})
}
