package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keystore"
)

// keylessHost is the demo tenant whose key only its key server holds.
const keylessHost = "keyless." + demoDomain

// demoEdgeIdentity is the name in the demo edge's mTLS identity, which
// the demo's key servers authorize.
const demoEdgeIdentity = "edge.demo"

// demoKeyless sets up what a keyless tenant needs: an identity CA with
// mTLS identities for the edge and for a key server, the tenant's key in
// the key server's directory (never in the edge's keystore), the key
// server itself on 127.0.0.1, and the tenant's certificate in the
// keystore with route keyless. It returns the identity CA, the edge.yaml
// lines for it and a function stopping the key server.
func demoKeyless(ctx context.Context, dir string, ca *testpki.CA, originURL string) (*testpki.CA, string, func(), error) {
	idCA, err := testpki.NewCA("keyedge demo identity CA")
	if err != nil {
		return nil, "", nil, err
	}
	if err := idCA.Write(filepath.Join(dir, "identity-ca.pem"), filepath.Join(dir, "identity-ca.key")); err != nil {
		return nil, "", nil, err
	}
	edgeID, err := idCA.Issue(testpki.LeafSpec{Names: []string{demoEdgeIdentity}, ClientAuth: true})
	if err != nil {
		return nil, "", nil, err
	}
	if err := edgeID.WritePEM(filepath.Join(dir, "edge-identity.pem"), filepath.Join(dir, "edge-identity.key")); err != nil {
		return nil, "", nil, err
	}

	tenant, err := ca.Issue(testpki.LeafSpec{Names: []string{keylessHost}})
	if err != nil {
		return nil, "", nil, err
	}
	keysDir := filepath.Join(dir, "keyserver-keys")
	if err := os.Mkdir(keysDir, 0o700); err != nil {
		return nil, "", nil, err
	}
	if err := tenant.WritePEM(filepath.Join(keysDir, "keyless.pem"), filepath.Join(keysDir, "keyless.key")); err != nil {
		return nil, "", nil, err
	}
	keys, err := keyserver.NewDirSource(keysDir, keyserver.DirOptions{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return nil, "", nil, err
	}
	addr, stop, err := startDemoKeyServer(idCA, keys, keys.Close, keylessHost)
	if err != nil {
		return nil, "", nil, err
	}

	store, err := keystore.Open(ctx, keystore.Options{Storage: &certmagic.FileStorage{Path: filepath.Join(dir, "keystore")}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		stop()
		return nil, "", nil, err
	}
	defer store.Close()
	_, err = store.Put(ctx, &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: "keyless", Origin: originURL, Route: keystore.RouteKeyless, KeyServers: []string{addr}},
		Chain: tenant.Chain,
	})
	if err != nil {
		stop()
		return nil, "", nil, err
	}
	cfg := "keyless:\n  cert_file: edge-identity.pem\n  key_file: edge-identity.key\n  ca_file: identity-ca.pem\n"
	return idCA, cfg, stop, nil
}

// startDemoKeyServer runs a key server over keys on 127.0.0.1, with an
// identity from idCA, accepting edges with identities from idCA and
// letting the demo edge, and only it, use the key of host. It returns
// its address and a function that stops it and then calls closeKeys.
func startDemoKeyServer(idCA *testpki.CA, keys keyserver.KeySource, closeKeys func() error, host string) (string, func(), error) {
	id, err := idCA.Issue(testpki.LeafSpec{Names: []string{"keyserver.demo"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}})
	if err != nil {
		closeKeys()
		return "", nil, err
	}
	auth, err := keyserver.NewAuthorizer([]keyserver.Rule{{Clients: []string{"dns:" + demoEdgeIdentity}, Keys: []string{"name:" + host}}})
	if err != nil {
		closeKeys()
		return "", nil, err
	}
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(idCA.Certificate())
	srv, err := keyserver.NewServer(keyserver.ServerOptions{
		Keys:       keys,
		Authorizer: auth,
		TLSConfig:  &tls.Config{Certificates: []tls.Certificate{{Certificate: id.Chain, PrivateKey: id.Key}}, ClientCAs: clientCAs},
		Logger:     slog.New(slog.DiscardHandler),
	})
	if err != nil {
		closeKeys()
		return "", nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		closeKeys()
		return "", nil, err
	}
	go srv.Serve(ln)
	return ln.Addr().String(), func() {
		srv.Shutdown(context.Background())
		closeKeys()
	}, nil
}
