package edge

import (
	"cmp"
	"context"
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"github.com/prometheus/client_golang/prometheus"
)

// ECHKeys derives the fleet's Encrypted ClientHello keys from its shared
// secret, one X25519 key pair per epoch of Period (HPKE's DeriveKeyPair
// over HKDF-SHA256 of the secret and the epoch number), so every node
// decrypts the same configs with no coordination, and `keyctl ech`
// prints them for DNS from the same secret.
//
// A client with a config puts PublicName in its outer ClientHello and
// the tenant's name only in the inner one, encrypted to the config's
// key. PublicName needs a certificate in the keystore, like any tenant:
// a client whose config no edge accepts any more completes a handshake
// for the public name, gets the current config (retry_configs) and
// connects again with it.
//
// A config is accepted from the epoch before its own (a node whose clock
// is ahead, or DNS published early) through Accept epochs after it (DNS
// caches). The secret is rotated as TicketKeys' is: Previous keeps the
// old secret's configs accepted, never sent for retry.
//
// An ECHKeys must not be copied or changed after its first use; Reload
// takes a new one.
type ECHKeys struct {
	PublicName string        // the outer ClientHello's name: lower case, no trailing dot
	Secret     []byte        // the fleet secret, at least 32 bytes
	Previous   []byte        // the secret being rotated out, or nil
	Period     time.Duration // epoch length [24h], at least a minute
	Accept     int           // previous epochs whose configs are still accepted [1]

	// Now tells the time that picks the epoch [time.Now]. Tests set it
	// to step through epochs without waiting for them.
	Now func() time.Time

	cached atomic.Pointer[echEpochKeys] // the keys of the latest epoch asked for
}

// echEpochKeys are the keys accepted during one epoch.
type echEpochKeys struct {
	epoch int64
	keys  []tls.EncryptedClientHelloKey
}

// echKeyLabel is the HKDF info label of ECH keys, which keeps them apart
// from the ticket keys of the same secret.
const echKeyLabel = "keyedge ech key v1"

// ErrECHPublicName is returned for an ECH public name that is not a
// normalised DNS name.
var ErrECHPublicName = errors.New("edge: bad ECH public name")

func (k *ECHKeys) rotation() rotation {
	return rotation{period: cmp.Or(k.Period, 24*time.Hour), accept: cmp.Or(k.Accept, 1), now: k.Now}
}

// CheckECHPublicName reports whether name can be an ECH public name: a
// host name as the keystore stores names (lower case, no trailing dot),
// not a wildcard or an IP address. The error wraps ErrECHPublicName.
func CheckECHPublicName(name string) error {
	n, err := keystore.NormalizeName(name)
	if err != nil || n != name || n[0] == '*' {
		return fmt.Errorf("%w: %q (want a host name in lower case, without a trailing dot)", ErrECHPublicName, name)
	}
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("%w: %q is an IP address", ErrECHPublicName, name)
	}
	return nil
}

// check validates the public name, the secrets and the period.
func (k *ECHKeys) check() error {
	if err := CheckECHPublicName(k.PublicName); err != nil {
		return err
	}
	if len(k.Secret) < minSecret || (k.Previous != nil && len(k.Previous) < minSecret) {
		return ErrWeakSecret
	}
	if k.Period < 0 || k.Accept < 0 || k.rotation().period < time.Minute {
		return fmt.Errorf("edge: ECH period %v / accept %d out of range", k.Period, k.Accept)
	}
	return nil
}

// key derives epoch e's key pair from secret and returns its ECHConfig
// and the private key as crypto/tls takes it. The config ID is the
// epoch's low byte: distinct among the epochs accepted at once, and the
// same on every node.
func (k *ECHKeys) key(secret []byte, e int64) (tls.EncryptedClientHelloKey, error) {
	priv, err := hpke.DHKEM(ecdh.X25519()).DeriveKeyPair(epochKey(secret, echKeyLabel, e, 32))
	if err != nil {
		return tls.EncryptedClientHelloKey{}, fmt.Errorf("edge: ECH key: %w", err)
	}
	privBytes, err := priv.Bytes()
	if err != nil {
		return tls.EncryptedClientHelloKey{}, fmt.Errorf("edge: ECH key: %w", err)
	}
	config, err := echConfig{id: uint8(e), publicKey: priv.PublicKey().Bytes(), publicName: k.PublicName}.marshal()
	if err != nil {
		return tls.EncryptedClientHelloKey{}, err
	}
	return tls.EncryptedClientHelloKey{Config: config, PrivateKey: privBytes}, nil
}

