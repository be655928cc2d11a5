package main

import (
	"context"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/testworld"
	"github.com/keyedge/keyedge/keyserver"
)

// keylessHost is the demo tenant whose key only its key server holds.
const keylessHost = "keyless." + demoDomain

// demoEdgeIdentity is the name in the demo edge's mTLS identity, which
// the demo's key servers authorize.
const demoEdgeIdentity = "edge.demo"

// demoKeyless sets up what a keyless tenant needs: the edge's mTLS
// identity, the tenant's key in the key server's directory (never in the
// edge's keystore), the key server itself on 127.0.0.1, and the tenant's
// certificate in the keystore with route keyless. It returns the
// edge.yaml lines for it.
func demoKeyless(ctx context.Context, w *testworld.World) (string, error) {
	edgeID, err := w.ClientIdentity(demoEdgeIdentity)
	if err != nil {
		return "", err
	}
	if err := edgeID.WritePEM(w.Path("edge-identity.pem"), w.Path("edge-identity.key")); err != nil {
		return "", err
	}
	tenant, err := w.CA.Issue(testpki.LeafSpec{Names: []string{keylessHost}})
	if err != nil {
		return "", err
	}
	if _, err := w.HoldKey("keyless", tenant); err != nil {
		return "", err
	}
	addr, err := w.StartKeyServer(demoKeyServer(keylessHost))
	if err != nil {
		return "", err
	}
	if err := w.PutKeyless(ctx, "keyless", tenant, addr); err != nil {
		return "", err
	}
	return "keyless:\n  cert_file: edge-identity.pem\n  key_file: edge-identity.key\n  ca_file: " + testworld.IdentityCAFile + "\n", nil
}

// demoKeyServer is a demo key server letting the demo edge, and only
// it, use the key of host.
func demoKeyServer(host string) testworld.KeyServer {
	return testworld.KeyServer{
		Name: "keyserver.demo",
		Rule: keyserver.Rule{Clients: []string{"dns:" + demoEdgeIdentity}, Keys: []string{"name:" + host}},
	}
}
