package testworld

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"os"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
)

// ClientIdentity issues the mTLS identity of a key server client (an
// edge, a benchmark) named name, which key server rules match as
// "dns:<name>".
func (w *World) ClientIdentity(name string) (*testpki.Leaf, error) {
	return w.identity(testpki.LeafSpec{Names: []string{name}, ClientAuth: true})
}

// ServerIdentity issues the mTLS identity of a key server named name,
// valid for 127.0.0.1.
func (w *World) ServerIdentity(name string) (*testpki.Leaf, error) {
	return w.identity(testpki.LeafSpec{Names: []string{name}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
}

func (w *World) identity(spec testpki.LeafSpec) (*testpki.Leaf, error) {
	id, err := w.IdentityCA.Issue(spec)
	if err != nil {
		return nil, fmt.Errorf("testworld: failed to issue identity: %w", err)
	}
	return id, nil
}

// ClientTLS is the TLS configuration of a key server client presenting
// id and trusting the identity CA.
func (w *World) ClientTLS(id *testpki.Leaf) *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{{Certificate: id.Chain, PrivateKey: id.Key}},
		RootCAs:      w.identityPool(),
	}
}

func (w *World) identityPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(w.IdentityCA.Certificate())
	return pool
}

// HoldKey writes leaf's chain and key as <base>.pem and <base>.key into
// Dir/keyserver-keys, where key servers without a Store find their keys,
// and returns the chain's file. The edge's keystore never sees the key.
func (w *World) HoldKey(base string, leaf *testpki.Leaf) (string, error) {
	if err := os.MkdirAll(w.Path(KeysDir), 0o700); err != nil {
		return "", fmt.Errorf("testworld: %w", err)
	}
	certFile := w.Path(KeysDir, base+".pem")
	if err := leaf.WritePEM(certFile, w.Path(KeysDir, base+".key")); err != nil {
		return "", fmt.Errorf("testworld: %w", err)
	}
	return certFile, nil
}

// KeyServer describes an in-process key server.
type KeyServer struct {
	Name string         // the DNS name of its identity (ServerIdentity)
	Rule keyserver.Rule // its one authorizer rule: which clients may use which keys
	// Store holds its keys: a keystore opened with the node key of the
	// key server's attributes. Nil: the keys in Dir/keyserver-keys.
	Store *keystore.Store
}

// StartKeyServer runs ks on 127.0.0.1 until Close and returns its
// address. It accepts clients with identities from IdentityCA that
// ks.Rule names.
func (w *World) StartKeyServer(ks KeyServer) (string, error) {
	addr, err := w.startKeyServer(ks)
	if err != nil {
		return "", fmt.Errorf("testworld: key server %s: %w", ks.Name, err)
	}
	return addr, nil
}

func (w *World) startKeyServer(ks KeyServer) (string, error) {
	id, err := w.ServerIdentity(ks.Name)
	if err != nil {
		return "", err
	}
	auth, err := keyserver.NewAuthorizer([]keyserver.Rule{ks.Rule})
	if err != nil {
		return "", err
	}
	var keys keyserver.KeySource
	if ks.Store != nil {
		keys = keyserver.NewKeystoreSource(ks.Store)
	} else {
		dir, err := keyserver.NewDirSource(w.Path(KeysDir), keyserver.DirOptions{Logger: discard})
		if err != nil {
			return "", err
		}
		w.onClose(dir.Close)
		keys = dir
	}
	srv, err := keyserver.NewServer(keyserver.ServerOptions{
		Keys:       keys,
		Authorizer: auth,
		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{{Certificate: id.Chain, PrivateKey: id.Key}}, ClientCAs: w.identityPool()},
		Logger:     discard,
	})
	if err != nil {
		return "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	go srv.Serve(ln)
	w.onClose(func() error { return srv.Shutdown(context.Background()) })
	return ln.Addr().String(), nil
}

// PutKeyless stores leaf's chain, without its key, as tenant with the
// world's origin and route keyless through the key servers at addrs, in
// preference order.
func (w *World) PutKeyless(ctx context.Context, tenant string, leaf *testpki.Leaf, addrs ...string) error {
	_, err := w.Writer.Put(ctx, &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: tenant, Origin: w.OriginURL, Route: keystore.RouteKeyless, KeyServers: addrs},
		Chain: leaf.Chain,
	})
	if err != nil {
		return fmt.Errorf("testworld: %w", err)
	}
	return nil
}
