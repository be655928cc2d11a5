package chaos

import (
	"bufio"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metric is the value of one series on the edge's /metrics, written as
// the exposition format writes it: `keyedge_keystore_storage_up` or
// `keyedge_edge_refused_connections_total{reason="per_ip"}` (labels in
// the order exposed). A series not exposed is 0.
func (e *edgeNode) metric(t *testing.T, series string) float64 {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + e.metrics + "/metrics")
	if err != nil {
		t.Fatalf("scraping /metrics: %v", err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		value, ok := strings.CutPrefix(sc.Text(), series+" ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("/metrics: %s: %v", series, err)
		}
		return v
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("reading /metrics: %v", err)
	}
	return 0
}

// logMark is the size of the edge's log so far (the old process's and,
// after an upgrade, the new one's), for logSince.
func (e *edgeNode) logMark(t *testing.T) int {
	t.Helper()
	return len(e.proc.Output(t))
}

// logSince is what the edge has logged since mark.
func (e *edgeNode) logSince(t *testing.T, mark int) string {
	t.Helper()
	return e.proc.Output(t)[mark:]
}

// isTimeout reports whether a request failed because the client gave up
// waiting, rather than on an answer from the edge.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// failures is every failed request's error for hosts.
func (rep *report) failures(hosts ...string) []error {
	var errs []error
	for _, o := range rep.outcomes {
		if o.Err != nil && slices.Contains(hosts, o.Host) {
			errs = append(errs, o.Err)
		}
	}
	return errs
}
