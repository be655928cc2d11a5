package testpki

import (
	"context"
	"fmt"
	"runtime"
	"sync/atomic"

	"github.com/keyedge/keyedge/keystore"
	"golang.org/x/sync/errgroup"
)

// TenantSpec describes a run of generated test tenants. Tenant i (from
// First) is named "t<i>.<Domain>" and is issued by the CA.
type TenantSpec struct {
	Count  int    // how many tenants
	First  int    // index of the first tenant
	Domain string // parent domain of the names; default "keyedge.test"
	Origin string // origin URL written into every tenant's meta
	Policy string // geo policy of every tenant's key; "" for none

	// WildcardEvery gives every K-th tenant the extra SAN "*.t<i>.<Domain>"
	// (0: none). RSAEvery makes every K-th tenant RSA-2048 instead of
	// ECDSA P-256 (0: none).
	WildcardEvery, RSAEvery int

	// Workers is the number of parallel generators; default GOMAXPROCS.
	// Batch is how many tenants each keystore write carries; default 256.
	Workers, Batch int
}

// TenantName returns the primary name of tenant i under domain.
func TenantName(i int, domain string) string {
	return fmt.Sprintf("t%d.%s", i, domain)
}

// GenerateTenants issues spec.Count tenant certificates and stores them
// in store, in parallel batches. progress, if not nil, is called with
// the number of tenants stored so far after every batch, from any
// goroutine. It stops at the first error or when ctx is done. It holds
// the store's write lock from start to end, so other writers wait.
func (ca *CA) GenerateTenants(ctx context.Context, store *keystore.Store, spec TenantSpec, progress func(done int)) error {
	if spec.Count < 0 || spec.First < 0 || spec.WildcardEvery < 0 || spec.RSAEvery < 0 {
		return fmt.Errorf("testpki: negative count, index or interval in tenant spec")
	}
	domain := spec.Domain
	if domain == "" {
		domain = "keyedge.test"
	}
	workers := spec.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	batch := spec.Batch
	if batch <= 0 {
		batch = 256
	}
	// One hold of the write lock for the whole run, not one per batch
	// (see keystore.Store.Hold).
	release, err := store.Hold(ctx)
	if err != nil {
		return fmt.Errorf("testpki: %w", err)
	}
	defer release()
	var next, done atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for range workers {
		g.Go(func() error {
			for ctx.Err() == nil {
				start := int(next.Add(int64(batch))) - batch
				if start >= spec.Count {
					return nil
				}
				end := min(start+batch, spec.Count)
				bundles := make([]*keystore.Bundle, 0, end-start)
				for i := spec.First + start; i < spec.First+end; i++ {
					b, err := ca.tenant(i, domain, spec)
					if err != nil {
						return err
					}
					bundles = append(bundles, b)
				}
				if _, err := store.Put(ctx, bundles...); err != nil {
					return err
				}
				n := done.Add(int64(len(bundles)))
				if progress != nil {
					progress(int(n))
				}
			}
			return ctx.Err()
		})
	}
	return g.Wait()
}

// tenant issues the certificate of tenant i.
func (ca *CA) tenant(i int, domain string, spec TenantSpec) (*keystore.Bundle, error) {
	name := TenantName(i, domain)
	leafSpec := LeafSpec{Names: []string{name}}
	if spec.WildcardEvery > 0 && i%spec.WildcardEvery == 0 {
		leafSpec.Names = append(leafSpec.Names, "*."+name)
	}
	if spec.RSAEvery > 0 && i%spec.RSAEvery == 0 {
		leafSpec.KeyType = RSA2048
	}
	leaf, err := ca.Issue(leafSpec)
	if err != nil {
		return nil, err
	}
	return &keystore.Bundle{
		Meta:  keystore.Meta{Tenant: fmt.Sprintf("t%d", i), Origin: spec.Origin, Policy: spec.Policy},
		Chain: leaf.Chain,
		Key:   leaf.Key,
	}, nil
}
