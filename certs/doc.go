// Package certs holds the small certificate and key helpers the other
// packages share: parsing PEM chains and private keys ([ParseChainPEM],
// [ParseKeyPEM], [ParsePrivateKey]), reading CA pools ([ReadCertPool]),
// checking that a key belongs to a certificate ([KeyMatchesCert],
// [SamePublicKey]), and a key pair on disk re-read when an external job
// renews it ([KeyPairFile]).
//
// It is a leaf: it imports no other package of keyedge but
// internal/secretfile. The test CA is in internal/testpki, ACME in
// certs/acme.
package certs
