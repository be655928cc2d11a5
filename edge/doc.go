// Package edge terminates TLS for every tenant in a keystore and proxies
// their requests to their origins. It takes plain Options: the keystore
// (package keystore) holds the tenants, a keyserver.Client signs for
// keys this node does not hold, and ACME comes in as hooks; reading
// edge.yaml is package internal/config's job.
//
// A Server accepts TCP connections (behind an optional PROXY protocol
// v1/v2 listener that trusts only configured networks), completes each
// TLS handshake under its own deadline, and serves HTTP/1.1 and HTTP/2
// through one shared reverse proxy. The certificate for a ClientHello is
// found by SNI in the keystore (exact name, then its wildcard): among a
// name's certificates the first the client supports wins, ECDSA before
// RSA. Nothing on the handshake path scans the tenants.
//
// The signature is routed only when the handshake needs it, under the
// handshake's context: a tenant's key is opened from the keystore when
// it has no geo policy or its policy admits this node's attributes
// (those the keystore's node key was issued for); a keyless tenant's
// signature goes to its own key servers; a restricted key this node may
// not open goes to the key servers of the directory (Options.KeyServers)
// whose attributes the policy admits, most preferred first, failing over
// in order. With none, the handshake fails and
// keyedge_edge_route_decisions_total{route="none"} counts it.
//
// ACME comes in as hooks (Options.ACME, an [ACME]): the binary hands
// the edge an ACME manager's functions for TLS-ALPN-01 validations,
// on-demand issuance and the port-80 HTTP-01 answers, so the edge
// imports no ACME package. [NewHTTPServer] is the port-80 server, which
// redirects everything else to https.
//
// Encrypted ClientHello (Options.ECH, an [ECHKeys]) hides the tenant's
// name under one public name for the fleet: the keys derive per epoch
// from the fleet secret, so every node accepts the same configs, and a
// client with a stale one gets the current one to retry with.
//
// Key exchange offers X25519MLKEM768, X25519 and P-256 by default, with
// crypto/tls preferring the hybrid post-quantum group; TLS 1.2 is limited
// to ECDHE with AEAD suites.
package edge
