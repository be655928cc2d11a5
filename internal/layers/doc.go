// Package layers holds no code: its test encodes which way imports point
// in this module, one layer per row, and fails naming every import that
// points up or sideways.
//
//	cmd/…, bench commands              binaries: flags and plumbing
//	internal/config, bench, benchtest  the binaries' files and harnesses
//	edge, certs/acme, internal/backend terminate TLS; certificates; storage by URL;
//	internal/testworld                 the demo's and tests' world
//	keyserver, internal/testpki        keyless signing; the test PKI
//	keystore                           tenants, sealed keys
//	keystore/geo, storages             geo sealing; where a keystore lives
//	certs, keyserver/wire              PEM helpers; the wire format
//	internal leaf helpers              secret files, logs, TLS settings, CLI conventions, tests
//
// A package imports only packages of lower layers, so edge never imports
// certs/acme (it takes hooks) and keystore never imports a key server.
package layers
