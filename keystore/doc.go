// Package keystore stores the certificates and sealed private keys of
// many tenants and finds them by TLS server name.
//
// The storage (a Storage: certmagic.FileStorage on local disk,
// keystore/redisstore for a fleet sharing Redis) is the index, so
// opening a keystore of a million tenants reads nothing per tenant:
//
//	names/<h2>/<hostname>        certificate IDs serving the name, with their key algorithm
//	certs/<id2>/<id>/record      meta (tenant, origin, policy, route, version), DER chain, OCSP staple
//	certs/<id2>/<id>/key.sealed  the private key, sealed at rest
//	changes/head, changes/<seq>  the change journal
//	trash/<id>                   replaced certificates awaiting deletion (Options.DeleteGrace)
//	geo/params                   the geo master key's public parameters
//	policies/<policy ID>         one key pair per distinct geo policy, sealed under the policy
//
// Lookup normalises the name (so a hostile SNI never becomes a path),
// tries the exact name and then its one-label wildcard, and keeps what
// it loaded in a cache bounded by entries and bytes. Concurrent misses
// for one name share one load, and unknown names are remembered for a
// short time. A certificate's private key is read and unsealed only when
// a local signature first needs it (Cert.PrivateKey).
//
// Writers (Put, Remove) append to a change journal in the same storage;
// every serving Store follows it and drops just the entries a write
// touched, so a renewed or removed certificate is served within
// PollInterval plus NegativeTTL on every node, at a cost that follows
// the rate of change. A command that opens a Store to do one thing
// (keyctl) sets Options.OneShot and starts none of that.
//
// Private keys are sealed at rest by envelope encryption (datakey.go):
// each under a data key with XChaCha20-Poly1305, the data key sealed with
// HPKE over the hybrid post-quantum KEM ML-KEM-768+X25519, so a node
// decapsulates once per data key and opens each tenant key with an AEAD.
// Data keys of keys with no geo policy are sealed to the FleetKey every
// node holds, those of keys with a policy (Meta.Policy, see package geo)
// to a per-policy key whose private half is itself sealed under the
// policy with CP-ABE (policy.go). Keys sealed before envelope encryption
// (one HPKE seal per key) still open; Reseal rewrites them. A node opens a restricted key only when its
// NodeKey's attributes satisfy the policy; otherwise PrivateKey fails
// with ErrCannotOpen and the edge signs through a key server the policy
// admits. Policy keys open once per node, in the background at Open.
package keystore
