package edge

import (
	"math"
	"net/netip"
	"time"

	"github.com/keyedge/keyedge/keystore"
	"github.com/maypok86/otter/v2"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
)

// rateBuckets bounds the token buckets kept, across all tenants: at
// about 250 bytes each, 16 MiB. Past it the cache (W-TinyLFU) keeps the
// busiest clients, those a limit is for; one evicted starts again with a
// full bucket.
const rateBuckets = 1 << 16

// rateBucketMaxIdle bounds how long an idle client's bucket is kept. A
// bucket is dropped once it would be full again anyway (burst/rate, by
// the wall clock: the cache's), so dropping it loses nothing; only a
// limit slower than this (a burst refilling over more than an hour)
// forgets a client sooner.
const rateBucketMaxIdle = time.Hour

// rateKey is a bucket's key: the tenant's certificate and the client.
type rateKey struct {
	cert   string
	client netip.Prefix
}

// rateLimiter is the per-tenant request rate limit
// (keystore.TenantHTTP.RateLimit): a token bucket (golang.org/x/time/rate)
// per tenant and client address, the IPv4 address or IPv6 /64 as the
// PROXY header names it when PROXY protocol is on. Buckets live in a
// bounded cache and expire once full again, so memory stays bounded
// however many clients come. It is safe for concurrent use.
type rateLimiter struct {
	now     func() time.Time // time.Now; tests pin it
	buckets *otter.Cache[rateKey, *rate.Limiter]
	limited prometheus.Counter
}

func newRateLimiter(now func() time.Time) *rateLimiter {
	l := &rateLimiter{
		now: now,
		limited: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyedge_edge_rate_limited_total",
			Help: "Requests refused with 429 by a tenant's rate limit.",
		}),
	}
	l.buckets = otter.Must(&otter.Options[rateKey, *rate.Limiter]{
		MaximumSize:      rateBuckets,
		ExpiryCalculator: otter.ExpiryAccessingFunc(func(e otter.Entry[rateKey, *rate.Limiter]) time.Duration { return refillTime(e.Value) }),
	})
	return l
}

// refillTime is how long b takes to fill from empty, bounded.
func refillTime(b *rate.Limiter) time.Duration {
	d := time.Duration(float64(b.Burst()) / float64(b.Limit()) * float64(time.Second))
	return min(max(d, time.Second), rateBucketMaxIdle)
}

// allow takes a token for a request of client to the tenant of cert,
// limited by lim, and reports whether there was one; when not, also how
// long until there is.
func (l *rateLimiter) allow(cert string, client netip.Prefix, lim *keystore.RateLimit) (ok bool, retryAfter time.Duration) {
	now := l.now()
	key := rateKey{cert, client}
	b, found := l.buckets.GetIfPresent(key)
	if !found {
		b, _ = l.buckets.SetIfAbsent(key, rate.NewLimiter(rate.Limit(lim.PerSecond), lim.Burst))
	}
	if b.Limit() != rate.Limit(lim.PerSecond) { // the tenant's limit changed
		b.SetLimitAt(now, rate.Limit(lim.PerSecond))
	}
	if b.Burst() != lim.Burst {
		b.SetBurstAt(now, lim.Burst)
	}
	if b.AllowN(now, 1) {
		return true, 0
	}
	l.limited.Inc()
	missing := 1 - b.TokensAt(now)
	// To the millisecond: float error must not turn 1s into a Retry-After of 2.
	return false, time.Duration(missing / lim.PerSecond * float64(time.Second)).Round(time.Millisecond)
}

// retryAfterSeconds is a Retry-After value for a wait of d: whole
// seconds, rounded up, at least 1.
func retryAfterSeconds(d time.Duration) int64 {
	return max(1, int64(math.Ceil(d.Seconds())))
}
