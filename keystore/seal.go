package keystore

import (
	"crypto"
	"crypto/hpke"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/keyedge/keyedge/internal/secretfile"
)

// ErrCannotOpen is returned when this node holds no key for the
// recipient a sealed key names: no fleet key, or a policy that does not
// admit the node's attributes. The caller must sign elsewhere.
var ErrCannotOpen = errors.New("keystore: sealed key is not addressed to this node")

// Sealed key file layout (key.sealed), all integers big-endian. Two
// versions are read; KES2 is written.
//
//	magic     [4]byte "KES1" or "KES2"
//	recipLen  uint8   length of recipient, 1..64
//	recipient [recipLen]byte  who can open it: "fleet", or "policy:" and a policy ID
//	kem, kdf, aead uint16     the HPKE suite (RFC 9180 identifiers)
//
// KES1 (written before envelope encryption) then holds
//
//	sealed    []byte  HPKE single-shot enc || ciphertext of the PKCS#8 DER
//
// with the HPKE info string binding it to recipient and certificate: one
// ML-KEM-768 + X25519 decapsulation per key. KES2 holds
//
//	wrapLen   uint16  length of wrap, 1..maxWrapLen
//	wrap      [wrapLen]byte  the data key, HPKE-sealed to the recipient (datakey.go)
//	nonce     [24]byte
//	sealed    []byte  XChaCha20-Poly1305 ciphertext of the PKCS#8 DER under
//	                  the data key, with recipient and certificate as
//	                  associated data
//
// Many keys share one data key (and so one wrap), so a node decapsulates
// each data key once and then opens each tenant key with an AEAD.
const (
	sealMagicV1 = "KES1"
	sealMagicV2 = "KES2"
	maxWrapLen  = 4096
)

// sealedHeader is the parsed fixed part of a sealed key file.
type sealedHeader struct {
	recipient      string
	kem, kdf, aead uint16
}

// infoV1 is the HPKE info string of a KES1 file.
func (h sealedHeader) infoV1(certID string) []byte {
	return []byte("keyedge key.sealed v1\x00" + h.recipient + "\x00" + certID)
}

func (h sealedHeader) append(b []byte, magic string) []byte {
	b = append(b, magic...)
	b = append(b, byte(len(h.recipient)))
	b = append(b, h.recipient...)
	b = binary.BigEndian.AppendUint16(b, h.kem)
	b = binary.BigEndian.AppendUint16(b, h.kdf)
	return binary.BigEndian.AppendUint16(b, h.aead)
}

// sealedFile is a parsed sealed key file. Its slices alias the file.
type sealedFile struct {
	sealedHeader
	envelope bool   // KES2; else KES1, whose sealed is the HPKE payload
	wrap     []byte // KES2: the wrapped data key
	nonce    []byte // KES2: the AEAD nonce
	sealed   []byte
}

// parseSealed parses a sealed key file of either version, checking
// every length before it slices.
func parseSealed(data []byte) (sealedFile, error) {
	var f sealedFile
	if len(data) < len(sealMagicV1)+1 {
		return f, fmt.Errorf("%w: not a sealed key", errMalformed)
	}
	switch string(data[:len(sealMagicV1)]) {
	case sealMagicV1:
	case sealMagicV2:
		f.envelope = true
	default:
		return f, fmt.Errorf("%w: not a sealed key", errMalformed)
	}
	data = data[len(sealMagicV1):]
	n := int(data[0])
	if n == 0 || n > 64 || len(data) < 1+n+6 {
		return f, fmt.Errorf("%w: truncated sealed key header", errMalformed)
	}
	f.recipient = string(data[1 : 1+n])
	data = data[1+n:]
	f.kem = binary.BigEndian.Uint16(data)
	f.kdf = binary.BigEndian.Uint16(data[2:])
	f.aead = binary.BigEndian.Uint16(data[4:])
	data = data[6:]
	if !f.envelope {
		f.sealed = data
		return f, nil
	}
	if len(data) < 2 {
		return f, fmt.Errorf("%w: truncated sealed key header", errMalformed)
	}
	n = int(binary.BigEndian.Uint16(data))
	if n == 0 || n > maxWrapLen || len(data) < 2+n+nonceLen {
		return f, fmt.Errorf("%w: truncated data key", errMalformed)
	}
	f.wrap = data[2 : 2+n]
	f.nonce = data[2+n : 2+n+nonceLen]
	f.sealed = data[2+n+nonceLen:]
	return f, nil
}

// marshal encodes f as parseSealed reads it.
func (f sealedFile) marshal() []byte {
	if !f.envelope {
		return append(f.append(nil, sealMagicV1), f.sealed...)
	}
	b := f.append(nil, sealMagicV2)
	b = binary.BigEndian.AppendUint16(b, uint16(len(f.wrap)))
	b = append(b, f.wrap...)
	b = append(b, f.nonce...)
	return append(b, f.sealed...)
}

// checkSuite refuses a file sealed with an HPKE suite this version does
// not use.
func (f sealedFile) checkSuite() error {
	if f.kem != sealKEM.ID() || f.kdf != sealKDF.ID() || f.aead != sealAEAD.ID() {
		return fmt.Errorf("%w: unsupported HPKE suite %#04x/%#04x/%#04x", errMalformed, f.kem, f.kdf, f.aead)
	}
	return nil
}

// FleetRecipient is the recipient name of keys sealed to the fleet key.
const FleetRecipient = "fleet"

