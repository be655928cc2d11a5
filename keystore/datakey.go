package keystore

import (
	"bytes"
	"context"
	"crypto/cipher"
	"crypto/hpke"
	"crypto/rand"
	"fmt"
	"time"

	"github.com/maypok86/otter/v2"
	"golang.org/x/crypto/chacha20poly1305"
)

// Envelope encryption of tenant keys (the KES2 sealed key format): each
// key is sealed with XChaCha20-Poly1305 under a random 256-bit data key,
// and the data key is sealed with HPKE (ML-KEM-768+X25519) to the
// recipient's key, the fleet key or a policy key, as a KES1 file sealed
// the tenant key itself. At rest a tenant key is therefore as safe as
// before, post-quantum included, but a node decapsulates once per data
// key, then opens each tenant key with an AEAD: microseconds rather than
// the ~200 µs of a decapsulation.
//
// A Store seals with one data key per recipient (and recipient public
// key) for its lifetime, made on its first seal to that recipient and
// never written unwrapped: every key that keyctl gen-tenants or an edge's
// renewals seal shares it. A writer needs only the recipient's public
// key, so an edge outside a policy (or keyctl without the geo master key)
// still seals keys under the policy, as before. Each file carries its
// wrapped data key, so no file is shared between tenants: a damaged file
// fails for its own tenant only, and no extra read is needed.
//
// A node keeps the data keys it opened, by recipient and wrap, in a
// bounded cache (Store.dataKeys): a different wrap, damaged or not, is a
// different entry, so one file can never change how another opens. Only
// a key the node itself opened with its fleet or policy key is cached, so
// a node outside a policy still opens none of its keys.

// nonceLen is the XChaCha20-Poly1305 nonce size: random nonces of 192 bits
// never collide however many keys share a data key.
const nonceLen = chacha20poly1305.NonceSizeX

// maxDataKeys bounds the opened data keys a Store keeps: one per sealing
// process and recipient, so a handful in practice.
const maxDataKeys = 10_000

// dataKeyInfo binds a wrapped data key to its recipient.
func dataKeyInfo(recipient string) []byte {
	return []byte("keyedge data key v2\x00" + recipient)
}

// entryAD binds a KES2 ciphertext to its recipient and certificate (or
// storage key), so a file copied over another tenant's does not open.
func entryAD(recipient, info string) []byte {
	return []byte("keyedge key.sealed v2\x00" + recipient + "\x00" + info)
}

// sealingKey is a data key a Store seals with. Fields are set once.
type sealingKey struct {
	pub  []byte // the recipient public key wrap is sealed to
	wrap []byte
	aead cipher.AEAD
}

// newSealingKey makes a random data key and wraps it to pub.
func newSealingKey(pub hpke.PublicKey, recipient string) (*sealingKey, error) {
	dk := make([]byte, chacha20poly1305.KeySize)
	defer clear(dk)
	rand.Read(dk)
	wrap, err := hpke.Seal(pub, sealKDF, sealAEAD, dataKeyInfo(recipient), dk)
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to wrap data key: %w", err)
	}
	aead, err := chacha20poly1305.NewX(dk)
	if err != nil {
		return nil, fmt.Errorf("keystore: failed to make data key: %w", err)
	}
	return &sealingKey{pub: pub.Bytes(), wrap: wrap, aead: aead}, nil
}

// seal seals a key (PKCS#8 DER) or secret for storage to pub, under the
// named recipient, bound to info (a certificate ID, or sealInfo of a
// storage key), with this Store's data key for that recipient.
func (s *Store) seal(pub hpke.PublicKey, recipient, info string, plaintext []byte) ([]byte, error) {
	k, err := s.sealingKey(pub, recipient)
	if err != nil {
		return nil, err
	}
	f := sealedFile{
		sealedHeader: sealedHeader{recipient, sealKEM.ID(), sealKDF.ID(), sealAEAD.ID()},
		envelope:     true,
		wrap:         k.wrap,
		nonce:        make([]byte, nonceLen),
	}
	rand.Read(f.nonce)
	f.sealed = k.aead.Seal(nil, f.nonce, plaintext, entryAD(recipient, info))
	return f.marshal(), nil
}

