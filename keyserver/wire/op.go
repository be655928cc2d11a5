package wire

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
)

// Op is a request's operation or a response's status.
type Op byte

// Operations and statuses.
const (
	OpRSADecrypt Op = 0x01 // raw RSA decryption of the payload

	OpRSASignMD5SHA1 Op = 0x02 // RSA PKCS#1 v1.5 signatures
	OpRSASignSHA1    Op = 0x03
	OpRSASignSHA224  Op = 0x04
	OpRSASignSHA256  Op = 0x05
	OpRSASignSHA384  Op = 0x06
	OpRSASignSHA512  Op = 0x07

	OpECDSASignMD5SHA1 Op = 0x12 // ECDSA signatures (ASN.1)
	OpECDSASignSHA1    Op = 0x13
	OpECDSASignSHA224  Op = 0x14
	OpECDSASignSHA256  Op = 0x15
	OpECDSASignSHA384  Op = 0x16
	OpECDSASignSHA512  Op = 0x17
	OpEd25519Sign      Op = 0x18 // payload is the whole message

	OpRSAPSSSignSHA256 Op = 0x35 // RSA-PSS, salt length = hash length
	OpRSAPSSSignSHA384 Op = 0x36
	OpRSAPSSSignSHA512 Op = 0x37

	OpResponse Op = 0xF0
	OpPing     Op = 0xF1 // echoed back with OpPong
	OpPong     Op = 0xF2
	OpError    Op = 0xFF // payload is one Error byte
)

// hashOrder is the hash of each opcode's offset within its family.
var hashOrder = [...]crypto.Hash{crypto.MD5SHA1, crypto.SHA1, crypto.SHA224, crypto.SHA256, crypto.SHA384, crypto.SHA512}

// Hash returns the hash whose digest a signing opcode's payload holds,
// and 0 for Ed25519 and opcodes that are not signatures.
func (o Op) Hash() crypto.Hash {
	switch {
	case o >= OpRSASignMD5SHA1 && o <= OpRSASignSHA512:
		return hashOrder[o-OpRSASignMD5SHA1]
	case o >= OpECDSASignMD5SHA1 && o <= OpECDSASignSHA512:
		return hashOrder[o-OpECDSASignMD5SHA1]
	case o >= OpRSAPSSSignSHA256 && o <= OpRSAPSSSignSHA512:
		return hashOrder[o-OpRSAPSSSignSHA256+3]
	}
	return 0
}

// IsSign reports whether o asks for a signature.
func (o Op) IsSign() bool {
	return o.Hash() != 0 || o == OpEd25519Sign
}

// IsPSS reports whether o asks for an RSA-PSS signature.
func (o Op) IsPSS() bool { return o >= OpRSAPSSSignSHA256 && o <= OpRSAPSSSignSHA512 }

// Known reports whether o is an opcode of this protocol version.
func (o Op) Known() bool {
	return o == OpRSADecrypt || o.IsSign() || o == OpResponse || o == OpPing || o == OpPong || o == OpError
}

// IsResponse reports whether o is only valid in a response.
func (o Op) IsResponse() bool { return o == OpResponse || o == OpPong || o == OpError }

func (o Op) String() string {
	switch {
	case o == OpRSADecrypt:
		return "rsa-decrypt"
	case o >= OpRSASignMD5SHA1 && o <= OpRSASignSHA512:
		return "rsa-" + hashName(o.Hash())
	case o >= OpECDSASignMD5SHA1 && o <= OpECDSASignSHA512:
		return "ecdsa-" + hashName(o.Hash())
	case o.IsPSS():
		return "rsa-pss-" + hashName(o.Hash())
	case o == OpEd25519Sign:
		return "ed25519"
	case o == OpResponse:
		return "response"
	case o == OpPing:
		return "ping"
	case o == OpPong:
		return "pong"
	case o == OpError:
		return "error"
	}
	return fmt.Sprintf("op-%#02x", byte(o))
}

