package main

import (
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
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
			// A policy of 1,024 bytes whose canonical form is 1,025:
			// what once slipped past the length limit.
			env.Setenv("OVERLONG_POLICY", strings.Repeat("0", 465)+":"+strings.Repeat("0", 558))
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"testleaf": testLeaf,
			"snapshot": snapshot,
		},
	})
}

// testLeaf CAPREFIX NAME BASE [KEYTYPE] [from=DATE until=DATE] issues a
// certificate for NAME and www.NAME from the CA at CAPREFIX.{pem,key},
// with a key of KEYTYPE (testpki.KeyType; ECDSA P-256 by default), valid
// from and until the given dates (YYYY-MM-DD; default testpki's), and
// writes BASE.pem (chain) and BASE.key (PKCS#8), as a user would bring
// them to keyctl import.
func testLeaf(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 || len(args) > 6 {
		ts.Fatalf("usage: testleaf CAPREFIX NAME BASE [KEYTYPE] [from=DATE until=DATE]")
	}
	ca, err := testpki.LoadCA(ts.MkAbs(args[0]+".pem"), ts.MkAbs(args[0]+".key"))
	ts.Check(err)
	spec := testpki.LeafSpec{Names: []string{args[1], "www." + args[1]}}
	for _, a := range args[3:] {
		key, value, _ := strings.Cut(a, "=")
		switch key {
		case "from", "until":
			at, err := time.Parse(time.DateOnly, value)
			ts.Check(err)
			if key == "from" {
				spec.NotBefore = at
			} else {
				spec.NotAfter = at
			}
		default:
			spec.KeyType = testpki.KeyType(a)
		}
	}
	leaf, err := ca.Issue(spec)
	ts.Check(err)
	ts.Check(leaf.WritePEM(ts.MkAbs(args[2]+".pem"), ts.MkAbs(args[2]+".key")))
}

// snapshot DIR FILE writes to FILE one line per file under DIR, its
// path and the SHA-256 of its content, leaving out storage lock files:
// two snapshots compare equal (cmp) when nothing in DIR was written.
func snapshot(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: snapshot DIR FILE")
	}
	dir := ts.MkAbs(args[0])
	var b strings.Builder
	ts.Check(filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil || strings.HasPrefix(filepath.ToSlash(rel), "locks/") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %x\n", filepath.ToSlash(rel), sha256.Sum256(data))
		return nil
	}))
	ts.Check(os.WriteFile(ts.MkAbs(args[1]), []byte(b.String()), 0o644))
}
