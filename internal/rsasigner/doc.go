// Package rsasigner signs with RSA private keys through OpenSSL's
// libcrypto when the process can load it, and through crypto/rsa
// otherwise.
//
// An RSA-2048 signature costs crypto/rsa about three times what it costs
// OpenSSL 3 (bench/RESULTS.md), and it is most of a full TLS handshake's
// CPU with an RSA certificate. New picks the backend once per process
// (Options.Backend: auto, openssl or go); Signers.Wrap then turns each
// *rsa.PrivateKey a server loads into a *Signer backed by an EVP_PKEY,
// and leaves other keys, and every key under the Go backend, as they are.
//
// libcrypto.so.3 is opened at run time (dlopen), with this package's own
// prototypes of the dozen functions it calls: building needs a C
// compiler but no OpenSSL headers, and a binary runs where libcrypto is
// missing (auto then signs with Go, and says so once in the log and in
// the keyedge_rsa_signer_backend metric). The environment variable
// KEYEDGE_LIBCRYPTO names another library to open (a path, or a name the
// dynamic linker resolves) in its place. Built with CGO_ENABLED=0, or for
// another system than Linux, the package has the Go backend only.
package rsasigner