// FleetKey seals and opens unrestricted tenant keys (those with no geo
// policy). Every node of a fleet holds the same FleetKey (a 0600 file
// written by keyctl init). Restricted keys are sealed the same way to a
// per-policy key instead (see policy.go).
type FleetKey struct {
	priv hpke.PrivateKey
}

// Tenant keys are sealed with HPKE over the hybrid post-quantum KEM
// ML-KEM-768+X25519, with HKDF-SHA256 and ChaCha20-Poly1305, so keys at
// rest stay sealed against a future quantum adversary holding today's
// files.
var (
	sealKEM  = hpke.MLKEM768X25519()
	sealKDF  = hpke.HKDFSHA256()
	sealAEAD = hpke.ChaCha20Poly1305()
)

const fleetPEMType = "KEYEDGE FLEET KEY"

// GenerateFleetKey creates a new random fleet key.
func GenerateFleetKey() (*FleetKey, error) {
	priv, err := sealKEM.GenerateKey()
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
	priv, err := sealKEM.NewPrivateKey(block.Bytes)
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

// openV1 opens a KES1 file with the private key of the recipient it names.
func openV1(priv hpke.PrivateKey, f sealedFile, certID string) ([]byte, error) {
	key, err := hpke.Open(priv, sealKDF, sealAEAD, f.infoV1(certID), f.sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: sealed key does not open (tampered, or sealed for another certificate or key)", errMalformed)
	}
	return key, nil
}

// open opens a parsed sealed key file of either version with the
// private key of the recipient it names; info is what the file is bound
// to (a certificate ID, or a storage key: sealInfo).
func (s *Store) open(priv hpke.PrivateKey, f sealedFile, info string) ([]byte, error) {
	if err := f.checkSuite(); err != nil {
		return nil, err
	}
	if !f.envelope {
		s.metrics.keyOpens.WithLabelValues("legacy").Inc()
		return openV1(priv, f, info)
	}
	s.metrics.keyOpens.WithLabelValues("envelope").Inc()
	aead, err := s.dataKey(priv, f)
	if err != nil {
		return nil, err
	}
	return openEntry(aead, f, info)
}

// openSealed opens certificate id's sealed key file, for a serving node
// (Store.openKey) and for an admin moving the key (Store.adminOpen) alike:
// with the fleet key, or with the policy key policyKey returns for a key
// sealed to a policy (the node's or the admin's way of opening it). It
// returns the tenant key and its PKCS#8 DER, which the caller clears.
// Errors of policyKey are returned as they are; the file's own faults
// (a bad header, an unknown recipient, a seal that does not open, DER
// that does not parse) pass through corrupt, which says how the caller
// reports a corrupt key.
func (s *Store) openSealed(id string, sealed []byte, policyKey func(pid string) (hpke.PrivateKey, error), corrupt func(error) error) (crypto.PrivateKey, []byte, error) {
	f, err := parseSealed(sealed)
	if err != nil {
		return nil, nil, corrupt(err)
	}
	var priv hpke.PrivateKey
	switch pid, ok := strings.CutPrefix(f.recipient, policyRecipient); {
	case f.recipient == FleetRecipient:
		if s.fleet == nil {
			return nil, nil, fmt.Errorf("%w: certificate %s: no fleet key configured", ErrCannotOpen, id)
		}
		priv = s.fleet.priv
	case ok:
		if priv, err = policyKey(pid); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, corrupt(fmt.Errorf("%w: sealed to unknown recipient %q", errMalformed, f.recipient))
	}
	der, err := s.open(priv, f, id)
	if err != nil {
		return nil, nil, corrupt(err)
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		clear(der)
		return nil, nil, corrupt(fmt.Errorf("%w: %v", errMalformed, err))
	}
	return key, der, nil
}

// ReadFleetKeyFile reads a fleet key file, refusing one that other users
// could read.
func ReadFleetKeyFile(path string) (*FleetKey, error) {
	data, err := secretfile.Read(path)
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
	if err := secretfile.Write(path, data); err != nil {
		return fmt.Errorf("keystore: failed to write fleet key: %w", err)
	}
	return nil
}

// SealSecret seals value, a secret of another program kept in the
// keystore's storage under key (certmagic's ACME account key), to the
// Store's fleet key, as a tenant key is sealed: only nodes of the fleet
// can open it, and only as the value of key. It fails with ErrNoSealer
// without a fleet key.
func (s *Store) SealSecret(key string, value []byte) ([]byte, error) {
	if s.fleet == nil {
		return nil, ErrNoSealer
	}
	return s.seal(s.fleet.priv.PublicKey(), FleetRecipient, sealInfo(key), value)
}

// OpenSecret opens what SealSecret sealed for key. It fails with an
// error wrapping ErrCannotOpen without a fleet key, and one wrapping
// ErrCorrupt for data that is not a value sealed for key to this fleet.
func (s *Store) OpenSecret(key string, sealed []byte) ([]byte, error) {
	if s.fleet == nil {
		return nil, fmt.Errorf("%w: %s: no fleet key configured", ErrCannotOpen, key)
	}
	f, err := parseSealed(sealed)
	if err == nil && f.recipient != FleetRecipient {
		err = fmt.Errorf("%w: sealed to %q, not the fleet key", errMalformed, f.recipient)
	}
	if err == nil {
		sealed, err = s.open(s.fleet.priv, f, sealInfo(key))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, key, err)
	}
	return sealed, nil
}

// sealInfo binds a sealed secret to its storage key, as a tenant key is
// bound to its certificate ID.
func sealInfo(key string) string { return "storage:" + key }
