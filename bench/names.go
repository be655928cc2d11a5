package bench

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"sync/atomic"

	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/internal/tlsconf"
)

// Name distributions.
const (
	DistZipf    = "zipf"    // rank k (from 0) with weight (k+1)^-ZipfS
	DistUniform = "uniform" // every name equally likely
	// DistSequential takes the names in order, shared by the workers and
	// from the first again after the last: N draws cover min(N, names)
	// distinct names (e.g. to fill the edge's cache with that many).
	DistSequential = "seq"
)

// DefaultZipfS is the Zipf exponent used when Options.ZipfS is zero.
const DefaultZipfS = 1.1

// ReadNames reads server names from a file, one a line; blank lines and
// lines starting with '#' are skipped.
func ReadNames(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("bench: names: %w", err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		names = append(names, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("bench: names %s: %w", path, err)
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("bench: names %s: no names", path)
	}
	return names, nil
}

// TenantNames returns the names of generated tenants 0…n-1 under domain,
// as testpki.CA.GenerateTenants names them.
func TenantNames(n int, domain string) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = testpki.TenantName(i, domain)
	}
	return names
}

// picker draws names from a list: by Zipf rank (the first name is the
// most popular), uniformly, or in turn. Each worker has its own, seeded
// from the run's seed and the worker's number, so a run's sequence of
// random choices per worker is reproducible; in turn, the workers share
// next.
type picker struct {
	names []string
	zipf  *rand.Zipf
	rng   *rand.Rand
	next  *atomic.Uint64 // DistSequential
}

// checkDist reports whether dist names a distribution, and for Zipf
// whether its exponent s is valid.
func checkDist(dist string, s float64) error {
	switch dist {
	case DistZipf:
		if s <= 1 {
			return fmt.Errorf("bench: zipf exponent %v must be > 1", s)
		}
	case DistUniform, DistSequential:
	default:
		return fmt.Errorf("bench: unknown distribution %q (want zipf, uniform or seq)", dist)
	}
	return nil
}

// newPicker returns a picker over names (at least one) drawing by dist, a
// distribution checkDist accepts.
func newPicker(names []string, dist string, s float64, seed, stream uint64, next *atomic.Uint64) *picker {
	p := &picker{names: names, rng: rand.New(rand.NewPCG(seed, stream))}
	switch dist {
	case DistZipf:
		p.zipf = rand.NewZipf(p.rng, s, 1, uint64(len(names)-1))
	case DistSequential:
		p.next = next
	}
	return p
}

func (p *picker) index() int {
	if len(p.names) == 1 {
		return 0
	}
	if p.zipf != nil {
		return int(p.zipf.Uint64())
	}
	if p.next != nil {
		return int((p.next.Add(1) - 1) % uint64(len(p.names)))
	}
	return p.rng.IntN(len(p.names))
}

func (p *picker) pick() string { return p.names[p.index()] }

// ParseCurves parses a comma-separated list of key exchange groups, in
// the spelling of edge.yaml: X25519MLKEM768, X25519, P-256, P-384, P-521.
// An empty string is nil: crypto/tls's defaults.
func ParseCurves(list string) ([]tls.CurveID, error) {
	var names []string
	for _, n := range strings.Split(list, ",") {
		if n = strings.TrimSpace(n); n != "" {
			names = append(names, n)
		}
	}
	ids, err := tlsconf.ParseCurves(names)
	if err != nil {
		return nil, fmt.Errorf("bench: %w", err)
	}
	return ids, nil
}
