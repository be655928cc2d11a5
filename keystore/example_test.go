package keystore_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "keystore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// The fleet key seals private keys at rest; every node holds it.
	fleet, err := keystore.GenerateFleetKey()
	if err != nil {
		log.Fatal(err)
	}
	store, err := keystore.Open(ctx, keystore.Options{
		Storage:  &certmagic.FileStorage{Path: dir},
		FleetKey: fleet,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	ca, err := testpki.NewCA("example CA")
	if err != nil {
		log.Fatal(err)
	}
	leaf, err := ca.Issue(testpki.LeafSpec{Names: []string{"shop.example.com", "*.shop.example.com"}})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := store.Put(ctx, &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: "shop", Origin: "http://10.0.0.7:8080"},
		Chain: leaf.Chain,
		Key:   leaf.Key,
	}); err != nil {
		log.Fatal(err)
	}

	// A handshake for "cart.shop.example.com" finds the wildcard.
	entry, err := store.Lookup(ctx, "Cart.Shop.Example.com.")
	if err != nil {
		log.Fatal(err)
	}
	cert := entry.Certs[0]
	fmt.Println(entry.Name, cert.Meta.Tenant, cert.Meta.Origin)

	// The key is read and unsealed on first use.
	key, err := cert.PrivateKey(ctx)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%T\n", key)
	// Output:
	// *.shop.example.com shop http://10.0.0.7:8080
	// *ecdsa.PrivateKey
}
