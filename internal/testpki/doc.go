// Package testpki is the test PKI of demos, tests and benchmarks: a
// self-signed root [CA] that issues tenant leaf certificates, and a bulk
// generator that stores numbered test tenants in a keystore
// ([CA.GenerateTenants]).
//
// Issuing is fast enough to mint hundreds of thousands of tenants. A [CA]
// is immutable after creation, so [CA.Issue] may be called from many
// goroutines at once without locking; serial numbers are random rather
// than counted, so there is no shared state on the issuing path.
//
// This is not a production CA: there is no revocation, no policy
// enforcement and no protection of the CA key beyond file permissions.
// Production certificates come from the tenant (keyctl import) or from an
// ACME CA (package acme).
package testpki
