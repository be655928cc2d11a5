package keystore

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/keyedge/keyedge/internal/excerpt"
)

// Route says where a certificate's handshake signatures are made.
type Route string

const (
	// RouteLocal signs on the edge with the sealed key stored beside the record.
	RouteLocal Route = "local"
	// RouteKeyless signs through a key server; the edge holds no key.
	RouteKeyless Route = "keyless"
)

// Meta is what the edge needs to know about a certificate besides the
// certificate itself.
type Meta struct {
	// Tenant names the customer owning the certificate. Informational.
	Tenant string `json:"tenant"`
	// Origin is the URL requests for the certificate's names are proxied to.
	Origin string `json:"origin,omitempty"`
	// Policy is the geo policy restricting where the key may be used;
	// empty means unrestricted.
	Policy string `json:"policy,omitempty"`
	// Route is where signatures are made; empty means RouteLocal.
	Route Route `json:"route,omitempty"`
	// KeyServers are the addresses (host:port) of the key servers holding
	// a RouteKeyless certificate's key, most preferred first.
	KeyServers []string `json:"key_servers,omitempty"`
	// ACMECA is the directory URL of the ACME CA the certificate was
	// obtained from; empty for a certificate the tenant brought. The ACME
	// manager (acme.Manager) renews only certificates it obtained, so a
	// renewal never overwrites a certificate imported for the same name.
	ACMECA string `json:"acme_ca,omitempty"`
	// NotAfter is the leaf certificate's expiry, copied for listing.
	NotAfter time.Time `json:"not_after"`
	// Version increases with every write of the record.
	Version uint64 `json:"version"`

	// Origin pool (issue 17). OriginPool, when set, is the tenant's
	// origins and how the edge reaches them (Store.SetOrigins, `keyctl
	// origin set`); it replaces Origin, which then keeps its first
	// origin for edges from before pools. Nil: Origin alone, with the
	// edge's defaults. Origins returns the pool either way.
	OriginPool *OriginPool `json:"origin_pool,omitempty"`

	// HTTP is the tenant's HTTP settings (redirect, HSTS, header rules,
	// rate limit, client certificates); nil: the defaults. Every record
	// of a name holds the same (Store.UpdateHTTP).
	HTTP *TenantHTTP `json:"http,omitempty"`
}

// record is the content of certs/<id2>/<id>/record: the meta, the DER
// chain (leaf first), an optional OCSP staple and, in the layout written
// now (recordfile.go), the sealed key. A record in the layout written
// before is one JSON object of the other fields, its key in key.sealed.
type record struct {
	Meta
	Chain  [][]byte `json:"chain"`
	OCSP   []byte   `json:"ocsp,omitempty"`
	Sealed []byte   `json:"-"` // the sealed key file (seal.go); nil when in key.sealed, or keyless
}

// errMalformed marks a stored file that cannot be parsed. It is wrapped
// into ErrCorrupt with the tenant and file named.
var errMalformed = errors.New("malformed")

// parseRecord decodes a record and checks it is internally consistent:
// a parseable leaf whose key hashes to id.
func parseRecord(id string, data []byte) (*record, *x509.Certificate, error) {
	var r record
	if isRecordFile(data) {
		if err := parseRecordFile(data, &r); err != nil {
			return nil, nil, err
		}
	} else if err := json.Unmarshal(data, &r); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", errMalformed, err)
	}
	if len(r.Chain) == 0 {
		return nil, nil, fmt.Errorf("%w: empty chain", errMalformed)
	}
	leaf, err := x509.ParseCertificate(r.Chain[0])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: leaf: %v", errMalformed, err)
	}
	if got := CertID(leaf); got != id {
		return nil, nil, fmt.Errorf("%w: leaf key is %s, not %s", errMalformed, got, id)
	}
	switch r.Route {
	case "", RouteLocal, RouteKeyless:
	default:
		return nil, nil, fmt.Errorf("%w: unknown route %q", errMalformed, r.Route)
	}
	if err := r.HTTP.Check(); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", errMalformed, err)
	}
	return &r, leaf, nil
}

// CertID is a certificate's identity in the keystore: the hex SHA-256 of
// the leaf's SubjectPublicKeyInfo. Renewals that keep the key keep the ID.
func CertID(leaf *x509.Certificate) string {
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// isCertID reports whether s has the form of a CertID, so user input can
// be told apart from a name and never used as a path unchecked.
func isCertID(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	_, err := hex.DecodeString(s)
	return err == nil && s == strings.ToLower(s)
}

// Storage keys of the layout in DESIGN.md. Names and IDs reaching these
// functions have been validated (NormalizeName, isCertID).

func nameKey(name string) string { return HashedKey(namesDir, name) }

// certsDir holds a directory per certificate, under the first two hex
// digits of its ID.
const certsDir = "certs"

func certDir(id string) string   { return certsDir + "/" + id[:2] + "/" + id }
func recordKey(id string) string { return certDir(id) + "/record" }
func sealedKey(id string) string { return certDir(id) + "/key.sealed" } // before the key moved into the record

// nameRef is one line of a name file: a certificate serving the name and
// its key algorithm, so a renewal replaces the certificate of the same
// algorithm and leaves the other (ECDSA beside RSA) in place.
type nameRef struct {
	ID  string
	Alg string
}

// keyAlg names the key algorithm of a leaf as written in name files.
func keyAlg(leaf *x509.Certificate) (string, error) {
	switch leaf.PublicKeyAlgorithm {
	case x509.ECDSA:
		return "ecdsa", nil
	case x509.RSA:
		return "rsa", nil
	case x509.Ed25519:
		return "ed25519", nil
	}
	return "", fmt.Errorf("keystore: unsupported key algorithm %v", leaf.PublicKeyAlgorithm)
}

// parseNameFile decodes names/<h2>/<name>: one "<id> <alg>" per line.
func parseNameFile(data []byte) ([]nameRef, error) {
	var refs []nameRef
	for line := range strings.Lines(string(data)) {
		id, alg, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " ")
		if !ok || !isCertID(id) || (alg != "ecdsa" && alg != "rsa" && alg != "ed25519") {
			return nil, fmt.Errorf("%w: bad line %q", errMalformed, excerpt.Of(line, 80))
		}
		refs = append(refs, nameRef{id, alg})
	}
	if len(refs) == 0 {
		return nil, fmt.Errorf("%w: empty name file", errMalformed)
	}
	return refs, nil
}

func formatNameFile(refs []nameRef) []byte {
	var b []byte
	for _, r := range refs {
		b = append(b, r.ID...)
		b = append(b, ' ')
		b = append(b, r.Alg...)
		b = append(b, '\n')
	}
	return b
}
