package chaos

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/certs"
	"github.com/keyedge/keyedge/internal/excerpt"
)

// load is a bounded run of HTTPS requests through the edge: at most
// Requests requests and at most Within long, from Workers clients, to
// Hosts in turn. By default every request opens a new connection, so
// every request is a full TLS handshake (a signature, local or keyless).
type load struct {
	Hosts     []string      // tenants requested, in turn (required)
	Path      string        // request path ["/"]
	Workers   int           // concurrent clients [4]
	Requests  int           // at most this many requests [400; capped at 2000]
	Within    time.Duration // and no new request after this long [10s]
	KeepAlive bool          // reuse connections instead of one per request
	Timeout   time.Duration // bound on one request, handshake included [requestTimeout]
	From      string        // source address, such as "127.0.0.2" [the kernel's choice: 127.0.0.1]
}

// maxRequests caps every load, so a scenario stays bounded.
const maxRequests = 2000

// requestTimeout bounds one request, handshake included, by default:
// beyond the edge's handshake timeout (10s), so the edge's failures are
// seen as such.
const requestTimeout = 15 * time.Second

// outcome is one finished request.
type outcome struct {
	Host string
	Err  error // nil: 200 with the origin's answer for Host
}

// loadRun is a load in progress.
type loadRun struct {
	finished chan struct{} // closed when every worker has returned
	stop     func()        // no new request starts after it

	mu       sync.Mutex // guards outcomes
	outcomes []outcome  // in order of completion
}

// startLoad starts l against the world's edge in the background.
func (w *world) startLoad(l load) *loadRun {
	w.t.Helper()
	if len(l.Hosts) == 0 {
		w.t.Fatal("load without hosts")
	}
	l.Path = cmp.Or(l.Path, "/")
	l.Workers = cmp.Or(l.Workers, 4)
	l.Requests = min(cmp.Or(l.Requests, 400), maxRequests)
	l.Within = cmp.Or(l.Within, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), l.Within)
	r := &loadRun{finished: make(chan struct{}), stop: cancel}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range l.Workers {
		client, tr := w.client(l)
		wg.Go(func() {
			defer tr.CloseIdleConnections()
			for ctx.Err() == nil {
				k := next.Add(1)
				if k > int64(l.Requests) {
					return
				}
				host := l.Hosts[int(k-1)%len(l.Hosts)]
				err := get(client, host, l.Path)
				r.mu.Lock()
				r.outcomes = append(r.outcomes, outcome{Host: host, Err: err})
				r.mu.Unlock()
			}
		})
	}
	go func() {
		wg.Wait()
		cancel()
		close(r.finished)
	}()
	w.t.Cleanup(func() {
		cancel()
		<-r.finished
	})
	return r
}

// client is an HTTPS client of the world's edge with l's KeepAlive,
// Timeout and From: every name is dialled at the edge's address on
// 127.0.0.1, and certificates are checked against the test CA. Without
// KeepAlive, every request opens a new connection (a full handshake: no
// session cache).
func (w *world) client(l load) (*http.Client, *http.Transport) {
	w.t.Helper()
	roots, err := certs.ReadCertPool(w.path("testca.pem"))
	if err != nil {
		w.t.Fatal(err)
	}
	edgeAddr := w.edge.addr
	var dialer net.Dialer
	if l.From != "" {
		dialer.LocalAddr = &net.TCPAddr{IP: net.ParseIP(l.From)}
	}
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: roots},
		DisableKeepAlives: !l.KeepAlive,
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, edgeAddr)
		},
	}
	return &http.Client{Transport: tr, Timeout: cmp.Or(l.Timeout, requestTimeout)}, tr
}

// get makes one request and checks that the origin answered for host.
func get(client *http.Client, host, path string) error {
	resp, err := client.Get("https://" + host + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("reading the body: %w", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "origin "+host {
		return fmt.Errorf("%s: %q", resp.Status, excerpt.Of(string(body), 80))
	}
	return nil
}

// completed is how many requests have finished so far.
func (r *loadRun) completed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.outcomes)
}

// waitCompleted waits until n requests have finished (or the load has
// ended), so a fault lands in the middle of the load.
func (r *loadRun) waitCompleted(t *testing.T, n int) {
	t.Helper()
	deadline := time.After(time.Minute)
	for r.completed() < n {
		select {
		case <-r.finished:
			t.Fatalf("the load ended after %d requests, before %d", r.completed(), n)
		case <-deadline:
			t.Fatalf("not %d requests within a minute (%d)", n, r.completed())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// wait waits for the load to end (it is bounded: Within plus one
// request timeout) and reports its outcomes.
func (r *loadRun) wait(t *testing.T) *report {
	t.Helper()
	select {
	case <-r.finished:
	case <-time.After(2 * time.Minute):
		t.Fatal("the load did not end within 2 minutes")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	rep := &report{outcomes: slices.Clone(r.outcomes)}
	t.Logf("load: %d requests:%s", len(rep.outcomes), rep)
	return rep
}

// run starts l and waits for it to end.
func (w *world) run(l load) *report {
	w.t.Helper()
	return w.startLoad(l).wait(w.t)
}

// report is what a load saw.
type report struct {
	outcomes []outcome // in order of completion
}

// tally counts one host's outcomes.
type tally struct {
	OK, Failed int
	FirstErr   error
}

// from is the report of the requests that finished after the first n.
func (rep *report) from(n int) *report {
	return &report{outcomes: rep.outcomes[min(n, len(rep.outcomes)):]}
}

// byHost counts outcomes per host.
func (rep *report) byHost() map[string]*tally {
	m := map[string]*tally{}
	for _, o := range rep.outcomes {
		c := m[o.Host]
		if c == nil {
			c = &tally{}
			m[o.Host] = c
		}
		if o.Err == nil {
			c.OK++
		} else {
			c.Failed++
			if c.FirstErr == nil {
				c.FirstErr = o.Err
			}
		}
	}
	return m
}

// String is one line per host: "host: ok N, failed M (first error)".
func (rep *report) String() string {
	m := rep.byHost()
	hosts := make([]string, 0, len(m))
	for h := range m {
		hosts = append(hosts, h)
	}
	slices.Sort(hosts)
	var b strings.Builder
	for _, h := range hosts {
		c := m[h]
		fmt.Fprintf(&b, "\n  %s: ok %d, failed %d", h, c.OK, c.Failed)
		if c.FirstErr != nil {
			fmt.Fprintf(&b, " (first: %v)", c.FirstErr)
		}
	}
	return b.String()
}

// allOK fails the test unless every request to hosts succeeded, and at
// least one was made to each.
func (rep *report) allOK(t *testing.T, what string, hosts ...string) {
	t.Helper()
	m := rep.byHost()
	for _, h := range hosts {
		if c := m[h]; c == nil || c.OK == 0 || c.Failed > 0 {
			t.Errorf("%s: want every request to %s to succeed:%s", what, h, rep)
			return
		}
	}
}

// allFailed fails the test unless every request to hosts failed, and at
// least one was made to each.
func (rep *report) allFailed(t *testing.T, what string, hosts ...string) {
	t.Helper()
	m := rep.byHost()
	for _, h := range hosts {
		if c := m[h]; c == nil || c.Failed == 0 || c.OK > 0 {
			t.Errorf("%s: want every request to %s to fail:%s", what, h, rep)
			return
		}
	}
}
