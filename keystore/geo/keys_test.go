package geo

import (
	"bytes"
	"errors"
	mathrand "math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/keyedge/keyedge/internal/secretfile"
)

// testMaster is generated once: CP-ABE setup is the slowest step here.
var testMaster = sync.OnceValue(func() *MasterKey {
	m, err := GenerateMasterKey(nil)
	if err != nil {
		panic(err)
	}
	return m
})

func TestSealOpen(t *testing.T) {
	m := testMaster()
	eu, err := m.NodeKey(nil, mustAttrs(t, "region: eu, country: de"))
	if err != nil {
		t.Fatal(err)
	}
	us, err := m.NodeKey(nil, mustAttrs(t, "region: us, country: us"))
	if err != nil {
		t.Fatal(err)
	}
	pol := mustPolicy(t, "region: eu and not country: ru")
	secret := []byte("policy key seed, 32 bytes long..")
	sealed, err := m.Params.Seal(pol, secret)
	if err != nil {
		t.Fatal(err)
	}

	got, err := eu.Open(pol, sealed)
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("EU node: Open = %q, %v", got, err)
	}
	if _, err := us.Open(pol, sealed); !errors.Is(err, ErrNotAdmitted) {
		t.Errorf("US node: Open error = %v, want ErrNotAdmitted", err)
	}
	if got, err := m.Open(pol, sealed); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("master: Open = %q, %v", got, err)
	}

	// Presented as sealed under another policy, it opens for nobody.
	other := mustPolicy(t, "region: eu")
	if _, err := eu.Open(other, sealed); !errors.Is(err, ErrBadSeal) {
		t.Errorf("EU node, other policy: error = %v, want ErrBadSeal", err)
	}
	if _, err := m.Open(other, sealed); !errors.Is(err, ErrBadSeal) {
		t.Errorf("master, other policy: error = %v, want ErrBadSeal", err)
	}

	// A flipped byte in the header or the CP-ABE layer stops the node;
	// one in the header or the admin layer (at the end) stops the master.
	for _, tt := range []struct {
		i            int
		node, master bool
	}{{0, true, true}, {5, true, true}, {len(sealed) / 3, true, false}, {len(sealed) - 1, false, true}} {
		bad := bytes.Clone(sealed)
		bad[tt.i] ^= 0x40
		if _, err := eu.Open(pol, bad); tt.node && err == nil {
			t.Errorf("byte %d flipped: EU node opened it", tt.i)
		}
		if _, err := m.Open(pol, bad); tt.master && err == nil {
			t.Errorf("byte %d flipped: master opened it", tt.i)
		}
	}
	for _, n := range []int{0, 3, 10, len(sealed) - 1} {
		if _, err := eu.Open(pol, sealed[:n]); !errors.Is(err, ErrBadSeal) {
			t.Errorf("truncated to %d: error = %v, want ErrBadSeal", n, err)
		}
	}
}

// TestOpenStored opens, with the master key, a secret sealed under a
// policy today's parser refuses (its canonical form is over the length
// limit, as an older version allowed), by the stored text alone.
func TestOpenStored(t *testing.T) {
	m := testMaster()
	long := "region: eu or pad: " + strings.Repeat("0", maxInput+1-len("region: eu or pad: "))
	if _, err := ParsePolicy(long); err == nil {
		t.Fatal("ParsePolicy accepted a canonical form over the limit")
	}
	legacy := &Policy{canonical: long}
	if err := legacy.abe.FromString(long); err != nil {
		t.Fatal(err)
	}
	secret := []byte("policy key seed, 32 bytes long..")
	sealed, err := m.Params.Seal(legacy, secret)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := m.OpenStored(long, sealed); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("OpenStored = %q, %v", got, err)
	}
	if _, err := m.OpenStored(long[:len(long)-1], sealed); !errors.Is(err, ErrBadSeal) {
		t.Errorf("OpenStored with other text: error = %v, want ErrBadSeal", err)
	}
	if got, want := PolicyID(long), legacy.ID(); got != want {
		t.Errorf("PolicyID = %s, Policy.ID = %s", got, want)
	}
}

