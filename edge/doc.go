// Package edge terminates TLS for every tenant in a keystore and proxies
// their requests to their origins.
//
// A Server accepts TCP connections (behind an optional PROXY protocol
// v1/v2 listener that trusts only configured networks), completes each
// TLS handshake under its own deadline, and serves HTTP/1.1 and HTTP/2
// through one shared reverse proxy. The certificate for a ClientHello is
// found by SNI in the keystore (exact name, then its wildcard): among a
// name's certificates the first the client supports wins, ECDSA before
// RSA. Nothing on the handshake path scans the tenants.
//
// Signing goes through a RouteFunc, called with the handshake's context
// only when the handshake needs its signature: LocalRoute opens the
// tenant's sealed key from the keystore; a keyless route asks a key
// server instead.
//
// Key exchange offers X25519MLKEM768, X25519 and P-256 by default, with
// crypto/tls preferring the hybrid post-quantum group; TLS 1.2 is limited
// to ECDHE with AEAD suites.
package edge
