package keystore

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
)

// Record file layout (certs/<id2>/<id>/record) as written since the
// sealed key moved into the record, so that a cold tenant costs two
// reads (name, record) rather than three; all integers big-endian.
//
//	magic   [4]byte "KER1"
//	metaLen uint32, meta [metaLen]byte  Meta as JSON, with its struct tags
//	certs   uint8, 1..255               the chain, leaf first, each as
//	  derLen uint32, der [derLen]byte
//	ocspLen uint32, ocsp [ocspLen]byte  the OCSP staple; 0: none
//	keyLen  uint32, key [keyLen]byte    the sealed key file (seal.go); 0: none
//
// The file ends with the key. A record written before (a JSON object
// with the chain and staple in base64) keeps its key in key.sealed
// beside it, and is read as ever; both layouts are read, this one is
// written. Every length is checked against what is left before slicing.
const (
	recordMagic = "KER1"
	maxChain    = 255
)

// marshal encodes r in the layout above.
func (r *record) marshal() ([]byte, error) {
	meta, err := json.Marshal(&r.Meta)
	if err != nil {
		return nil, err
	}
	if len(r.Chain) == 0 || len(r.Chain) > maxChain {
		return nil, fmt.Errorf("keystore: a record holds 1 to %d certificates, not %d", maxChain, len(r.Chain))
	}
	n := len(recordMagic) + 4 + len(meta) + 1 + 4 + len(r.OCSP) + 4 + len(r.Sealed)
	for _, der := range r.Chain {
		n += 4 + len(der)
	}
	b := make([]byte, 0, n)
	b = append(b, recordMagic...)
	b = appendSection(b, meta)
	b = append(b, byte(len(r.Chain)))
	for _, der := range r.Chain {
		b = appendSection(b, der)
	}
	b = appendSection(b, r.OCSP)
	return appendSection(b, r.Sealed), nil
}

func appendSection(b, section []byte) []byte {
	return append(binary.BigEndian.AppendUint32(b, uint32(len(section))), section...)
}

// isRecordFile reports whether data is in the layout above, rather than
// the JSON one.
func isRecordFile(data []byte) bool {
	return len(data) >= len(recordMagic) && string(data[:len(recordMagic)]) == recordMagic
}

// parseRecordFile decodes the layout above into r. The chain and staple
// are copied into one buffer of their own; r.Sealed aliases data, so
// once a loaded Cert drops its sealed key nothing keeps the file alive.
func parseRecordFile(data []byte, r *record) error {
	rest := data[len(recordMagic):]
	section := func(what string) ([]byte, error) {
		if len(rest) < 4 {
			return nil, fmt.Errorf("%w: record truncated in %s", errMalformed, what)
		}
		n := binary.BigEndian.Uint32(rest)
		if uint64(n) > uint64(len(rest)-4) {
			return nil, fmt.Errorf("%w: record truncated in %s", errMalformed, what)
		}
		s := rest[4 : 4+n]
		rest = rest[4+n:]
		return s, nil
	}
	meta, err := section("meta")
	if err != nil {
		return err
	}
	if err := json.Unmarshal(meta, &r.Meta); err != nil {
		return fmt.Errorf("%w: meta: %v", errMalformed, err)
	}
	if len(rest) < 1 || rest[0] == 0 {
		return fmt.Errorf("%w: empty chain", errMalformed)
	}
	chain := make([][]byte, rest[0])
	rest = rest[1:]
	size := 0
	for i := range chain {
		if chain[i], err = section("chain"); err != nil {
			return err
		}
		size += len(chain[i])
	}
	ocsp, err := section("OCSP staple")
	if err != nil {
		return err
	}
	if r.Sealed, err = section("key"); err != nil {
		return err
	}
	if len(rest) != 0 {
		return fmt.Errorf("%w: %d bytes after the key", errMalformed, len(rest))
	}
	if len(r.Sealed) == 0 {
		r.Sealed = nil
	}
	buf := make([]byte, 0, size+len(ocsp))
	r.Chain = make([][]byte, len(chain))
	for i, der := range chain {
		buf = append(buf, der...)
		r.Chain[i] = buf[len(buf)-len(der) : len(buf) : len(buf)]
	}
	if len(ocsp) > 0 {
		buf = append(buf, ocsp...)
		r.OCSP = buf[len(buf)-len(ocsp) : len(buf) : len(buf)]
	}
	return nil
}
