package geo

import (
	"crypto/hpke"
	cryptorand "crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io"

	"github.com/cloudflare/circl/abe/cpabe/tkn20"
	"github.com/keyedge/keyedge/internal/secretfile"
	"golang.org/x/crypto/cryptobyte"
)

// ErrNotAdmitted is returned by NodeKey.Open when the node's attributes
// do not satisfy the policy a secret is sealed under.
var ErrNotAdmitted = errors.New("geo: node attributes do not satisfy the policy")

// ErrBadSeal is returned when sealed bytes or a key file are malformed,
// tampered with, or sealed under another policy or master key.
var ErrBadSeal = errors.New("geo: sealed secret is malformed, tampered with, or not for this policy")

// The admin layer: every sealed secret is also sealed, with HPKE, to the
// master key's admin key pair, so that keyctl can move a key from one
// policy to another without holding attributes that satisfy both.
var (
	adminKEM  = hpke.MLKEM768X25519()
	adminKDF  = hpke.HKDFSHA256()
	adminAEAD = hpke.ChaCha20Poly1305()
)

const (
	masterPEMType = "KEYEDGE GEO MASTER KEY"
	nodePEMType   = "KEYEDGE NODE KEY"
	sealMagic     = "KGS1"
	paramsMagic   = "KGP1"
)

// Params is the public half of a MasterKey: what sealing needs. It can
// be stored beside the keystore; it opens nothing.
type Params struct {
	abe   tkn20.PublicKey
	admin hpke.PublicKey
}

// MasterKey issues NodeKeys and opens every sealed secret. It belongs
// with keyctl, in a 0600 file, never on an edge node.
type MasterKey struct {
	Params
	msk   tkn20.SystemSecretKey
	admin hpke.PrivateKey
}

// NodeKey opens secrets sealed under policies its attributes satisfy.
type NodeKey struct {
	attrs Attributes
	abe   tkn20.AttributeKey
}

// GenerateMasterKey creates a new CP-ABE system and admin key pair from
// the random bytes of rand (nil: crypto/rand.Reader). The key is a
// function of the bytes read, so a fixed rand gives a fixed key, for
// tests.
func GenerateMasterKey(rand io.Reader) (*MasterKey, error) {
	rand = orCryptoRand(rand)
	pub, msk, err := tkn20.Setup(rand)
	if err != nil {
		return nil, fmt.Errorf("geo: failed to generate master key: %w", err)
	}
	// What adminKEM.GenerateKey does, from rand: crypto/hpke takes no
	// random source.
	seed := make([]byte, 32)
	if _, err := io.ReadFull(rand, seed); err != nil {
		return nil, fmt.Errorf("geo: failed to generate master key: %w", err)
	}
	defer clear(seed)
	admin, err := adminKEM.NewPrivateKey(seed)
	if err != nil {
		return nil, fmt.Errorf("geo: failed to generate master key: %w", err)
	}
	return &MasterKey{Params: Params{abe: pub, admin: admin.PublicKey()}, msk: msk, admin: admin}, nil
}

// orCryptoRand returns rand, or crypto/rand.Reader when it is nil.
func orCryptoRand(rand io.Reader) io.Reader {
	if rand == nil {
		return cryptorand.Reader
	}
	return rand
}

// NodeKey issues the attribute key of a node with attributes a, from
// the random bytes of rand (nil: crypto/rand.Reader); a fixed rand gives
// a fixed key, for tests.
func (m *MasterKey) NodeKey(rand io.Reader, a Attributes) (*NodeKey, error) {
	if len(a.m) == 0 {
		return nil, errors.New("geo: a node key needs at least one attribute")
	}
	ak, err := m.msk.KeyGen(orCryptoRand(rand), a.abe)
	if err != nil {
		return nil, fmt.Errorf("geo: failed to issue node key: %w", err)
	}
	return &NodeKey{attrs: a, abe: ak}, nil
}

// Seal seals secret under policy p: it opens with a NodeKey whose
// attributes satisfy p, or with the MasterKey. The CP-ABE decryption it
// costs is slow (tens of milliseconds), so seal small secrets, such as
// the private half of a per-policy key, and cache what they open.
//
// Seal takes no random source: the admin layer's HPKE encapsulation
// (crypto/hpke) always draws from crypto/rand, so a deterministic seal
// needs testing/cryptotest.SetGlobalRandom, which covers both layers.
func (p *Params) Seal(pol *Policy, secret []byte) ([]byte, error) {
	abeCT, err := p.abe.Encrypt(cryptorand.Reader, pol.abe, secret)
	if err != nil {
		return nil, fmt.Errorf("geo: failed to seal under %q: %w", pol, err)
	}
	adminCT, err := hpke.Seal(p.admin, adminKDF, adminAEAD, adminInfo(pol.canonical), secret)
	if err != nil {
		return nil, fmt.Errorf("geo: failed to seal under %q: %w", pol, err)
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte(sealMagic))
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(abeCT) })
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(adminCT) })
	return b.Bytes()
}

