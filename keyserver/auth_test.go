package keyserver_test

import (
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/keyserver"
)

func TestNewAuthorizerErrors(t *testing.T) {
	for _, tc := range []struct {
		rule keyserver.Rule
		want string // in the error
	}{
		{keyserver.Rule{Keys: []string{"*"}}, "rule 1: needs at least one client"},
		{keyserver.Rule{Clients: []string{"*"}}, "rule 1: needs at least one client and one key"},
		{keyserver.Rule{Clients: []string{"edge.test"}, Keys: []string{"*"}}, `client selector "edge.test"`},
		{keyserver.Rule{Clients: []string{"spki:abcd"}, Keys: []string{"*"}}, `client selector "spki:abcd": want the 64 hex digits`},
		{keyserver.Rule{Clients: []string{"dns:"}, Keys: []string{"*"}}, `client selector "dns:"`},
		{keyserver.Rule{Clients: []string{"ip:10.0.0.1"}, Keys: []string{"*"}}, `client selector "ip:10.0.0.1": unknown kind "ip"`},
		{keyserver.Rule{Clients: []string{"*"}, Keys: []string{"ski:zz"}}, `key selector "ski:zz": want the 40 hex digits`},
		{keyserver.Rule{Clients: []string{"*"}, Keys: []string{"name:../etc"}}, `key selector "name:../etc"`},
		{keyserver.Rule{Clients: []string{"*"}, Keys: []string{"cert:123"}}, `key selector "cert:123": unknown kind "cert"`},
		{keyserver.Rule{Clients: []string{"*"}, Keys: []string{"**"}}, `key selector "**"`},
	} {
		rules := []keyserver.Rule{tc.rule}
		_, err := keyserver.NewAuthorizer(rules)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "keyserver: ") {
			t.Errorf("NewAuthorizer(%+v) = %v, want an error containing %q", tc.rule, err, tc.want)
		}
	}
}

func TestAuthorizerAllowed(t *testing.T) {
	edgeA := &x509.Certificate{Subject: pkix.Name{CommonName: "edge-a"}, DNSNames: []string{"edge-a.fleet.test"}, RawSubjectPublicKeyInfo: []byte("spki of edge a")}
	edgeB := &x509.Certificate{Subject: pkix.Name{CommonName: "edge-b"}, DNSNames: []string{"EDGE-B.fleet.test"}, RawSubjectPublicKeyInfo: []byte("spki of edge b")}
	anon := &x509.Certificate{RawSubjectPublicKeyInfo: []byte("spki of anon")}
	sum := sha256.Sum256(anon.RawSubjectPublicKeyInfo)
	anonSPKI := hex.EncodeToString(sum[:])

	shop := &keyserver.Key{SKI: [20]byte{1}, Names: []string{"shop.example", "www.shop.example"}}
	wild := &keyserver.Key{SKI: [20]byte{2}, Names: []string{"*.blog.example"}}
	bare := &keyserver.Key{SKI: [20]byte{3}}

	a, err := keyserver.NewAuthorizer([]keyserver.Rule{
		{Clients: []string{"cn:edge-a"}, Keys: []string{"name:shop.example"}},
		{Clients: []string{"dns:edge-b.fleet.test", "spki:" + strings.ToUpper(anonSPKI)}, Keys: []string{"name:*.blog.example", "ski:" + hex.EncodeToString(bare.SKI[:])}},
		{Clients: []string{"*"}, Keys: []string{"name:*.shop.example"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		client *x509.Certificate
		key    *keyserver.Key
		want   bool
	}{
		{edgeA, shop, true},  // rule 1
		{edgeB, shop, true},  // rule 3: www.shop.example
		{edgeA, wild, false}, // edge-a has no rule for blog
		{edgeB, wild, true},  // DNS SAN, case-insensitive; wildcard pattern matches the wildcard name
		{anon, bare, true},   // SPKI hash, case-insensitive hex
		{anon, wild, true},
		{edgeA, bare, false},
		{nil, shop, false},
	} {
		if got := a.Allowed(tc.client, tc.key); got != tc.want {
			name := "<nil>"
			if tc.client != nil {
				name = tc.client.Subject.CommonName
			}
			t.Errorf("Allowed(%q, %q) = %v, want %v", name, tc.key.Names, got, tc.want)
		}
	}

	// A wildcard pattern covers one label, not the parent or deeper names.
	w, err := keyserver.NewAuthorizer([]keyserver.Rule{{Clients: []string{"*"}, Keys: []string{"name:*.example.com"}}})
	if err != nil {
		t.Fatal(err)
	}
	for names, want := range map[string]bool{"a.example.com": true, "A.Example.COM": true, "example.com": false, "a.b.example.com": false, "*.example.com": true, "*.a.example.com": false} {
		if got := w.Allowed(edgeA, &keyserver.Key{Names: []string{names}}); got != want {
			t.Errorf("name:*.example.com allows %q = %v, want %v", names, got, want)
		}
	}

	var none *keyserver.Authorizer
	if none.Allowed(edgeA, bare) {
		t.Error("nil Authorizer allowed")
	}
	if !keyserver.AllowAll().Allowed(edgeA, bare) {
		t.Error("AllowAll denied")
	}
	empty, err := keyserver.NewAuthorizer(nil)
	if err != nil {
		t.Fatal(err)
	}
	if empty.Allowed(edgeA, bare) {
		t.Error("Authorizer without rules allowed")
	}
}

func ExampleNewAuthorizer() {
	auth, err := keyserver.NewAuthorizer([]keyserver.Rule{
		// The EU edges may use the keys of the shop's certificates.
		{Clients: []string{"dns:edge-eu1.keyedge.test", "dns:edge-eu2.keyedge.test"}, Keys: []string{"name:shop.example", "name:*.shop.example"}},
		// Any edge may use one key, named by its SKI.
		{Clients: []string{"*"}, Keys: []string{"ski:00112233445566778899aabbccddeeff00112233"}},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	eu1 := &x509.Certificate{DNSNames: []string{"edge-eu1.keyedge.test"}}
	us1 := &x509.Certificate{DNSNames: []string{"edge-us1.keyedge.test"}}
	shop := &keyserver.Key{Names: []string{"www.shop.example"}}
	fmt.Println(auth.Allowed(eu1, shop), auth.Allowed(us1, shop))

	_, err = keyserver.NewAuthorizer([]keyserver.Rule{{Clients: []string{"edge-eu1.keyedge.test"}, Keys: []string{"*"}}})
	fmt.Println(err)
	// Output:
	// true false
	// keyserver: authorization rule 1: client selector "edge-eu1.keyedge.test": want "*", "spki:<hex>", "dns:<name>" or "cn:<name>"
}