// Keys returns the ECH keys accepted at t, for tls.Config's
// EncryptedClientHelloKeys: Secret's for the current epoch first (the
// only one sent as retry config), then its next and Accept previous
// epochs', then the same epochs of Previous. crypto/tls tries them in
// order.
func (k *ECHKeys) Keys(t time.Time) ([]tls.EncryptedClientHelloKey, error) {
	window := k.rotation().window(t)
	var keys []tls.EncryptedClientHelloKey
	for _, secret := range [][]byte{k.Secret, k.Previous} {
		if secret == nil {
			continue
		}
		for _, e := range window {
			key, err := k.key(secret, e)
			if err != nil {
				return nil, err
			}
			keys = append(keys, key)
		}
	}
	keys[0].SendAsRetry = true
	return keys, nil
}

// keys returns the keys accepted now by the rotation's clock, derived
// once per epoch.
func (k *ECHKeys) keys() ([]tls.EncryptedClientHelloKey, error) {
	r := k.rotation()
	now := r.time()
	e := r.epoch(now)
	if c := k.cached.Load(); c != nil && c.epoch == e {
		return c.keys, nil
	}
	keys, err := k.Keys(now)
	if err != nil {
		return nil, err
	}
	k.cached.Store(&echEpochKeys{epoch: e, keys: keys})
	return keys, nil
}

// ECHPublication is what to publish in DNS (the ech SvcParam of the
// HTTPS records of every tenant name) at a given time, and when to
// change it.
type ECHPublication struct {
	PublicName string
	// Current is the ECHConfigList of the epoch containing the time:
	// publish it now.
	Current []byte
	// Next is the ECHConfigList of the next epoch, which edges already
	// accept: publish it from NextFrom on, or earlier.
	Next     []byte
	NextFrom time.Time
	// CurrentUntil is when edges stop accepting Current: publish Next
	// at least the records' TTL before then.
	CurrentUntil time.Time
}

// Publication returns what to publish in DNS at time t.
func (k *ECHKeys) Publication(t time.Time) (ECHPublication, error) {
	r := k.rotation()
	e := r.epoch(t)
	p := ECHPublication{PublicName: k.PublicName, NextFrom: r.start(e + 1), CurrentUntil: r.start(e + 1 + int64(r.accept))}
	for _, out := range []struct {
		list  *[]byte
		epoch int64
	}{{&p.Current, e}, {&p.Next, e + 1}} {
		key, err := k.key(k.Secret, out.epoch)
		if err != nil {
			return ECHPublication{}, err
		}
		if *out.list, err = echConfigList(key.Config); err != nil {
			return ECHPublication{}, fmt.Errorf("edge: ECH config list: %w", err)
		}
	}
	return p, nil
}

// echKeys is the tls.Config hook: the keys of the current settings'
// ECHKeys, none when ECH is off. crypto/tls calls it with the outer
// ClientHello of a client offering ECH, before any other hook, and
// again for the retry configs of every TLS 1.3 handshake; it notes on
// the connection that the client offered ECH, for the metrics.
func (s *Server) echKeys(hello *tls.ClientHelloInfo) ([]tls.EncryptedClientHelloKey, error) {
	ech := s.settings.Load().ech
	if ech == nil {
		return []tls.EncryptedClientHelloKey{}, nil
	}
	if tc, ok := hello.Conn.(*trackedConn); ok && slices.Contains(hello.Extensions, echVersion) {
		tc.facts.echOffered = true
	}
	return ech.keys()
}

// warnECHPublicName logs a warning when the ECH public name has no
// certificate in the keystore: clients whose config is stale could not
// verify the edge, so they could not retry.
func (s *Server) warnECHPublicName(ech *ECHKeys) {
	if ech == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := s.store.Lookup(ctx, ech.PublicName); err != nil {
		s.log.Warn("edge: the ECH public name has no certificate in the keystore: clients with a stale ECH config cannot retry (import or issue one)", "public_name", ech.PublicName, "err", err)
	}
}

// echCounters are the keyedge_edge_ech_handshakes_total children.
type echCounters struct {
	accepted, rejected, none prometheus.Counter
}

// observeECH counts a completed handshake by what became of ECH.
func (m *metrics) observeECH(c *tls.Conn, cs *tls.ConnectionState) {
	tc, _ := c.NetConn().(*trackedConn)
	switch {
	case cs.ECHAccepted:
		m.echResults.accepted.Inc()
	case tc != nil && tc.facts.echOffered:
		m.echResults.rejected.Inc()
	default:
		m.echResults.none.Inc()
	}
}
