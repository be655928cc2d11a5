package keystore

import (
	"bytes"
	"crypto/hpke"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
)

// A Sealer seals a private key (PKCS#8 DER) for storage at rest. The
// sealed bytes are bound to certID, so a sealed key copied next to
// another certificate does not open.
type Sealer interface {
	Seal(certID string, key []byte) ([]byte, error)
}

// An Opener recovers a private key sealed by a Sealer. It returns an
// error wrapping ErrCannotOpen when this node holds no key for the
// recipient the file was sealed to (a key restricted to other places).
type Opener interface {
	Open(certID string, sealed []byte) ([]byte, error)
}

// ErrCannotOpen is returned by an Opener that holds no key for the
// recipient a sealed key names. The caller must sign elsewhere.
var ErrCannotOpen = errors.New("keystore: sealed key is not addressed to this node")

// Sealed key file layout (key.sealed), all integers big-endian:
//
//	magic     [4]byte "KES1"
//	recipLen  uint8   length of recipient, 1..64
//	recipient [recipLen]byte  who can open it: "fleet", or a policy key's ID
//	kem, kdf, aead uint16     the HPKE suite (RFC 9180 identifiers)
//	sealed    []byte  HPKE single-shot enc || ciphertext of the PKCS#8 DER
//
// The HPKE info string binds the ciphertext to recipient and certificate.
const sealMagic = "KES1"

// sealedHeader is the parsed fixed part of a sealed key file.
type sealedHeader struct {
	recipient      string
	kem, kdf, aead uint16
}

func (h sealedHeader) info(certID string) []byte {
	return []byte("keyedge key.sealed v1\x00" + h.recipient + "\x00" + certID)
}

func (h sealedHeader) append(b []byte) []byte {
	b = append(b, sealMagic...)
	b = append(b, byte(len(h.recipient)))
	b = append(b, h.recipient...)
	b = binary.BigEndian.AppendUint16(b, h.kem)
	b = binary.BigEndian.AppendUint16(b, h.kdf)
	return binary.BigEndian.AppendUint16(b, h.aead)
}

// parseSealed splits a sealed key file into its header and HPKE payload.
func parseSealed(data []byte) (sealedHeader, []byte, error) {
	var h sealedHeader
	if len(data) < len(sealMagic)+1 || string(data[:len(sealMagic)]) != sealMagic {
		return h, nil, fmt.Errorf("%w: not a sealed key", errMalformed)
	}
	data = data[len(sealMagic):]
	n := int(data[0])
	if n == 0 || n > 64 || len(data) < 1+n+6 {
		return h, nil, fmt.Errorf("%w: truncated sealed key header", errMalformed)
	}
	h.recipient = string(data[1 : 1+n])
	data = data[1+n:]
	h.kem = binary.BigEndian.Uint16(data)
	h.kdf = binary.BigEndian.Uint16(data[2:])
	h.aead = binary.BigEndian.Uint16(data[4:])
	return h, data[6:], nil
}

// FleetRecipient is the recipient name of keys sealed to the fleet key.
const FleetRecipient = "fleet"

// FleetKey seals and opens unrestricted tenant keys. It is an HPKE key
// pair for the hybrid post-quantum KEM ML-KEM-768+X25519, with
// HKDF-SHA256 and ChaCha20-Poly1305, so keys at rest stay sealed against
// a future quantum adversary holding today's files. Every node of a fleet
// holds the same FleetKey (a 0600 file written by keyctl init).
type FleetKey struct {
	priv hpke.PrivateKey
}

var (
	fleetKEM  = hpke.MLKEM768X25519()
	fleetKDF  = hpke.HKDFSHA256()
	fleetAEAD = hpke.ChaCha20Poly1305()
)

const fleetPEMType = "KEYEDGE FLEET KEY"

// GenerateFleetKey creates a new random fleet key.
func GenerateFleetKey() (*FleetKey, error) {
	priv, err := fleetKEM.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to generate fleet key: %w", err)
	}
	return &FleetKey{priv: priv}, nil
}

// ParseFleetKey parses a fleet key in the PEM form written by MarshalPEM.
func ParseFleetKey(pemBytes []byte) (*FleetKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != fleetPEMType {
		return nil, fmt.Errorf("keystore: fleet key: no %q PEM block", fleetPEMType)
	}
	priv, err := fleetKEM.NewPrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("keystore: fleet key: %w", err)
	}
	return &FleetKey{priv: priv}, nil
}

// MarshalPEM encodes the fleet key's private half. Store it 0600.
func (k *FleetKey) MarshalPEM() ([]byte, error) {
	b, err := k.priv.Bytes()
	if err != nil {
		return nil, fmt.Errorf("keystore: fleet key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: fleetPEMType, Bytes: b}), nil
}

func (k *FleetKey) header() sealedHeader {
	return sealedHeader{FleetRecipient, fleetKEM.ID(), fleetKDF.ID(), fleetAEAD.ID()}
}

// Seal implements Sealer.
func (k *FleetKey) Seal(certID string, key []byte) ([]byte, error) {
	h := k.header()
	ct, err := hpke.Seal(k.priv.PublicKey(), fleetKDF, fleetAEAD, h.info(certID), key)
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to seal key: %w", err)
	}
	return append(h.append(nil), ct...), nil
}

// Open implements Opener.
func (k *FleetKey) Open(certID string, sealed []byte) ([]byte, error) {
	h, ct, err := parseSealed(sealed)
	if err != nil {
		return nil, err
	}
	want := k.header()
	if h.recipient != want.recipient {
		return nil, fmt.Errorf("%w (sealed to %q)", ErrCannotOpen, h.recipient)
	}
	if !bytes.Equal(h.append(nil), want.append(nil)) {
		return nil, fmt.Errorf("%w: unsupported HPKE suite %#04x/%#04x/%#04x", errMalformed, h.kem, h.kdf, h.aead)
	}
	key, err := hpke.Open(k.priv, fleetKDF, fleetAEAD, h.info(certID), ct)
	if err != nil {
		return nil, fmt.Errorf("%w: sealed key does not open (tampered, or sealed for another certificate or fleet key)", errMalformed)
	}
	return key, nil
}

// ReadFleetKeyFile reads a fleet key file, refusing one that other users
// could read.
func ReadFleetKeyFile(path string) (*FleetKey, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to read fleet key: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("keystore: fleet key %s is accessible by other users (mode %v); chmod 600 it", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to read fleet key: %w", err)
	}
	return ParseFleetKey(data)
}

// WriteFleetKeyFile writes k to a new 0600 file; it never overwrites an
// existing one, since that would strand every key sealed to it.
func WriteFleetKeyFile(path string, k *FleetKey) error {
	data, err := k.MarshalPEM()
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keystore: failed to create fleet key: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("keystore: failed to write fleet key: %w", err)
	}
	return nil
}