// adminInfo binds the admin layer to the canonical text of the policy
// the secret is sealed under, and only to that text.
func adminInfo(canonical string) []byte { return []byte("keyedge geo seal v1\x00" + canonical) }

// parseSealed splits Seal's output into its CP-ABE and admin layers.
func parseSealed(sealed []byte) (abeCT, adminCT []byte, err error) {
	s := cryptobyte.String(sealed)
	var a, d cryptobyte.String
	if !s.Skip(len(sealMagic)) || string(sealed[:len(sealMagic)]) != sealMagic ||
		!s.ReadUint24LengthPrefixed(&a) || !s.ReadUint24LengthPrefixed(&d) || !s.Empty() {
		return nil, nil, fmt.Errorf("%w: truncated or not %s", ErrBadSeal, sealMagic)
	}
	return a, d, nil
}

// Open opens a secret sealed under pol with the node's attribute key. It
// fails with ErrNotAdmitted, before any slow work, when the node's
// attributes do not satisfy the policy the ciphertext carries, and with
// ErrBadSeal when the ciphertext is damaged or was sealed under another
// policy than pol.
func (k *NodeKey) Open(pol *Policy, sealed []byte) ([]byte, error) {
	abeCT, _, err := parseSealed(sealed)
	if err != nil {
		return nil, err
	}
	var inCT tkn20.Policy
	if err := inCT.ExtractFromCiphertext(abeCT); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSeal, err)
	}
	if !inCT.Equal(&pol.abe) {
		return nil, fmt.Errorf("%w: sealed under another policy than %q", ErrBadSeal, pol)
	}
	if !k.attrs.abe.CouldDecrypt(abeCT) {
		return nil, fmt.Errorf("%w: %q does not admit %q", ErrNotAdmitted, pol, k.attrs)
	}
	secret, err := k.abe.Decrypt(abeCT)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadSeal, err)
	}
	return secret, nil
}

// Open opens any secret sealed under pol by Params.Seal with this
// master key's parameters.
func (m *MasterKey) Open(pol *Policy, sealed []byte) ([]byte, error) {
	return m.OpenStored(pol.canonical, sealed)
}

// OpenStored is Open for a policy known only by its canonical text as
// stored (Policy.String when the secret was sealed), which it does not
// parse: a secret sealed under a policy this version refuses, such as
// one an older version accepted, still opens, so that it can be sealed
// anew under a policy that parses. The admin layer is bound to the
// text: any other text fails with ErrBadSeal.
func (m *MasterKey) OpenStored(canonical string, sealed []byte) ([]byte, error) {
	_, adminCT, err := parseSealed(sealed)
	if err != nil {
		return nil, err
	}
	secret, err := hpke.Open(m.admin, adminKDF, adminAEAD, adminInfo(canonical), adminCT)
	if err != nil {
		return nil, fmt.Errorf("%w: admin layer does not open", ErrBadSeal)
	}
	return secret, nil
}

// Attributes returns the attributes the key was issued for.
func (k *NodeKey) Attributes() Attributes { return k.attrs }

// MarshalBinary encodes the public parameters, for storage beside the
// keystore.
func (p *Params) MarshalBinary() ([]byte, error) {
	abe, err := p.abe.MarshalBinary()
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	b.AddBytes([]byte(paramsMagic))
	b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(abe) })
	b.AddUint16LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(p.admin.Bytes()) })
	return b.Bytes()
}

// ParseParams decodes what Params.MarshalBinary encodes.
func ParseParams(data []byte) (*Params, error) {
	s := cryptobyte.String(data)
	var abe, admin cryptobyte.String
	if !s.Skip(len(paramsMagic)) || string(data[:len(paramsMagic)]) != paramsMagic ||
		!s.ReadUint24LengthPrefixed(&abe) || !s.ReadUint16LengthPrefixed(&admin) || !s.Empty() {
		return nil, fmt.Errorf("%w: geo parameters truncated or not %s", ErrBadSeal, paramsMagic)
	}
	p := new(Params)
	if err := p.abe.UnmarshalBinary(abe); err != nil {
		return nil, fmt.Errorf("%w: geo parameters: %v", ErrBadSeal, err)
	}
	var err error
	if p.admin, err = adminKEM.NewPublicKey(admin); err != nil {
		return nil, fmt.Errorf("%w: geo parameters: %v", ErrBadSeal, err)
	}
	return p, nil
}

