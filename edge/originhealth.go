package edge

import (
	"context"
	"io"
	"log/slog"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Active health checks. Only pools with a health check and recent
// traffic are checked: a pool joins the book on its first pick and
// leaves it once idle for idleAfter, when its origins' check-driven
// state is forgotten. One loop, running only while the book holds a
// pool, starts the checks due each second, at most checkConcurrency at
// a time. The book holds at most maxCheckedTargets origins: past it,
// pools get passive ejection only, so a million tenants cost a bounded
// set of checks, never a checker each.

// healthBook tracks the pools whose origins are checked. It is shared by
// a Proxy and those that replace it on reload.
type healthBook struct {
	// Static after newHealthBook, but for tests, which set them before
	// any request.
	now      func() time.Time
	manual   bool // no loop: the test calls checkDue
	metrics  *originMetrics
	log      *slog.Logger
	capacity int // maxCheckedTargets

	targets atomic.Int64 // origins of the pools in pools

	mu      sync.Mutex                // guards pools, running, closed
	pools   map[*originPool]time.Time // tracked pool → when its next check is due
	running bool                      // the loop is running
	closed  bool
}

// Bounds of active checking.
const (
	maxCheckedTargets = 10_000
	checkConcurrency  = 32
	checkTimeout      = 5 * time.Second // at most; less when the interval is shorter
	checkBodyLimit    = 64 << 10        // read and discarded, so the connection is reused
	minIdleAfter      = time.Minute
)

func newHealthBook(log *slog.Logger) *healthBook {
	return &healthBook{now: time.Now, metrics: newOriginMetrics(), log: log, capacity: maxCheckedTargets, pools: make(map[*originPool]time.Time)}
}

// idleAfter is how long a pool without traffic stays checked.
func idleAfter(interval time.Duration) time.Duration { return max(minIdleAfter, 3*interval) }

// track starts checking pool's origins, unless the book is full.
func (b *healthBook) track(pool *originPool) {
	if b.targets.Load()+int64(len(pool.targets)) > int64(b.capacity) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed || pool.tracked.Load() {
		return
	}
	b.pools[pool] = b.now() // the first check at once
	b.targets.Add(int64(len(pool.targets)))
	pool.tracked.Store(true)
	if !b.running && !b.manual {
		b.running = true
		go b.loop()
	}
}

// untrackLocked stops checking pool; its origins taken out by checks
// are back in, for passive ejection to judge.
func (b *healthBook) untrackLocked(pool *originPool) {
	delete(b.pools, pool)
	b.targets.Add(-int64(len(pool.targets)))
	pool.tracked.Store(false)
	for _, t := range pool.targets {
		t.downUntil.CompareAndSwap(math.MaxInt64, 0)
	}
}

// loop runs the due checks every second while any pool is tracked.
func (b *healthBook) loop() {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for range tick.C {
		if !b.checkDue() {
			return
		}
	}
}

// close stops the checks: the loop ends at its next tick.
func (b *healthBook) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for pool := range b.pools {
		b.untrackLocked(pool)
	}
}

// checkDue forgets the pools idle for idleAfter, runs the checks due by
// b.now and waits for them; it reports whether any pool is still
// tracked, and if none is, the loop must end (running is cleared).
func (b *healthBook) checkDue() bool {
	now := b.now()
	var due []*originPool
	b.mu.Lock()
	for pool, next := range b.pools {
		if now.Sub(time.Unix(0, pool.lastUsed.Load())) > idleAfter(pool.health.Interval) {
			b.untrackLocked(pool)
			continue
		}
		if !now.Before(next) {
			b.pools[pool] = now.Add(pool.health.Interval)
			due = append(due, pool)
		}
	}
	left := len(b.pools) > 0
	if !left {
		b.running = false
	}
	b.mu.Unlock()

	sem := make(chan struct{}, checkConcurrency)
	var wg sync.WaitGroup
	for _, pool := range due {
		for _, t := range pool.targets {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				b.check(pool, t)
			})
		}
	}
	wg.Wait()
	return left
}

