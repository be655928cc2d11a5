package edge

import (
	"fmt"

	"golang.org/x/crypto/cryptobyte"
)

// The ECHConfig wire format of RFC 9849 (draft-ietf-tls-esni), version
// 0xfe0d, as a DNS HTTPS record's ech SvcParam carries it and crypto/tls
// expects it in tls.EncryptedClientHelloKey.Config, all integers
// big-endian:
//
//	ECHConfigList:  uint16 length, then ECHConfigs
//	ECHConfig:      uint16 version (0xfe0d), uint16 length, then
//	  config_id            uint8
//	  kem_id               uint16   0x0020 DHKEM(X25519, HKDF-SHA256)
//	  public_key           uint16 length, then the key (32 bytes)
//	  cipher_suites        uint16 length, then (kdf_id uint16, aead_id uint16)…
//	  maximum_name_length  uint8
//	  public_name          uint8 length, then the name (1-255 bytes)
//	  extensions           uint16 length, then extensions (none here)
//
// crypto/tls parses configs (client side) and decrypts with them (server
// side); the HPKE info of the decryption covers the whole ECHConfig, so
// the config a client has must match the server's byte for byte.
const (
	echVersion      = 0xfe0d // also the encrypted_client_hello extension type
	echKEMX25519    = 0x0020 // DHKEM(X25519, HKDF-SHA256)
	echKDFSHA256    = 0x0001 // HKDF-SHA256
	echAEADAES128   = 0x0001 // AES-128-GCM
	echAEADChaCha20 = 0x0003 // ChaCha20Poly1305

	// echMaxNameLength is the maximum_name_length of keyedge's configs:
	// clients pad the inner server name to at least this length (then to
	// a multiple of 32 bytes), so tenant names up to 64 bytes all look
	// alike on the wire.
	echMaxNameLength = 64
)

// echConfig is one ECHConfig's contents, as keyedge publishes them: an
// X25519 key, HKDF-SHA256 with AES-128-GCM or ChaCha20Poly1305.
type echConfig struct {
	id         uint8
	publicKey  []byte // X25519, 32 bytes
	publicName string // 1-255 bytes
}

// marshal encodes c as an ECHConfig.
func (c echConfig) marshal() ([]byte, error) {
	if len(c.publicName) == 0 || len(c.publicName) > 255 {
		return nil, fmt.Errorf("edge: ECH public name of %d bytes, want 1-255", len(c.publicName))
	}
	var b cryptobyte.Builder
	b.AddUint16(echVersion)
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		b.AddUint8(c.id)
		b.AddUint16(echKEMX25519)
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(c.publicKey) })
		b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
			for _, aead := range []uint16{echAEADAES128, echAEADChaCha20} {
				b.AddUint16(echKDFSHA256)
				b.AddUint16(aead)
			}
		})
		b.AddUint8(echMaxNameLength)
		b.AddUint8LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes([]byte(c.publicName)) })
		b.AddUint16(0) // no extensions
	})
	return b.Bytes()
}

// echConfigList encodes marshalled ECHConfigs as an ECHConfigList.
func echConfigList(configs ...[]byte) ([]byte, error) {
	var b cryptobyte.Builder
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) {
		for _, c := range configs {
			b.AddBytes(c)
		}
	})
	return b.Bytes()
}