// TestKeysFromRand: the master and node keys are functions of the bytes
// their rand gives, so tests can pin them without the process-wide
// cryptotest.SetGlobalRandom; another seed gives other keys.
func TestKeysFromRand(t *testing.T) {
	t.Parallel()
	keys := func(seed byte) (master, node []byte) {
		var s [32]byte
		s[0] = seed
		r := mathrand.NewChaCha8(s)
		m, err := GenerateMasterKey(r)
		if err != nil {
			t.Fatal(err)
		}
		k, err := m.NodeKey(r, mustAttrs(t, "region: eu"))
		if err != nil {
			t.Fatal(err)
		}
		if master, err = m.MarshalPEM(); err != nil {
			t.Fatal(err)
		}
		if node, err = k.MarshalPEM(); err != nil {
			t.Fatal(err)
		}
		return master, node
	}
	m1, n1 := keys(1)
	m2, n2 := keys(1)
	if !bytes.Equal(m1, m2) || !bytes.Equal(n1, n2) {
		t.Error("the same random bytes gave different keys")
	}
	m3, n3 := keys(2)
	if bytes.Equal(m1, m3) || bytes.Equal(n1, n3) {
		t.Error("other random bytes gave the same keys")
	}
}

func TestNodeKeyNeedsAttributes(t *testing.T) {
	if _, err := testMaster().NodeKey(nil, Attributes{}); err == nil {
		t.Error("NodeKey with no attributes succeeded")
	}
}

func TestKeyFiles(t *testing.T) {
	m := testMaster()
	dir := t.TempDir()
	masterPEM, err := m.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	masterPath := filepath.Join(dir, "geo-master.key")
	if err := WriteMasterKeyFile(masterPath, m); err != nil {
		t.Fatal(err)
	}
	if err := WriteMasterKeyFile(masterPath, m); err == nil {
		t.Error("WriteMasterKeyFile overwrote a master key")
	}
	m2, err := ReadMasterKeyFile(masterPath)
	if err != nil {
		t.Fatal(err)
	}
	node, err := m2.NodeKey(nil, mustAttrs(t, "dc: fra1"))
	if err != nil {
		t.Fatal(err)
	}
	nodePEM, err := node.MarshalPEM()
	if err != nil {
		t.Fatal(err)
	}
	nodePath := filepath.Join(dir, "node.key")
	if err := WriteNodeKeyFile(nodePath, node); err != nil {
		t.Fatal(err)
	}
	node2, err := ReadNodeKeyFile(nodePath)
	if err != nil {
		t.Fatal(err)
	}
	if !node2.Attributes().Equal(node.Attributes()) {
		t.Errorf("attributes after round trip: %q, want %q", node2.Attributes(), node.Attributes())
	}

	// Parameters round trip, and seal for keys issued by the original.
	pb, err := m2.Params.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	params, err := ParseParams(pb)
	if err != nil {
		t.Fatal(err)
	}
	pol := mustPolicy(t, "dc: fra1 or dc: ams1")
	sealed, err := params.Seal(pol, []byte("s"))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := node2.Open(pol, sealed); err != nil || string(got) != "s" {
		t.Errorf("Open after round trips = %q, %v", got, err)
	}
	if _, err := ParseParams(pb[:len(pb)-1]); !errors.Is(err, ErrBadSeal) {
		t.Errorf("truncated params: %v, want ErrBadSeal", err)
	}

	// Secret files others can read are refused.
	if err := os.Chmod(nodePath, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadNodeKeyFile(nodePath); !errors.Is(err, secretfile.ErrExposed) {
		t.Errorf("0644 node key: %v, want ErrExposed", err)
	}
	for _, bad := range [][]byte{nil, []byte("garbage"), masterPEM} {
		if _, err := ParseNodeKey(bad); err == nil {
			t.Errorf("ParseNodeKey(%.20q) succeeded", bad)
		}
	}
	if _, err := ParseMasterKey(nodePEM); err == nil {
		t.Error("ParseMasterKey of a node key succeeded")
	}
}
