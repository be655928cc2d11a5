package wire

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/*.hex from the encoder")

// goldenMessages are the vectors in testdata: one request per opcode,
// with and without routing items, and one response per status and
// error code.
func goldenMessages() map[string]*Message {
	ski := bytes.Repeat([]byte{0x5C}, 20)
	ms := map[string]*Message{
		"ping":        {ID: 1, Opcode: OpPing, Payload: []byte("hello")},
		"pong":        {ID: 1, Opcode: OpPong, Payload: []byte("hello")},
		"response":    {ID: 7, Opcode: OpResponse, Payload: bytes.Repeat([]byte{0x30}, 72)},
		"rsa-decrypt": {ID: 9, Opcode: OpRSADecrypt, Payload: bytes.Repeat([]byte{0x11}, 256), SKI: ski},
		// Every item we model; TestReferenceEncoding builds the same
		// frame by hand, the way the reference implementation does.
		"full-request": {
			ID: 0x01020304, Opcode: OpECDSASignSHA256, Payload: bytes.Repeat([]byte{0xAB}, 32), SKI: ski,
			CertDigest: bytes.Repeat([]byte{0xCD}, 32),
			ClientIP:   netip.MustParseAddr("192.0.2.1"), ServerIP: netip.MustParseAddr("2001:db8::1"),
			SNI: "shop.example.com", CertID: "c1", CustomFuncName: "fn",
			ExtraPayload: []byte{0xE1, 0xE2, 0xE3}, RequestContext: []byte{0xC0, 0xC1},
			ComplianceRegion: ComplianceRegionFedRAMPHigh,
		},
	}
	for op := Op(0); op < 0xFF; op++ {
		if op.IsSign() {
			payload := []byte("message to sign")
			if h := op.Hash(); h != 0 {
				payload = bytes.Repeat([]byte{0xAB}, h.Size())
			}
			ms["sign-"+op.String()] = &Message{ID: uint32(op), Opcode: op, Payload: payload, SKI: ski}
		}
	}
	for e := range errorText {
		ms[fmt.Sprintf("error-%02x", byte(e))] = ErrorResponse(42, e)
	}
	return ms
}

func TestGolden(t *testing.T) {
	for name, m := range goldenMessages() {
		path := filepath.Join("testdata", name+".hex")
		got, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if *update {
			if err := os.WriteFile(path, []byte(hexLines(got)), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		text, err := os.ReadFile(path)
		if err != nil {
			t.Fatalf("%s: %v (run go test -update to create)", name, err)
		}
		want, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoding differs from %s", name, path)
		}
		// Decode the vector and compare with the message it encodes.
		var back Message
		h, _ := ParseHeader(want)
		if err := back.UnmarshalBody(h, want[HeaderLen:]); err != nil {
			t.Fatalf("%s: decoding the vector: %v", name, err)
		}
		if !reflect.DeepEqual(&back, m) {
			t.Errorf("%s: decoded\n%+v\nwant\n%+v", name, &back, m)
		}
	}
}

func hexLines(b []byte) string {
	var s strings.Builder
	for len(b) > 0 {
		n := min(32, len(b))
		s.WriteString(hex.EncodeToString(b[:n]) + "\n")
		b = b[n:]
	}
	return s.String()
}

// TestLayoutByHand pins the byte layout without trusting the encoder:
// a ping with payload "hi" and ID 0x0A0B0C0D, built from the spec.
func TestLayoutByHand(t *testing.T) {
	body := []byte{0x11, 0x00, 0x01, 0xF1, 0x12, 0x00, 0x02, 'h', 'i'}
	pad := PaddedLen - HeaderLen - len(body) - 3
	body = append(body, 0x20, byte(pad>>8), byte(pad))
	body = append(body, make([]byte, pad)...)
	want := append([]byte{0x01, 0x00, byte(len(body) >> 8), byte(len(body)), 0x0A, 0x0B, 0x0C, 0x0D}, body...)

	got, err := (&Message{ID: 0x0A0B0C0D, Opcode: OpPing, Payload: []byte("hi")}).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("ping encodes as\n%x\nwant\n%x", got[:24], want[:24])
	}
	if len(got) != PaddedLen {
		t.Errorf("padded to %d bytes, want %d", len(got), PaddedLen)
	}
}

func TestPaddingBoundaries(t *testing.T) {
	// Opcode item (4 bytes) + payload item (3+n) + header 8.
	for n := 990; n < 1030; n++ {
		m := &Message{Opcode: OpResponse, Payload: make([]byte, n)}
		b, err := m.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if len(b) < PaddedLen {
			t.Errorf("payload %d: message of %d bytes, under %d", n, len(b), PaddedLen)
		}
		var back Message
		h, _ := ParseHeader(b)
		if err := back.UnmarshalBody(h, b[HeaderLen:]); err != nil || len(back.Payload) != n {
			t.Errorf("payload %d: round trip: %v", n, err)
		}
	}
	if _, err := (&Message{Payload: make([]byte, MaxBody)}).MarshalBinary(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized message: %v, want ErrTooLarge", err)
	}
}

func TestDecodeErrors(t *testing.T) {
	frame := func(major byte, items ...[]byte) []byte {
		body := bytes.Join(items, nil)
		return append([]byte{major, 0, byte(len(body) >> 8), byte(len(body)), 0, 0, 0, 5}, body...)
	}
	op := []byte{0x11, 0, 1, 0x15}
	tests := []struct {
		name  string
		frame []byte
		want  error
	}{
		{"version 2", frame(2, op), ErrVersionMismatch},
		{"no opcode", frame(1, []byte{0x12, 0, 1, 0}), ErrFormat},
		{"opcode of two bytes", frame(1, []byte{0x11, 0, 2, 1, 2}), ErrFormat},
		{"repeated opcode", frame(1, op, op), ErrFormat},
		{"item past the end", frame(1, op, []byte{0x12, 0, 9, 1}), ErrFormat},
		{"stray bytes", frame(1, op, []byte{0x12, 0}), ErrFormat},
		{"short SKI", frame(1, op, []byte{0x04, 0, 2, 1, 2}), ErrFormat},
		{"short digest", frame(1, op, []byte{0x01, 0, 1, 1}), ErrFormat},
		{"5-byte IP", frame(1, op, []byte{0x03, 0, 5, 1, 2, 3, 4, 5}), ErrFormat},
		{"empty compliance region", frame(1, op, []byte{0x17, 0, 0}), ErrFormat},
		{"2-byte compliance region", frame(1, op, []byte{0x17, 0, 2, 'e', 'u'}), ErrFormat},
	}
	for _, tt := range tests {
		var m Message
		h, _ := ParseHeader(tt.frame)
		err := m.UnmarshalBody(h, tt.frame[HeaderLen:])
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if h.ID != 5 {
			t.Errorf("%s: header ID lost", tt.name)
		}
	}
	// Unknown tags are skipped.
	var m Message
	f := frame(1, op, []byte{0x7E, 0, 2, 9, 9}, []byte{0x20, 0, 1, 0})
	h, _ := ParseHeader(f)
	if err := m.UnmarshalBody(h, f[HeaderLen:]); err != nil || m.Opcode != OpECDSASignSHA256 {
		t.Errorf("unknown tag: %v, %v", err, m.Opcode)
	}
}

func TestReadMessage(t *testing.T) {
	var stream bytes.Buffer
	for id := range uint32(3) {
		b, _ := (&Message{ID: id, Opcode: OpPing, Payload: []byte{byte(id)}}).MarshalBinary()
		stream.Write(b)
	}
	var buf []byte
	for id := range uint32(3) {
		m, h, err := ReadMessage(&stream, &buf)
		if err != nil || m.ID != id || h.ID != id || m.Payload[0] != byte(id) {
			t.Fatalf("message %d: %+v %v", id, m, err)
		}
	}
	// Truncated in the header and in the body.
	full, _ := (&Message{Opcode: OpPing}).MarshalBinary()
	for _, n := range []int{3, HeaderLen + 10} {
		if _, _, err := ReadMessage(bytes.NewReader(full[:n]), &buf); err == nil {
			t.Errorf("truncated at %d: no error", n)
		}
	}
}

func TestSignOp(t *testing.T) {
	rsaPub := &rsa.PublicKey{}
	ecPub := &ecdsa.PublicKey{}
	edPub := ed25519.PublicKey{}
	tests := []struct {
		pub  crypto.PublicKey
		opts crypto.SignerOpts
		want Op
	}{
		{rsaPub, crypto.SHA256, OpRSASignSHA256},
		{rsaPub, crypto.MD5SHA1, OpRSASignMD5SHA1},
		{rsaPub, &rsa.PSSOptions{Hash: crypto.SHA384, SaltLength: rsa.PSSSaltLengthEqualsHash}, OpRSAPSSSignSHA384},
		{ecPub, crypto.SHA512, OpECDSASignSHA512},
		{ecPub, crypto.SHA1, OpECDSASignSHA1},
		{edPub, crypto.Hash(0), OpEd25519Sign},
	}
	for _, tt := range tests {
		got, err := SignOp(tt.pub, tt.opts)
		if err != nil || got != tt.want {
			t.Errorf("SignOp(%T, %v) = %v, %v; want %v", tt.pub, tt.opts.HashFunc(), got, err, tt.want)
		}
		if got.Hash() != tt.opts.HashFunc() {
			t.Errorf("%v.Hash() = %v, want %v", got, got.Hash(), tt.opts.HashFunc())
		}
	}
	for _, bad := range []struct {
		pub  crypto.PublicKey
		opts crypto.SignerOpts
	}{
		{rsaPub, &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthAuto}},
		{rsaPub, &rsa.PSSOptions{Hash: crypto.SHA1}},
		{edPub, crypto.SHA256},
		{"not a key", crypto.SHA256},
	} {
		if _, err := SignOp(bad.pub, bad.opts); !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("SignOp(%T, %v): %v, want ErrUnsupportedKey", bad.pub, bad.opts, err)
		}
	}
}

func TestResponseError(t *testing.T) {
	if err := ErrorResponse(1, ErrKeyNotFound).ResponseError(); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("error response: %v", err)
	}
	if err := (&Message{Opcode: OpResponse}).ResponseError(); err != nil {
		t.Errorf("ok response: %v", err)
	}
	if err := (&Message{Opcode: OpECDSASignSHA256}).ResponseError(); !errors.Is(err, ErrUnexpectedOpcode) {
		t.Errorf("request opcode in a response: %v", err)
	}
}

// FuzzReadMessage: decoding never panics, never reads past the declared
// length, and what decodes re-encodes to a message that decodes equal.
func FuzzReadMessage(f *testing.F) {
	for _, m := range goldenMessages() {
		b, _ := m.MarshalBinary()
		f.Add(b)
	}
	f.Add([]byte{1, 0, 0, 4, 0, 0, 0, 1, 0x11, 0, 1})
	f.Fuzz(func(t *testing.T, data []byte) {
		var buf []byte
		r := bytes.NewReader(data)
		m, _, err := ReadMessage(r, &buf)
		if err != nil {
			return
		}
		if cap(buf) > HeaderLen+MaxBody+PaddedLen {
			t.Fatalf("buffer grew to %d", cap(buf))
		}
		b, err := m.MarshalBinary()
		if err != nil {
			return // e.g. padding pushed a near-maximal body over the limit
		}
		m2, _, err := ReadMessage(bytes.NewReader(b), new([]byte))
		if err != nil {
			t.Fatalf("re-encoded message does not decode: %v", err)
		}
		if !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip changed the message:\n%+v\n%+v", m, m2)
		}
	})
}

// referenceFullRequest is the full-request vector built byte by byte the
// way the reference implementation marshals a packet, without our
// encoder: github.com/cloudflare/gokeyless, protocol/protocol.go,
// Packet.MarshalBinary → Header.MarshalBinary then
// Operation.MarshalBinary. That function writes one TLV per non-empty
// field in this order: opcode 0x11, payload 0x12, extra 0x14, SKI 0x04,
// certificate digest 0x01, client IP 0x03 (4 bytes for an IPv4
// address), server IP 0x05, SNI 0x02, certificate ID 0x06, custom
// function name 0x13, (Jaeger span 0x15, which we do not model), request
// context 0x16, compliance region 0x17 (one byte, omitted when 0); then,
// when header+body is under 1024 bytes, one padding item 0x20 of
// 1024-8-len(body)-3 zero bytes (0 when that is negative). The header is
// major 1, minor 0, body length (uint16), ID (uint32), big-endian.
func referenceFullRequest() []byte {
	item := func(tag byte, data ...byte) []byte {
		return append([]byte{tag, byte(len(data) >> 8), byte(len(data))}, data...)
	}
	str := func(tag byte, s string) []byte { return item(tag, []byte(s)...) }
	body := bytes.Join([][]byte{
		item(0x11, 0x15), // ECDSA-SHA256
		item(0x12, bytes.Repeat([]byte{0xAB}, 32)...),
		item(0x14, 0xE1, 0xE2, 0xE3),
		item(0x04, bytes.Repeat([]byte{0x5C}, 20)...),
		item(0x01, bytes.Repeat([]byte{0xCD}, 32)...),
		item(0x03, 192, 0, 2, 1),
		item(0x05, 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1),
		str(0x02, "shop.example.com"),
		str(0x06, "c1"),
		str(0x13, "fn"),
		item(0x16, 0xC0, 0xC1),
		item(0x17, 0x01), // FedRAMP High
	}, nil)
	pad := max(1024-8-len(body)-3, 0)
	body = append(body, item(0x20, make([]byte, pad)...)...)
	return append([]byte{0x01, 0x00, byte(len(body) >> 8), byte(len(body)), 0x01, 0x02, 0x03, 0x04}, body...)
}

// TestReferenceEncoding pins byte equality with the reference encoder:
// the golden full-request vector is the hand-built reference frame, and
// decoding that frame and encoding it again gives the same bytes.
func TestReferenceEncoding(t *testing.T) {
	want := referenceFullRequest()
	text, err := os.ReadFile(filepath.Join("testdata", "full-request.hex"))
	if err != nil {
		t.Fatal(err)
	}
	golden, err := hex.DecodeString(strings.Join(strings.Fields(string(text)), ""))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(golden, want) {
		t.Errorf("testdata/full-request.hex is not the reference encoding:\n got %x\nwant %x", golden[:160], want[:160])
	}
	m, _, err := ReadMessage(bytes.NewReader(want), new([]byte))
	if err != nil {
		t.Fatalf("decoding the reference frame: %v", err)
	}
	got, err := m.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("re-encoding the reference frame differs:\n got %x\nwant %x", got[:160], want[:160])
	}
}

// TestRepeatedTags: as the package documents, a known tag twice is a
// format error (padding included: the reference writes one), and unknown
// tags are skipped however often they occur.
func TestRepeatedTags(t *testing.T) {
	one := map[Tag][]byte{
		TagCertDigest: make([]byte, 32), TagSNI: []byte("a"), TagClientIP: {1, 2, 3, 4},
		TagSKI: make([]byte, 20), TagServerIP: {1, 2, 3, 4}, TagCertID: []byte("c"),
		TagPayload: {1}, TagCustomFuncName: []byte("f"), TagExtraPayload: {1},
		TagRequestContext: {1}, TagComplianceRegion: {1}, TagPadding: {},
	}
	decode := func(items ...[]byte) error {
		body := append([]byte{byte(TagOpcode), 0, 1, byte(OpPing)}, bytes.Join(items, nil)...)
		var m Message
		return m.UnmarshalBody(Header{Major: 1, Length: uint16(len(body))}, body)
	}
	item := func(tag Tag, data []byte) []byte {
		return append([]byte{byte(tag), byte(len(data) >> 8), byte(len(data))}, data...)
	}
	for tag, data := range one {
		if err := decode(item(tag, data)); err != nil {
			t.Errorf("tag %#02x once: %v", byte(tag), err)
		}
		if err := decode(item(tag, data), item(tag, data)); !errors.Is(err, ErrFormat) {
			t.Errorf("tag %#02x twice: %v, want ErrFormat", byte(tag), err)
		}
	}
	// 0x15 (the reference's Jaeger span) and 0x7E are not ours to read.
	for _, tag := range []Tag{0x15, 0x7E} {
		if err := decode(item(tag, []byte{9}), item(tag, []byte{9, 9})); err != nil {
			t.Errorf("unknown tag %#02x twice: %v, want it skipped", byte(tag), err)
		}
	}
}
