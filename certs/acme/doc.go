// Package acme obtains tenants' certificates from an ACME CA (Let's
// Encrypt and the like) into the keystore and keeps them current.
//
// A [Manager] orders certificates for the names declared for it
// ([Manager.Obtain], [Manager.Declare]), renews them in their renewal
// window ([Manager.Run]), keeps their OCSP staples fresh, replaces revoked
// ones, and, with an [OnDemandPolicy], obtains a certificate during the
// handshake for a name that has none ([Manager.OnDemand]). It answers the
// CA's HTTP-01 ([Manager.HTTPHandler]) and TLS-ALPN-01
// ([Manager.GetChallengeConfig]) validations for orders of any node that
// shares the storage. The nodes of a fleet share the account, the
// per-name locks and the index of managed names in that storage, so each
// name is ordered once.
//
// The ACME protocol itself is certmagic's. The edge does not import this
// package: the binary hands the Manager's methods to it as hooks.
package acme
