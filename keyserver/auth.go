package keyserver

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/keyedge/keyedge/keystore"
)

// Rule lets the clients any of Clients selects use the keys any of Keys
// selects.
//
// Client selectors (the client's verified certificate):
//
//   - any client with a certificate from the client CA
//     spki:<hex>     the hex SHA-256 of the certificate's SubjectPublicKeyInfo
//     dns:<name>     a DNS subject alternative name (case-insensitive)
//     cn:<name>      the subject common name (exact)
//
// Key selectors:
//
//   - any key
//     ski:<hex>      the key's 40-hex-digit SKI (see SKI)
//     name:<name>    a DNS name in Key.Names; "*.example.com" matches any
//     one label under example.com (and the wildcard itself)
type Rule struct {
	Clients []string
	Keys    []string
}

// Authorizer maps client identities to the keys they may use. It is
// immutable and safe for concurrent use; to change the rules, build a
// new one and pass it to Server.SetAuthorizer.
type Authorizer struct {
	rules []rule
}

type rule struct {
	clients []clientSelector
	keys    []keySelector
}

type clientSelector struct {
	kind  string // "*", "spki", "dns", "cn"
	value string // lower-case hex for spki, lower-case name for dns
}

type keySelector struct {
	kind  string // "*", "ski", "name"
	value string // lower-case hex for ski, normalised pattern for name
	ski   [20]byte
}

// NewAuthorizer validates rules. No rules means no client may use any
// key, as does a nil *Authorizer; to let every verified client use
// every key, use AllowAll.
func NewAuthorizer(rules []Rule) (*Authorizer, error) {
	a := &Authorizer{rules: make([]rule, 0, len(rules))}
	for i, r := range rules {
		if len(r.Clients) == 0 || len(r.Keys) == 0 {
			return nil, fmt.Errorf("keyserver: authorization rule %d: needs at least one client and one key selector", i+1)
		}
		var out rule
		for _, s := range r.Clients {
			c, err := parseClientSelector(s)
			if err != nil {
				return nil, fmt.Errorf("keyserver: authorization rule %d: client selector %q: %w", i+1, s, err)
			}
			out.clients = append(out.clients, c)
		}
		for _, s := range r.Keys {
			k, err := parseKeySelector(s)
			if err != nil {
				return nil, fmt.Errorf("keyserver: authorization rule %d: key selector %q: %w", i+1, s, err)
			}
			out.keys = append(out.keys, k)
		}
		a.rules = append(a.rules, out)
	}
	return a, nil
}

// AllowAll returns an Authorizer that lets every verified client use
// every key: the rule {Clients: ["*"], Keys: ["*"]}. A key server should
// use it only when every holder of a certificate from its client CA is
// trusted with every key it holds.
func AllowAll() *Authorizer {
	return &Authorizer{rules: []rule{{clients: []clientSelector{{kind: "*"}}, keys: []keySelector{{kind: "*"}}}}}
}

func parseClientSelector(s string) (clientSelector, error) {
	if s == "*" {
		return clientSelector{kind: "*"}, nil
	}
	kind, value, ok := strings.Cut(s, ":")
	if !ok || value == "" {
		return clientSelector{}, errors.New(`want "*", "spki:<hex>", "dns:<name>" or "cn:<name>"`)
	}
	switch kind {
	case "spki":
		value = strings.ToLower(value)
		if b, err := hex.DecodeString(value); err != nil || len(b) != sha256.Size {
			return clientSelector{}, errors.New("want the 64 hex digits of a SHA-256")
		}
	case "dns":
		value = strings.ToLower(strings.TrimSuffix(value, "."))
	case "cn":
	default:
		return clientSelector{}, fmt.Errorf("unknown kind %q (want spki, dns or cn)", kind)
	}
	return clientSelector{kind: kind, value: value}, nil
}

func parseKeySelector(s string) (keySelector, error) {
	if s == "*" {
		return keySelector{kind: "*"}, nil
	}
	kind, value, ok := strings.Cut(s, ":")
	if !ok || value == "" {
		return keySelector{}, errors.New(`want "*", "ski:<hex>" or "name:<DNS name>"`)
	}
	k := keySelector{kind: kind}
	switch kind {
	case "ski":
		b, err := hex.DecodeString(value)
		if err != nil || len(b) != 20 {
			return keySelector{}, errors.New("want the 40 hex digits of an SKI")
		}
		k.ski = [20]byte(b)
	case "name":
		n, err := keystore.NormalizeName(value)
		if err != nil {
			return keySelector{}, err
		}
		k.value = n
	default:
		return keySelector{}, fmt.Errorf("unknown kind %q (want ski or name)", kind)
	}
	return k, nil
}

// Allowed reports whether client, a verified client certificate, may
// use k. A nil Authorizer allows nothing.
func (a *Authorizer) Allowed(client *x509.Certificate, k *Key) bool {
	if a == nil || client == nil || k == nil {
		return false
	}
	var spki string // computed on first use
	for _, r := range a.rules {
		clientOK := false
		for _, c := range r.clients {
			switch c.kind {
			case "*":
				clientOK = true
			case "spki":
				if spki == "" {
					spki = spkiHash(client)
				}
				clientOK = spki == c.value
			case "dns":
				for _, n := range client.DNSNames {
					if strings.EqualFold(strings.TrimSuffix(n, "."), c.value) {
						clientOK = true
					}
				}
			case "cn":
				clientOK = client.Subject.CommonName == c.value
			}
			if clientOK {
				break
			}
		}
		if clientOK && r.allowsKey(k) {
			return true
		}
	}
	return false
}

func (r *rule) allowsKey(k *Key) bool {
	for _, s := range r.keys {
		switch s.kind {
		case "*":
			return true
		case "ski":
			if s.ski == k.SKI {
				return true
			}
		case "name":
			for _, n := range k.Names {
				if matchName(s.value, strings.ToLower(n)) {
					return true
				}
			}
		}
	}
	return false
}

// matchName reports whether a DNS name pattern (a name, or "*." and a
// name for any one label under it) matches name. Both are lower case. A
// wildcard name matches only the identical pattern.
func matchName(pattern, name string) bool {
	if pattern == name {
		return true
	}
	suffix, ok := strings.CutPrefix(pattern, "*.")
	if !ok || strings.HasPrefix(name, "*.") {
		return false
	}
	label, rest, ok := strings.Cut(name, ".")
	return ok && label != "" && rest == suffix
}

// spkiHash is the hex SHA-256 of a certificate's SubjectPublicKeyInfo,
// as "spki:" selectors name clients.
func spkiHash(c *x509.Certificate) string {
	sum := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// clientIdentity names a client in logs: its common name, else the
// SPKI hash an "spki:" selector would use.
func clientIdentity(c *x509.Certificate) string {
	if c == nil {
		return ""
	}
	if c.Subject.CommonName != "" {
		return "cn:" + c.Subject.CommonName
	}
	return "spki:" + spkiHash(c)
}
