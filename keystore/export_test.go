package keystore

import "encoding/json"

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
// of policy policyID, as key.sealed holds it.
func SealToPolicyKey(pub []byte, policyID, certID string, der []byte) ([]byte, error) {
	pk, err := sealKEM.NewPublicKey(pub)
	if err != nil {
		return nil, err
	}
	return sealTo(pk, policyRecipient+policyID, certID, der)
}

// MarshalPolicyFile encodes policies/<id>.
func MarshalPolicyFile(policy string, pub, sealed []byte) ([]byte, error) {
	return json.Marshal(policyFile{Policy: policy, Public: pub, Sealed: sealed})
}
