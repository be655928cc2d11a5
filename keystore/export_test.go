package keystore

import (
	"crypto/hpke"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
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

// DowngradeKeys rewrites every fleet-sealed key under dir, a keystore
// directory, as keyedge wrote it before envelope encryption (KES1, in
// key.sealed beside a JSON record: SplitKeys), for benchmarks that
// compare the two.
func DowngradeKeys(dir string, fleet *FleetKey) error {
	if err := SplitKeys(dir); err != nil {
		return err
	}
	opener := newOpener()
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "key.sealed" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		f, err := parseSealed(data)
		if err != nil {
			return err
		}
		id := filepath.Base(filepath.Dir(path))
		der, err := opener.open(fleet.priv, f, id)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if data, err = sealV1(fleet.priv.PublicKey(), f.recipient, id, der); err != nil {
			return err
		}
		return os.WriteFile(path, data, 0o600)
	})
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

// SplitKeys rewrites every record under dir, a keystore directory, in
// the layout before the key moved into the record: a JSON record, and
// its sealed key, if any, in key.sealed beside it.
func SplitKeys(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.Name() != "record" {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil || !isRecordFile(data) {
			return err
		}
		var r record
		if err := parseRecordFile(data, &r); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if r.Sealed != nil {
			if err := os.WriteFile(filepath.Join(filepath.Dir(path), "key.sealed"), r.Sealed, 0o600); err != nil {
				return err
			}
		}
		if data, err = json.Marshal(&r); err != nil {
			return err
		}
		return os.WriteFile(path, data, 0o600)
	})
}

// SealedKey returns the sealed key held in the record file at path, nil
// when it holds none.
func SealedKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r record
	if err := parseRecordFile(data, &r); err != nil {
		return nil, err
	}
	return r.Sealed, nil
}

// SetSealedKey rewrites the record file at path with sealed as its key
// (nil: none), and nothing else changed.
func SetSealedKey(path string, sealed []byte) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	var r record
	if err := parseRecordFile(data, &r); err != nil {
		return err
	}
	r.Sealed = sealed
	if data, err = r.marshal(); err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o600)
}
