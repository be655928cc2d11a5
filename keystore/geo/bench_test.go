package geo

import "testing"

// BenchmarkNodeKeyOpen is the CP-ABE open of one policy key's seed: the
// slow step an edge takes once per policy.
func BenchmarkNodeKeyOpen(b *testing.B) {
	m := testMaster()
	node, err := m.NodeKey(nil, mustAttrs(b, "region: eu, country: de, dc: fra1"))
	if err != nil {
		b.Fatal(err)
	}
	pol := mustPolicy(b, "region: eu and not country: ru")
	sealed, err := m.Params.Seal(pol, make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := node.Open(pol, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkSeal is sealing a policy key's seed: once per new policy.
func BenchmarkSeal(b *testing.B) {
	m := testMaster()
	pol := mustPolicy(b, "region: eu and not country: ru")
	for b.Loop() {
		if _, err := m.Params.Seal(pol, make([]byte, 32)); err != nil {
			b.Fatal(err)
		}
	}
}
