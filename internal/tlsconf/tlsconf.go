// Package tlsconf holds the TLS settings that the edge, the key server,
// its client and the benchmark share: the spelling of key exchange
// groups (edge.yaml's curves, edgebench -curves, reports) and the
// default preference list, so the four agree by construction.
package tlsconf

import (
	"crypto/tls"
	"fmt"
)

// curves spells the key exchange groups, in the order error messages list
// them.
var curves = []struct {
	name string
	id   tls.CurveID
}{
	{"X25519MLKEM768", tls.X25519MLKEM768},
	{"X25519", tls.X25519},
	{"P-256", tls.CurveP256},
	{"P-384", tls.CurveP384},
	{"P-521", tls.CurveP521},
}

// DefaultCurves returns the key exchanges offered when none are
// configured: the hybrid post-quantum X25519MLKEM768, then X25519, then
// P-256. Each call returns a new slice, so a caller may keep it in a
// tls.Config without sharing it.
func DefaultCurves() []tls.CurveID {
	return []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
}

// ParseCurves returns the groups names spell (X25519MLKEM768, X25519,
// P-256, P-384, P-521), in order; no names is nil.
func ParseCurves(names []string) ([]tls.CurveID, error) {
	var ids []tls.CurveID
	for _, n := range names {
		id, ok := curveID(n)
		if !ok {
			return nil, fmt.Errorf("unknown curve %q (want X25519MLKEM768, X25519, P-256, P-384 or P-521)", n)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

func curveID(name string) (tls.CurveID, bool) {
	for _, c := range curves {
		if c.name == name {
			return c.id, true
		}
	}
	return 0, false
}

// CurveName spells id as ParseCurves reads it, or as crypto/tls does for
// a group outside the table.
func CurveName(id tls.CurveID) string {
	for _, c := range curves {
		if c.id == id {
			return c.name
		}
	}
	return id.String()
}