// sealingKey returns the Store's data key for recipient, making it on
// first use. A recipient whose public key changed (a policy key removed
// by an undone SetPolicy and made anew) gets a new data key.
func (s *Store) sealingKey(pub hpke.PublicKey, recipient string) (*sealingKey, error) {
	s.sealMu.Lock()
	defer s.sealMu.Unlock()
	if k := s.sealing[recipient]; k != nil && bytes.Equal(k.pub, pub.Bytes()) {
		return k, nil
	}
	k, err := newSealingKey(pub, recipient)
	if err != nil {
		return nil, err
	}
	if s.sealing == nil {
		s.sealing = map[string]*sealingKey{}
	}
	s.sealing[recipient] = k
	return k, nil
}

func newDataKeyCache() *otter.Cache[string, cipher.AEAD] {
	return otter.Must(&otter.Options[string, cipher.AEAD]{MaximumSize: maxDataKeys})
}

// dataKey returns the data key of a KES2 file, opening its wrap with
// priv, the private key of the recipient the file names, on first use.
// However many keys ask at once, each wrap is opened once.
func (s *Store) dataKey(priv hpke.PrivateKey, f sealedFile) (cipher.AEAD, error) {
	if last := s.lastDataKey.Load(); last != nil && last.recipient == f.recipient && last.wrap == string(f.wrap) {
		return last.aead, nil
	}
	id := f.recipient + "\x00" + string(f.wrap)
	// The load is CPU only (the one decapsulation the cache saves), so
	// it needs no context of its callers.
	aead, err := s.dataKeys.Get(context.Background(), id, otter.LoaderFunc[string, cipher.AEAD](func(context.Context, string) (cipher.AEAD, error) {
		start := time.Now()
		dk, err := hpke.Open(priv, sealKDF, sealAEAD, dataKeyInfo(f.recipient), f.wrap)
		if err != nil {
			s.metrics.dataKeyOpens.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("%w: data key does not open (tampered, or sealed for another key)", errMalformed)
		}
		defer clear(dk)
		aead, err := chacha20poly1305.NewX(dk)
		if err != nil {
			s.metrics.dataKeyOpens.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("%w: data key: %v", errMalformed, err)
		}
		s.metrics.dataKeyOpens.WithLabelValues("ok").Inc()
		s.metrics.dataKeyOpenSeconds.Observe(time.Since(start).Seconds())
		return aead, nil
	}))
	if err == nil {
		s.lastDataKey.Store(&openedDataKey{f.recipient, id[len(f.recipient)+1:], aead})
	}
	return aead, err
}

// openedDataKey is the data key a Store opened last, with the recipient
// and wrap it was opened from. Keys sealed by one process share one data
// key, so most cold tenants' keys find theirs here by comparing the wrap
// (~1.1 KB: an ML-KEM-768+X25519 encapsulation), without building the
// dataKeys cache key, which copies it (bench/RESULTS.md, "Cold tenants:
// CPU per cold load, session 25"). A wrap that differs in any byte is
// looked up in dataKeys as before.
type openedDataKey struct {
	recipient string
	wrap      string
	aead      cipher.AEAD
}

// openEntry opens a KES2 file's ciphertext with its data key.
func openEntry(aead cipher.AEAD, f sealedFile, info string) ([]byte, error) {
	key, err := aead.Open(nil, f.nonce, f.sealed, entryAD(f.recipient, info))
	if err != nil {
		return nil, fmt.Errorf("%w: sealed key does not open with its data key (tampered, or sealed for another certificate)", errMalformed)
	}
	return key, nil
}
