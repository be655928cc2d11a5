//go:build !cgo || !linux

package rsasigner

import "errors"

// errNotBuilt is why OpenSSL is unavailable in a build without cgo, or
// for another system than Linux.
var errNotBuilt = errors.New("this keyedge binary was built without cgo (CGO_ENABLED=0) or not for Linux")

// pkey is never made in this build.
type pkey struct{}

func loadLibrary(string) (string, error) { return "", errNotBuilt }

func loadKey([]byte) (*pkey, error) { return nil, errNotBuilt }

func (*pkey) size() int { return 0 }

func (*pkey) sign(int, digest, int, []byte, int) ([]byte, error) { return nil, errNotBuilt }