func hashName(h crypto.Hash) string {
	if h == crypto.MD5SHA1 {
		return "md5sha1"
	}
	return map[crypto.Hash]string{crypto.SHA1: "sha1", crypto.SHA224: "sha224", crypto.SHA256: "sha256", crypto.SHA384: "sha384", crypto.SHA512: "sha512"}[h]
}

// ErrUnsupportedKey is returned by SignOp for a key or option the protocol
// cannot express.
var ErrUnsupportedKey = errors.New("wire: no opcode for this key and signature options")

// SignOp returns the opcode asking a key server to sign with a key whose
// public half is pub, with the hash and padding opts name (as passed to
// crypto.Signer.Sign). PSS requires the salt length to equal the hash
// length, as TLS 1.3 does.
func SignOp(pub crypto.PublicKey, opts crypto.SignerOpts) (Op, error) {
	h := opts.HashFunc()
	offset := -1
	for i, oh := range hashOrder {
		if oh == h {
			offset = i
		}
	}
	switch pub.(type) {
	case *rsa.PublicKey:
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			if offset < 3 || (pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != h.Size()) {
				return 0, fmt.Errorf("%w: RSA-PSS with %v, salt %d", ErrUnsupportedKey, h, pss.SaltLength)
			}
			return OpRSAPSSSignSHA256 + Op(offset-3), nil
		}
		if offset >= 0 {
			return OpRSASignMD5SHA1 + Op(offset), nil
		}
	case *ecdsa.PublicKey:
		if offset >= 0 {
			return OpECDSASignMD5SHA1 + Op(offset), nil
		}
	case ed25519.PublicKey:
		if h == 0 {
			return OpEd25519Sign, nil
		}
	}
	return 0, fmt.Errorf("%w: %T with %v", ErrUnsupportedKey, pub, h)
}

// Error is the one-byte payload of an OpError response.
type Error byte

// Protocol errors.
const (
	ErrCrypto           Error = 0x01
	ErrKeyNotFound      Error = 0x02
	ErrRead             Error = 0x03
	ErrVersionMismatch  Error = 0x04
	ErrBadOpcode        Error = 0x05
	ErrUnexpectedOpcode Error = 0x06
	ErrFormat           Error = 0x07
	ErrInternal         Error = 0x08
	ErrCertNotFound     Error = 0x09
	ErrExpired          Error = 0x0A
	ErrRemoteConfig     Error = 0x0B
)

var errorText = map[Error]string{
	ErrCrypto:           "cryptography failure",
	ErrKeyNotFound:      "key not found",
	ErrRead:             "read error",
	ErrVersionMismatch:  "version mismatch",
	ErrBadOpcode:        "bad opcode",
	ErrUnexpectedOpcode: "unexpected opcode",
	ErrFormat:           "format error",
	ErrInternal:         "internal error",
	ErrCertNotFound:     "certificate not found",
	ErrExpired:          "expired",
	ErrRemoteConfig:     "remote configuration error",
}

func (e Error) Error() string {
	if t, ok := errorText[e]; ok {
		return "keyless: " + t
	}
	return fmt.Sprintf("keyless: error %#02x", byte(e))
}

// ErrorResponse is the response reporting e for request id.
func ErrorResponse(id uint32, e Error) *Message {
	return &Message{ID: id, Opcode: OpError, Payload: []byte{byte(e)}}
}

// ResponseError returns the error a response carries: nil for
// OpResponse and OpPong, an Error for OpError, ErrFormat otherwise.
func (m *Message) ResponseError() error {
	switch m.Opcode {
	case OpResponse, OpPong:
		return nil
	case OpError:
		if len(m.Payload) != 1 {
			return fmt.Errorf("%w: error response with %d-byte payload", ErrFormat, len(m.Payload))
		}
		return Error(m.Payload[0])
	}
	return fmt.Errorf("%w: %v in a response", ErrUnexpectedOpcode, m.Opcode)
}
