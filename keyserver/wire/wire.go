// Package wire encodes and decodes messages of the Keyless SSL protocol,
// version 1.0, as spoken by Cloudflare's keyless client and gokeyless
// servers. It does no I/O policy: framing in and out of a stream, and
// nothing else.
//
// A message is an 8-byte header and a body of items:
//
//	header  major(1)=0x01  minor(1)=0x00  length(2)  id(4)     big-endian
//	item    tag(1)  length(2)  data(length)
//
// The header's length counts the body only. Every message is padded with
// one padding item (tag 0x20, zero bytes) so that header and body
// together are at least 1024 bytes, hiding the size of what is signed.
// Items are written in the order gokeyless writes them, so a message
// encodes to the same bytes as in the reference implementation.
// Decoding skips unknown tags, however often they occur, and refuses a
// known tag (padding included) seen twice. A body is at most 65535
// bytes, the most the length field can say, so a reader never allocates
// more than that for one message.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/netip"
)

// Protocol constants.
const (
	VersionMajor = 0x01
	VersionMinor = 0x00
	HeaderLen    = 8
	// PaddedLen is the minimum size of an encoded message, header included.
	PaddedLen = 1024
	// MaxBody is the largest body the header's length field can describe.
	MaxBody = 0xFFFF
)

// Tag identifies an item.
type Tag byte

// Item tags.
const (
	TagCertDigest       Tag = 0x01 // SHA-256 digest of the certificate's key (32 bytes)
	TagSNI              Tag = 0x02 // server name the client asked for
	TagClientIP         Tag = 0x03 // 4 or 16 bytes
	TagSKI              Tag = 0x04 // SHA-1 of the public key bits (20 bytes)
	TagServerIP         Tag = 0x05 // 4 or 16 bytes
	TagCertID           Tag = 0x06 // certificate identifier chosen by the edge
	TagOpcode           Tag = 0x11 // one byte: the operation, or the response status
	TagPayload          Tag = 0x12 // what to sign or decrypt, or the result
	TagCustomFuncName   Tag = 0x13
	TagExtraPayload     Tag = 0x14
	TagRequestContext   Tag = 0x16
	TagComplianceRegion Tag = 0x17 // one byte, a ComplianceRegion
	TagPadding          Tag = 0x20
)

// ComplianceRegion names the regulatory region a key server must keep a
// request in. It travels as one byte; zero means none and is not encoded.
type ComplianceRegion byte

// Compliance regions.
const (
	ComplianceRegionFedRAMPHigh ComplianceRegion = 0x01
)

// Message is one request or response. Zero-valued fields are not encoded.
type Message struct {
	ID     uint32
	Opcode Op

	Payload          []byte
	SKI              []byte // 20 bytes when set
	CertDigest       []byte // 32 bytes when set
	ClientIP         netip.Addr
	ServerIP         netip.Addr
	SNI              string
	CertID           string
	CustomFuncName   string
	ExtraPayload     []byte
	RequestContext   []byte
	ComplianceRegion ComplianceRegion
}

// Encoding and framing errors. Malformed bodies are reported as
// ErrFormat and ErrVersionMismatch, the protocol's own error codes.
var (
	ErrTooLarge  = errors.New("wire: message body exceeds 65535 bytes")
	ErrTruncated = errors.New("wire: truncated message")
)

// appendItem appends one TLV item.
func appendItem[T string | []byte](b []byte, t Tag, data T) []byte {
	b = append(b, byte(t))
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}

func addrBytes(a netip.Addr) []byte {
	if a.Is4() || a.Is4In6() {
		v := a.Unmap().As4()
		return v[:]
	}
	v := a.As16()
	return v[:]
}

// AppendBinary appends the encoded message, header and padding included,
// to b. The items that are set follow gokeyless's order (its
// Operation.MarshalBinary): opcode, payload, extra payload, SKI,
// certificate digest, client IP, server IP, SNI, certificate ID, custom
// function name, request context, compliance region, padding. So the
// bytes match a reference peer's for the same message.
func (m *Message) AppendBinary(b []byte) ([]byte, error) {
	start := len(b)
	b = append(b, VersionMajor, VersionMinor, 0, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[start+4:], m.ID)
	b = appendItem(b, TagOpcode, []byte{byte(m.Opcode)})
	for _, it := range []struct {
		tag  Tag
		data []byte
	}{{TagPayload, m.Payload}, {TagExtraPayload, m.ExtraPayload}, {TagSKI, m.SKI}, {TagCertDigest, m.CertDigest}} {
		if len(it.data) > 0 {
			b = appendItem(b, it.tag, it.data)
		}
	}
	if m.ClientIP.IsValid() {
		b = appendItem(b, TagClientIP, addrBytes(m.ClientIP))
	}
	if m.ServerIP.IsValid() {
		b = appendItem(b, TagServerIP, addrBytes(m.ServerIP))
	}
	for _, it := range []struct {
		tag  Tag
		data string
	}{{TagSNI, m.SNI}, {TagCertID, m.CertID}, {TagCustomFuncName, m.CustomFuncName}} {
		if it.data != "" {
			b = appendItem(b, it.tag, it.data)
		}
	}
	if len(m.RequestContext) > 0 {
		b = appendItem(b, TagRequestContext, m.RequestContext)
	}
	if m.ComplianceRegion != 0 {
		b = appendItem(b, TagComplianceRegion, []byte{byte(m.ComplianceRegion)})
	}
	// Pad to PaddedLen; within 3 bytes of it, the padding item's own
	// header overshoots by a byte or two, as in gokeyless.
	if n := len(b) - start; n < PaddedLen {
		b = appendItem(b, TagPadding, make([]byte, max(PaddedLen-n-3, 0)))
	}
	body := len(b) - start - HeaderLen
	if body > MaxBody {
		return b[:start], ErrTooLarge
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(body))
	return b, nil
}

