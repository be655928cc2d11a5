// Package certs is a small test PKI for a multi-tenant TLS edge.
//
// It creates a self-signed root [CA] and issues tenant leaf certificates from
// it, fast enough to mint hundreds of thousands of tenants for demos, tests and
// benchmarks. A [CA] is immutable after creation, so [CA.Issue] may be called
// from many goroutines at once without locking; serial numbers are random
// rather than counted, so there is no shared state on the issuing path.
//
// The package also parses the PEM files such a deployment exchanges
// ([ParseChainPEM], [ParseKeyPEM]) and checks that a key belongs to a
// certificate ([KeyMatchesCert]).
//
// This is not a production CA: there is no revocation, no policy enforcement
// and no protection of the CA key beyond file permissions.
package certs
