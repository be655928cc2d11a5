package main

import (
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
			env.Setenv("KEYEDGE_GEO_MASTER", "")
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
	ts.Check(leaf.WritePEM(ts.MkAbs(args[2]+".pem"), ts.MkAbs(args[2]+".key")))
}
