package testpki

import "testing"

func benchmarkIssue(b *testing.B, kt KeyType) {
	ca := newTestCA(b)
	spec := LeafSpec{Names: []string{"tenant-000001.example.com", "*.tenant-000001.example.com"}, KeyType: kt}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ca.Issue(spec); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkIssueECDSA(b *testing.B)   { benchmarkIssue(b, ECDSAP256) }
func BenchmarkIssueEd25519(b *testing.B) { benchmarkIssue(b, Ed25519) }
