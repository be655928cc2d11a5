package testpki_test

import (
	"crypto/x509"
	"fmt"
	"log"

	"github.com/keyedge/keyedge/internal/testpki"
)

func Example() {
	ca, err := testpki.NewCA("Keyedge Test Root")
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{
		Names: []string{"tenant-42.example.com", "*.tenant-42.example.com"},
	})
	if err != nil {
		log.Fatal(err)
	}

	// A TLS server presents the leaf as
	//
	//	tls.Certificate{Certificate: leaf.Chain, PrivateKey: leaf.Key, Leaf: leaf.Cert}
	//
	// to clients that trust the CA.
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	_, err = leaf.Cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: "api.tenant-42.example.com"})
	fmt.Println(leaf.Cert.Subject.CommonName, leaf.Cert.DNSNames, err)
	// Output: tenant-42.example.com [tenant-42.example.com *.tenant-42.example.com] <nil>
}
