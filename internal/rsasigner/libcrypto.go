package rsasigner

// The values of OpenSSL 3's ABI this package passes (openssl/rsa.h), and
// the digests it signs with, as indexes of libcrypto_cgo.go's table.
const (
	padPKCS1 = 1 // RSA_PKCS1_PADDING
	padPSS   = 6 // RSA_PKCS1_PSS_PADDING

	saltDigest = -1 // RSA_PSS_SALTLEN_DIGEST: the hash's length
	saltMax    = -3 // RSA_PSS_SALTLEN_MAX: the largest the key allows
)

// digest is an index of the C table of EVP_MD getters, in this order.
type digest int

const (
	mdMD5SHA1 digest = iota
	mdSHA1
	mdSHA224
	mdSHA256
	mdSHA384
	mdSHA512
)
