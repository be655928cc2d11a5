package keystore

import (
	"crypto/hpke"
	"encoding/json"
	"fmt"
)

// Exported for tests that build the files an older keyedge wrote, which
// today's writers refuse to write.

// NewPolicyKeyPair returns a new policy key pair: the public key, and
// the seed a policy file keeps sealed under its policy.
func NewPolicyKeyPair() (pub, seed []byte, err error) {
	priv, err := sealKEM.GenerateKey()
	if err != nil {
		return nil, nil, err
	}
	seed, err = priv.Bytes()
	return priv.PublicKey().Bytes(), seed, err
}

// SealToPolicyKey seals a tenant key's PKCS#8 DER to the policy key pub
// of policy policyID, as key.sealed held it before envelope encryption.
func SealToPolicyKey(pub []byte, policyID, certID string, der []byte) ([]byte, error) {
	pk, err := sealKEM.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return sealV1(pk, policyRecipient+policyID, certID, der)
}

// sealV1 seals key as keyedge wrote key.sealed before envelope
// encryption (KES1): HPKE straight to the recipient's public key, bound
// to recipient and certID.
func sealV1(pub hpke.PublicKey, recipient, certID string, key []byte) ([]byte, error) {
	f := sealedFile{sealedHeader: sealedHeader{recipient, sealKEM.ID(), sealKDF.ID(), sealAEAD.ID()}}
	ct, err := hpke.Seal(pub, sealKDF, sealAEAD, f.infoV1(certID), key)
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to seal key: %w", err)
	}
	f.sealed = ct
	return f.marshal(), nil
}

// newOpener returns a Store that only opens sealed files (Store.open),
// for tests of the format without storage.
func newOpener() *Store {
	return &Store{metrics: newMetrics(), dataKeys: newDataKeyCache()}
}

// MarshalPolicyFile encodes policies/<id>.
func MarshalPolicyFile(policy string, pub, sealed []byte) ([]byte, error) {
	return json.Marshal(policyFile{Policy: policy, Public: pub, Sealed: sealed})
}
