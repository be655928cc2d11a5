package main

import (
	"crypto/x509"
	"encoding/pem"
	"os"
	"testing"

	"github.com/keyedge/keyedge/certs"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"keyctl": main,
	})
}

// TestScript runs keyctl end to end against real files: each
// testdata/script/*.txtar is a shell-like session with expected output.
func TestScript(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Setup: func(env *testscript.Env) error {
			env.Setenv("KEYEDGE_KEYSTORE", "")
			env.Setenv("KEYEDGE_FLEET_KEY", "")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"testleaf": testLeaf,
		},
	})
}

// testLeaf CAPREFIX NAME BASE issues a certificate for NAME and www.NAME
// from the CA at CAPREFIX.{pem,key} and writes BASE.pem (chain) and
// BASE.key (PKCS#8), as a user would bring them to keyctl import.
func testLeaf(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: testleaf CAPREFIX NAME BASE")
	}
	ca, err := certs.LoadCA(ts.MkAbs(args[0]+".pem"), ts.MkAbs(args[0]+".key"))
	ts.Check(err)
	leaf, err := ca.Issue(certs.LeafSpec{Names: []string{args[1], "www." + args[1]}})
	ts.Check(err)
	var chain []byte
	for _, der := range leaf.Chain {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	der, err := x509.MarshalPKCS8PrivateKey(leaf.Key)
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[2]+".pem"), chain, 0o644))
	ts.Check(os.WriteFile(ts.MkAbs(args[2]+".key"), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
}
