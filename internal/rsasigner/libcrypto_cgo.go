//go:build cgo && linux

package rsasigner

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

// The functions of libcrypto.so.3 this package calls, with their OpenSSL
// 3 prototypes (objects as void *: only libcrypto looks inside them).
// They are resolved by ke_load; a call before a successful ke_load is a
// bug of the Go side, which only signs with keys ke_load_key made.
typedef struct {
	void *(*d2i_PrivateKey)(int type, void **a, const unsigned char **pp, long length);
	void (*EVP_PKEY_free)(void *pkey);
	int (*EVP_PKEY_get_size)(const void *pkey);
	void *(*EVP_PKEY_CTX_new_from_pkey)(void *libctx, void *pkey, const char *propq);
	void (*EVP_PKEY_CTX_free)(void *ctx);
	int (*EVP_PKEY_sign_init)(void *ctx);
	int (*EVP_PKEY_CTX_set_rsa_padding)(void *ctx, int pad);
	int (*EVP_PKEY_CTX_set_rsa_pss_saltlen)(void *ctx, int len);
	int (*EVP_PKEY_CTX_set_signature_md)(void *ctx, const void *md);
	int (*EVP_PKEY_sign)(void *ctx, unsigned char *sig, size_t *siglen, const unsigned char *tbs, size_t tbslen);
	unsigned long (*ERR_get_error)(void);
	void (*ERR_error_string_n)(unsigned long e, char *buf, size_t len);
	void (*ERR_clear_error)(void);
	const char *(*OpenSSL_version)(int type);
	// The digests, in the order of the Go digest constants.
	const void *(*md[6])(void);
} ke_lib;

static ke_lib lib;

#define KE_EVP_PKEY_RSA 6 // EVP_PKEY_RSA = NID_rsaEncryption

// ke_sym resolves name into *fn, or writes why not into err.
static int ke_sym(void *h, const char *name, void **fn, char *err, size_t errlen) {
	*fn = dlsym(h, name);
	if (*fn == NULL) {
		snprintf(err, errlen, "missing %s", name);
		return 0;
	}
	return 1;
}

// ke_load opens path and resolves every function; lib changes only when
// all resolve. It returns 1, or 0 with the reason in err.
static int ke_load(const char *path, char *err, size_t errlen) {
	void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
	if (h == NULL) {
		const char *e = dlerror();
		snprintf(err, errlen, "%s", e ? e : "dlopen failed");
		return 0;
	}
	ke_lib t;
	static const char *mds[6] = {"EVP_md5_sha1", "EVP_sha1", "EVP_sha224", "EVP_sha256", "EVP_sha384", "EVP_sha512"};
	int ok = ke_sym(h, "d2i_PrivateKey", (void **)&t.d2i_PrivateKey, err, errlen) &&
		ke_sym(h, "EVP_PKEY_free", (void **)&t.EVP_PKEY_free, err, errlen) &&
		ke_sym(h, "EVP_PKEY_get_size", (void **)&t.EVP_PKEY_get_size, err, errlen) &&
		ke_sym(h, "EVP_PKEY_CTX_new_from_pkey", (void **)&t.EVP_PKEY_CTX_new_from_pkey, err, errlen) &&
		ke_sym(h, "EVP_PKEY_CTX_free", (void **)&t.EVP_PKEY_CTX_free, err, errlen) &&
		ke_sym(h, "EVP_PKEY_sign_init", (void **)&t.EVP_PKEY_sign_init, err, errlen) &&
		ke_sym(h, "EVP_PKEY_CTX_set_rsa_padding", (void **)&t.EVP_PKEY_CTX_set_rsa_padding, err, errlen) &&
		ke_sym(h, "EVP_PKEY_CTX_set_rsa_pss_saltlen", (void **)&t.EVP_PKEY_CTX_set_rsa_pss_saltlen, err, errlen) &&
		ke_sym(h, "EVP_PKEY_CTX_set_signature_md", (void **)&t.EVP_PKEY_CTX_set_signature_md, err, errlen) &&
		ke_sym(h, "EVP_PKEY_sign", (void **)&t.EVP_PKEY_sign, err, errlen) &&
		ke_sym(h, "ERR_get_error", (void **)&t.ERR_get_error, err, errlen) &&
		ke_sym(h, "ERR_error_string_n", (void **)&t.ERR_error_string_n, err, errlen) &&
		ke_sym(h, "ERR_clear_error", (void **)&t.ERR_clear_error, err, errlen) &&
		ke_sym(h, "OpenSSL_version", (void **)&t.OpenSSL_version, err, errlen);
	for (int i = 0; ok && i < 6; i++) {
		ok = ke_sym(h, mds[i], (void **)&t.md[i], err, errlen);
	}
	if (!ok) {
		dlclose(h);
		return 0;
	}
	lib = t;
	return 1;
}

static const char *ke_version(void) { return lib.OpenSSL_version(0); } // OPENSSL_VERSION

// ke_error takes the first error of this thread's queue into err and
// empties the queue.
static void ke_error(char *err, size_t errlen) {
	unsigned long e = lib.ERR_get_error();
	if (e == 0) {
		snprintf(err, errlen, "unknown error");
	} else {
		lib.ERR_error_string_n(e, err, errlen);
	}
	lib.ERR_clear_error();
}

