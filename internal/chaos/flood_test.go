package chaos

import (
	"context"
	"crypto/tls"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// floodNames is how many distinct unknown names TestUnknownNameFlood
// sends, and maxStorageShare the fraction of them allowed to reach
// storage.
const (
	floodNames      = 20000
	maxStorageShare = 0.01
)

// TestUnknownNameFlood sends 20,000 ClientHellos, each for a distinct
// name no tenant has, to an edge over a Redis keystore, while a load
// runs for the tenants: at most 1% of the names cost a storage read (the
// name filter's count of names let through to storage), and every
// tenant request succeeds. Redis's own command count over the flood is
// logged: besides the tenant load, it holds the journal reads, which
// unknown names trigger too but at most once per PollInterval/10 however
// many they are, so they grow with the flood's duration, not its size.
func TestUnknownNameFlood(t *testing.T) {
	full(t)
	w := newWorld(t, options{Redis: true})
	w.run(load{Hosts: w.hosts(), Requests: 40}).allOK(t, "warm-up", w.hosts()...)
	redisBefore := w.redisCalls()
	maybeBefore := w.edge.metric(t, `keyedge_keystore_name_filter_checks_total{result="maybe"}`) +
		w.edge.metric(t, `keyedge_keystore_name_filter_checks_total{result="unfiltered"}`)

	l := w.startLoad(load{Hosts: w.hosts(), Requests: maxRequests, Within: 2 * time.Minute})
	start := time.Now()
	sent, answered := w.floodUnknownNames(t, floodNames)
	elapsed := time.Since(start)
	l.stop()
	rep := l.wait(t)

	redisCalls := w.redisCalls() - redisBefore
	reads := w.edge.metric(t, `keyedge_keystore_name_filter_checks_total{result="maybe"}`) +
		w.edge.metric(t, `keyedge_keystore_name_filter_checks_total{result="unfiltered"}`) - maybeBefore
	t.Logf("flood: %d ClientHellos sent in %v, %d answered with a handshake failure; %v names past the filter; %d Redis commands meanwhile (%.0f/s, tenant load and journal reads included)",
		sent, elapsed.Round(time.Millisecond), answered, reads, redisCalls, float64(redisCalls)/elapsed.Seconds())
	if sent != floodNames {
		t.Fatalf("sent %d of %d ClientHellos", sent, floodNames)
	}
	if sent != answered {
		t.Errorf("%d of %d ClientHellos were not answered: want every unknown name refused", sent-answered, sent)
	}
	if limit := maxStorageShare * floodNames; reads > limit {
		t.Errorf("%d unknown names: %v reached storage past the name filter, want at most %v", floodNames, reads, limit)
	}
	rep.allOK(t, "tenants during the flood", w.hosts()...)
}

// floodUnknownNames sends n ClientHellos for distinct unknown names from
// 16 connections at a time, each waiting (a bounded time) for the edge's
// answer, and returns how many were sent and how many the edge answered
// with a handshake failure (an alert or a close).
func (w *world) floodUnknownNames(t *testing.T, n int) (sent, answered int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var next, nSent, nAnswered atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for ctx.Err() == nil {
				k := next.Add(1)
				if k > int64(n) {
					return
				}
				name := "u" + strconv.FormatInt(k, 36) + ".flood.keyedge.test"
				hctx, hcancel := context.WithTimeout(ctx, 10*time.Second)
				raw, err := (&net.Dialer{}).DialContext(hctx, "tcp", w.edge.addr)
				if err != nil {
					hcancel()
					continue
				}
				nSent.Add(1)
				err = tls.Client(raw, &tls.Config{ServerName: name, InsecureSkipVerify: true}).HandshakeContext(hctx)
				if err != nil && !isTimeout(err) {
					nAnswered.Add(1)
				}
				raw.Close()
				hcancel()
			}
		})
	}
	wg.Wait()
	return int(nSent.Load()), int(nAnswered.Load())
}

// redisCalls is the number of commands the world's Redis has run so
// far, from INFO commandstats (the INFO itself included).
func (w *world) redisCalls() int {
	w.t.Helper()
	info, err := w.redis.Client(w.t).Info(context.Background(), "commandstats").Result()
	if err != nil {
		w.t.Fatal(err)
	}
	total := 0
	for _, line := range strings.Split(info, "\n") {
		_, stats, ok := strings.Cut(line, ":calls=")
		if !ok || !strings.HasPrefix(line, "cmdstat_") {
			continue
		}
		calls, _, _ := strings.Cut(stats, ",")
		n, err := strconv.Atoi(calls)
		if err != nil {
			w.t.Fatalf("INFO commandstats: %q: %v", line, err)
		}
		total += n
	}
	if total == 0 {
		w.t.Fatalf("INFO commandstats counts no command:\n%s", info)
	}
	return total
}