// check sends t its health check and moves it in or out by the result.
func (b *healthBook) check(pool *originPool, t *originTarget) {
	ok := b.probe(pool, t)
	result := "ok"
	if !ok {
		result = "fail"
	}
	b.metrics.checks.WithLabelValues(result).Inc()
	t.mu.Lock()
	defer t.mu.Unlock()
	if ok {
		t.okStreak, t.failStreak = t.okStreak+1, 0
		if t.downUntil.Load() != 0 && t.okStreak >= pool.health.Healthy {
			t.downUntil.Store(0)
			b.log.Info("edge: origin back in after health checks", "tenant", pool.tenant, "origin", t.url.Redacted())
		}
		return
	}
	t.okStreak, t.failStreak = 0, t.failStreak+1
	if t.failStreak >= pool.health.Unhealthy && t.downUntil.Swap(math.MaxInt64) == 0 {
		b.metrics.ejections.WithLabelValues(ejectCauseCheck).Inc()
		b.log.Warn("edge: origin out after failed health checks", "tenant", pool.tenant, "origin", t.url.Redacted(), "failures", t.failStreak)
	}
}

// probe sends GET health path to t, and reports a 2xx or 3xx answer in
// time.
func (b *healthBook) probe(pool *originPool, t *originTarget) bool {
	ctx, cancel := context.WithTimeout(context.Background(), min(checkTimeout, pool.health.Interval))
	defer cancel()
	u := *t.url
	u.Path, u.RawPath, u.RawQuery = pool.health.Path, "", ""
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "keyedge-health-check")
	res, err := pool.tr.std.RoundTrip(req)
	if err != nil {
		b.log.Debug("edge: origin health check failed", "tenant", pool.tenant, "origin", t.url.Redacted(), "err", err)
		return false
	}
	io.Copy(io.Discard, io.LimitReader(res.Body, checkBodyLimit))
	res.Body.Close()
	return res.StatusCode < 400
}

// originMetrics are the keyedge_origin_* series, and the proxy's
// retries. No label carries a tenant or an origin.
type originMetrics struct {
	ejections  *prometheus.CounterVec // cause: connect, 5xx, check
	checks     *prometheus.CounterVec // result: ok, fail
	retries    prometheus.Counter
	transports prometheus.Gauge
}

func newOriginMetrics() *originMetrics {
	m := &originMetrics{
		ejections: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_origin_ejections_total",
			Help: "Origins taken out of their pool on this node, by cause: connect (a connection failed), 5xx (a burst of 5xx responses), check (failed health checks).",
		}, []string{"cause"}),
		checks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_origin_health_checks_total",
			Help: "Active origin health checks by result: ok or fail.",
		}, []string{"result"}),
		retries: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "keyedge_proxy_retries_total",
			Help: "Idempotent requests sent again to another origin of their pool after the connection to the first failed before any response.",
		}),
		transports: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "keyedge_origin_transports",
			Help: "Origin connection pools held for tenants' own origin TLS settings or timeouts (bounded).",
		}),
	}
	for _, c := range []string{ejectCauseConnect, ejectCause5xx, ejectCauseCheck} {
		m.ejections.WithLabelValues(c)
	}
	m.checks.WithLabelValues("ok")
	m.checks.WithLabelValues("fail")
	return m
}

// collectors returns the book's series, and the gauges of the origins it
// checks, up and out:
//
//   - keyedge_origin_checked{state="up"|"out"}: origins of the pools with
//     health checks and recent traffic, by state.
func (b *healthBook) collectors() []prometheus.Collector {
	gauge := func(state string, up bool) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "keyedge_origin_checked",
			Help:        "Origins actively health-checked on this node (tenants with recent traffic), by state: up or out.",
			ConstLabels: prometheus.Labels{"state": state},
		}, func() float64 { return float64(b.count(up)) })
	}
	return []prometheus.Collector{b.metrics.ejections, b.metrics.checks, b.metrics.retries, b.metrics.transports, gauge("up", true), gauge("out", false)}
}

// count returns how many tracked origins are up, or out.
func (b *healthBook) count(up bool) int {
	now := b.now().UnixNano()
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for pool := range b.pools {
		for _, t := range pool.targets {
			if t.up(now) == up {
				n++
			}
		}
	}
	return n
}