// ke_load_key parses a PKCS #1 RSAPrivateKey, or returns NULL with the
// reason in err.
static void *ke_load_key(const unsigned char *der, long len, char *err, size_t errlen) {
	const unsigned char *p = der;
	void *pkey = lib.d2i_PrivateKey(KE_EVP_PKEY_RSA, NULL, &p, len);
	if (pkey == NULL) {
		ke_error(err, errlen);
	}
	return pkey;
}

static int ke_size(void *pkey) { return lib.EVP_PKEY_get_size(pkey); }

static void ke_free_key(void *pkey) { lib.EVP_PKEY_free(pkey); }

// ke_sign signs the digest tbs with pkey, all in one call so that the
// error queue read on failure is this thread's. It returns 1, or 0 with
// the reason in err.
static int ke_sign(void *pkey, int pad, int md, int salt, const unsigned char *tbs, size_t tbslen,
		unsigned char *sig, size_t *siglen, char *err, size_t errlen) {
	void *ctx = lib.EVP_PKEY_CTX_new_from_pkey(NULL, pkey, NULL);
	int ok = ctx != NULL &&
		lib.EVP_PKEY_sign_init(ctx) > 0 &&
		lib.EVP_PKEY_CTX_set_rsa_padding(ctx, pad) > 0 &&
		lib.EVP_PKEY_CTX_set_signature_md(ctx, lib.md[md]()) > 0 &&
		(pad != 6 || lib.EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, salt) > 0) &&
		lib.EVP_PKEY_sign(ctx, sig, siglen, tbs, tbslen) > 0;
	if (!ok) {
		ke_error(err, errlen);
	}
	lib.EVP_PKEY_CTX_free(ctx);
	return ok;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"unsafe"
)

// errLen is the size of the C error buffers.
const errLen = 256

// libMu serialises loads and guards loaded and loadedPath: the version
// and path of the library that loaded first. The C table lib never
// changes after it, as keys made with it may be signing.
var (
	libMu      sync.Mutex
	loaded     string
	loadedPath string
)

// loadLibrary opens the libcrypto at path (a path, or a name the dynamic
// linker resolves) and returns its version. A process uses one
// libcrypto: loading another after one loaded is an error.
func loadLibrary(path string) (string, error) {
	libMu.Lock()
	defer libMu.Unlock()
	if loaded != "" {
		if path != loadedPath {
			return "", fmt.Errorf("loading %s: %s is already in use", path, loadedPath)
		}
		return loaded, nil
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var cerr [errLen]C.char
	if C.ke_load(cpath, &cerr[0], errLen) == 0 {
		return "", fmt.Errorf("loading %s: %s", path, C.GoString(&cerr[0]))
	}
	loaded, loadedPath = C.GoString(C.ke_version()), path
	return loaded, nil
}

// pkey is an EVP_PKEY, freed with EVP_PKEY_free when the pkey is
// collected.
type pkey struct {
	p unsafe.Pointer
}

// loadKey copies a PKCS #1 RSA private key into libcrypto. The caller
// zeroes der.
func loadKey(der []byte) (*pkey, error) {
	if !libraryLoaded() {
		return nil, errors.New("rsasigner: libcrypto is not loaded")
	}
	if len(der) == 0 {
		return nil, errors.New("rsasigner: empty key")
	}
	var cerr [errLen]C.char
	p := C.ke_load_key((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)), &cerr[0], errLen)
	if p == nil {
		return nil, fmt.Errorf("rsasigner: OpenSSL could not read the key: %s", C.GoString(&cerr[0]))
	}
	k := &pkey{p: p}
	runtime.AddCleanup(k, func(p unsafe.Pointer) { C.ke_free_key(p) }, p)
	return k, nil
}

// libraryLoaded reports, under libMu, whether a library has loaded.
func libraryLoaded() bool {
	libMu.Lock()
	defer libMu.Unlock()
	return loaded != ""
}

// size is the key's modulus length in bytes.
func (k *pkey) size() int {
	n := int(C.ke_size(k.p))
	runtime.KeepAlive(k)
	return n
}

// sign signs tbs, a non-empty digest, into a new signature of n bytes.
func (k *pkey) sign(pad int, md digest, salt int, tbs []byte, n int) ([]byte, error) {
	sig := make([]byte, n)
	sigLen := C.size_t(n)
	var cerr [errLen]C.char
	ok := C.ke_sign(k.p, C.int(pad), C.int(md), C.int(salt),
		(*C.uchar)(unsafe.Pointer(&tbs[0])), C.size_t(len(tbs)),
		(*C.uchar)(unsafe.Pointer(&sig[0])), &sigLen, &cerr[0], errLen)
	runtime.KeepAlive(k)
	if ok == 0 {
		return nil, fmt.Errorf("rsasigner: OpenSSL signing failed: %s", C.GoString(&cerr[0]))
	}
	if int(sigLen) != n {
		return nil, fmt.Errorf("rsasigner: OpenSSL made a %d-byte signature for a %d-byte key", sigLen, n)
	}
	return sig, nil
}