// MarshalBinary encodes the message, header and padding included.
func (m *Message) MarshalBinary() ([]byte, error) {
	return m.AppendBinary(make([]byte, 0, PaddedLen))
}

// Header is a parsed message header.
type Header struct {
	Major, Minor uint8
	Length       uint16 // body bytes that follow
	ID           uint32
}

// ParseHeader parses the 8-byte header. It does not check the version:
// a server answers a wrong major version with ErrVersionMismatch under
// the request's ID, which it needs the header for.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrTruncated
	}
	return Header{
		Major:  b[0],
		Minor:  b[1],
		Length: binary.BigEndian.Uint16(b[2:]),
		ID:     binary.BigEndian.Uint32(b[4:]),
	}, nil
}

// UnmarshalBody decodes a message body into m, with m.ID set from h.
// Data slices in m alias body. It fails with ErrVersionMismatch for a
// major version other than 1 and with ErrFormat (wrapped, saying what
// was wrong) for a malformed body.
func (m *Message) UnmarshalBody(h Header, body []byte) error {
	*m = Message{ID: h.ID}
	if h.Major != VersionMajor {
		return fmt.Errorf("%w: major version %d", ErrVersionMismatch, h.Major)
	}
	if len(body) != int(h.Length) {
		return fmt.Errorf("%w: body is %d bytes, header says %d", ErrFormat, len(body), h.Length)
	}
	var seen [256]bool
	hasOpcode := false
	for len(body) > 0 {
		if len(body) < 3 {
			return fmt.Errorf("%w: %d stray bytes after the last item", ErrFormat, len(body))
		}
		tag, n := Tag(body[0]), int(binary.BigEndian.Uint16(body[1:]))
		if n > len(body)-3 {
			return fmt.Errorf("%w: item %#02x runs %d bytes past the body", ErrFormat, byte(tag), n-(len(body)-3))
		}
		data := body[3 : 3+n]
		body = body[3+n:]
		known, err := m.setItem(tag, data)
		if err != nil {
			return err
		}
		if known && seen[tag] {
			return fmt.Errorf("%w: item %#02x repeated", ErrFormat, byte(tag))
		}
		seen[tag] = true
		hasOpcode = hasOpcode || tag == TagOpcode
	}
	if !hasOpcode {
		return fmt.Errorf("%w: no opcode", ErrFormat)
	}
	return nil
}

// setItem stores one item's data in m. It reports whether tag is one of
// this protocol version's tags; unknown tags are skipped. An empty item
// is stored as an absent one (nil), as AppendBinary writes none for it,
// so a message decodes the same after a round trip.
func (m *Message) setItem(tag Tag, data []byte) (known bool, err error) {
	if len(data) == 0 {
		data = nil
	}
	switch tag {
	case TagOpcode:
		if len(data) != 1 {
			return true, fmt.Errorf("%w: opcode item of %d bytes", ErrFormat, len(data))
		}
		m.Opcode = Op(data[0])
	case TagPayload:
		m.Payload = data
	case TagSKI:
		if len(data) != 20 {
			return true, fmt.Errorf("%w: SKI of %d bytes", ErrFormat, len(data))
		}
		m.SKI = data
	case TagCertDigest:
		if len(data) != 32 {
			return true, fmt.Errorf("%w: certificate digest of %d bytes", ErrFormat, len(data))
		}
		m.CertDigest = data
	case TagClientIP, TagServerIP:
		a, ok := netip.AddrFromSlice(data)
		if !ok {
			return true, fmt.Errorf("%w: IP address of %d bytes", ErrFormat, len(data))
		}
		if tag == TagClientIP {
			m.ClientIP = a
		} else {
			m.ServerIP = a
		}
	case TagSNI:
		m.SNI = string(data)
	case TagCertID:
		m.CertID = string(data)
	case TagCustomFuncName:
		m.CustomFuncName = string(data)
	case TagExtraPayload:
		m.ExtraPayload = data
	case TagRequestContext:
		m.RequestContext = data
	case TagComplianceRegion:
		if len(data) != 1 {
			return true, fmt.Errorf("%w: compliance region of %d bytes", ErrFormat, len(data))
		}
		m.ComplianceRegion = ComplianceRegion(data[0])
	case TagPadding:
	default:
		return false, nil
	}
	return true, nil
}

// ReadMessage reads one message from r into buf (grown as needed, at
// most HeaderLen+MaxBody bytes) and decodes it. The returned message
// aliases buf. On a decoding error the header is returned too, so a
// server can answer under the request's ID; an I/O error returns a zero
// Header.
func ReadMessage(r io.Reader, buf *[]byte) (*Message, Header, error) {
	if cap(*buf) < HeaderLen {
		*buf = make([]byte, HeaderLen, PaddedLen)
	}
	b := (*buf)[:HeaderLen]
	if _, err := io.ReadFull(r, b); err != nil {
		return nil, Header{}, err
	}
	h, _ := ParseHeader(b)
	if cap(b) < HeaderLen+int(h.Length) {
		b = append(b[:cap(b)], make([]byte, HeaderLen+int(h.Length)-cap(b))...)
	}
	b = b[:HeaderLen+int(h.Length)]
	*buf = b
	if _, err := io.ReadFull(r, b[HeaderLen:]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return nil, Header{}, err
	}
	m := new(Message)
	if err := m.UnmarshalBody(h, b[HeaderLen:]); err != nil {
		return nil, h, err
	}
	return m, h, nil
}