// MarshalPEM encodes the master key. Store it 0600, away from edge nodes.
func (m *MasterKey) MarshalPEM() ([]byte, error) {
	abe, err := m.abe.MarshalBinary()
	if err != nil {
		return nil, err
	}
	msk, err := m.msk.MarshalBinary()
	if err != nil {
		return nil, err
	}
	admin, err := m.admin.Bytes()
	if err != nil {
		return nil, err
	}
	var b cryptobyte.Builder
	for _, part := range [][]byte{abe, msk, admin} {
		b.AddUint24LengthPrefixed(func(b *cryptobyte.Builder) { b.AddBytes(part) })
	}
	der, err := b.Bytes()
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: masterPEMType, Bytes: der}), nil
}

// ParseMasterKey decodes what MasterKey.MarshalPEM encodes.
func ParseMasterKey(pemBytes []byte) (*MasterKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != masterPEMType {
		return nil, fmt.Errorf("geo: master key: no %q PEM block", masterPEMType)
	}
	s := cryptobyte.String(block.Bytes)
	var abe, msk, admin cryptobyte.String
	if !s.ReadUint24LengthPrefixed(&abe) || !s.ReadUint24LengthPrefixed(&msk) || !s.ReadUint24LengthPrefixed(&admin) || !s.Empty() {
		return nil, errors.New("geo: master key: truncated")
	}
	m := new(MasterKey)
	if err := m.abe.UnmarshalBinary(abe); err != nil {
		return nil, fmt.Errorf("geo: master key: %w", err)
	}
	if err := m.msk.UnmarshalBinary(msk); err != nil {
		return nil, fmt.Errorf("geo: master key: %w", err)
	}
	var err error
	if m.admin, err = adminKEM.NewPrivateKey(admin); err != nil {
		return nil, fmt.Errorf("geo: master key: %w", err)
	}
	m.Params.admin = m.admin.PublicKey()
	return m, nil
}

// MarshalPEM encodes the node key with its attributes in a PEM header.
// Store it 0600 on the node it was issued for.
func (k *NodeKey) MarshalPEM() ([]byte, error) {
	der, err := k.abe.MarshalBinary()
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: nodePEMType, Headers: map[string]string{"Attributes": k.attrs.String()}, Bytes: der}), nil
}

// ParseNodeKey decodes what NodeKey.MarshalPEM encodes.
func ParseNodeKey(pemBytes []byte) (*NodeKey, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil || block.Type != nodePEMType {
		return nil, fmt.Errorf("geo: node key: no %q PEM block", nodePEMType)
	}
	attrs, err := ParseAttributes(block.Headers["Attributes"])
	if err != nil {
		return nil, fmt.Errorf("geo: node key: %w", err)
	}
	k := &NodeKey{attrs: attrs}
	if err := k.abe.UnmarshalBinary(block.Bytes); err != nil {
		return nil, fmt.Errorf("geo: node key: %w", err)
	}
	return k, nil
}

// ReadMasterKeyFile reads a master key from a 0600 file.
func ReadMasterKeyFile(path string) (*MasterKey, error) {
	data, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("geo: failed to read master key: %w", err)
	}
	return ParseMasterKey(data)
}

// ReadNodeKeyFile reads a node key from a 0600 file.
func ReadNodeKeyFile(path string) (*NodeKey, error) {
	data, err := secretfile.Read(path)
	if err != nil {
		return nil, fmt.Errorf("geo: failed to read node key: %w", err)
	}
	return ParseNodeKey(data)
}

// WriteMasterKeyFile writes m to a new 0600 file. It never overwrites
// one: that would strand every policy key sealed with it.
func WriteMasterKeyFile(path string, m *MasterKey) error {
	data, err := m.MarshalPEM()
	if err != nil {
		return err
	}
	if err := secretfile.Write(path, data); err != nil {
		return fmt.Errorf("geo: failed to write master key: %w", err)
	}
	return nil
}

// WriteNodeKeyFile writes k to a new 0600 file; it never overwrites one.
func WriteNodeKeyFile(path string, k *NodeKey) error {
	data, err := k.MarshalPEM()
	if err != nil {
		return err
	}
	if err := secretfile.Write(path, data); err != nil {
		return fmt.Errorf("geo: failed to write node key: %w", err)
	}
	return nil
}
