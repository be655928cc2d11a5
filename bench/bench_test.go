package bench

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/bench/benchtest"
)

// startEdge starts an edge, its origin (OriginHandler, but for /missing,
// a 404) and a key server on 127.0.0.1.
func startEdge(t *testing.T) *benchtest.World {
	t.Helper()
	return benchtest.Start(t, OriginHandler())
}

// checkCounts asserts a run made want requests without an error and that
// its counts agree with each other.
func checkCounts(t *testing.T, r *Result, want int64) {
	t.Helper()
	if r.Errs() != 0 {
		t.Errorf("errors %v, first: %v", r.Errors, r.ErrorSamples)
	}
	if r.Requests != want || r.Aborted != 0 {
		t.Errorf("requests %d, aborted %d; want %d and 0", r.Requests, r.Aborted, want)
	}
	if r.Latency.Count != r.Requests {
		t.Errorf("latency samples %d != requests %d", r.Latency.Count, r.Requests)
	}
	if r.Handshake.Count != r.Handshakes {
		t.Errorf("handshake samples %d != handshakes %d", r.Handshake.Count, r.Handshakes)
	}
	for what, m := range map[string]map[string]int64{"groups": r.Groups, "versions": r.Versions, "protocols": r.Protocols} {
		var sum int64
		for _, v := range m {
			sum += v
		}
		if sum != r.Handshakes {
			t.Errorf("%s %v add up to %d, not the %d handshakes", what, m, sum, r.Handshakes)
		}
	}
	if len(r.Errors) != len(ErrorKinds) {
		t.Errorf("errors %v: want every kind present", r.Errors)
	}
	if r.Rate <= 0 || r.Seconds <= 0 {
		t.Errorf("rate %v over %v s", r.Rate, r.Seconds)
	}
}

func TestRunHandshake(t *testing.T) {
	e := startEdge(t)
	var progress bytes.Buffer
	r, err := Run(context.Background(), Options{
		Addr:             e.Addr,
		Mode:             ModeHandshake,
		Names:            e.Names,
		RootCAs:          e.Roots,
		Concurrency:      4,
		Requests:         60,
		Duration:         time.Minute,
		ServerPIDs:       []int{os.Getpid()}, // the edge runs in this process
		MetricsURL:       e.MetricsURL,
		Progress:         &progress,
		ProgressInterval: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r, 60)
	if r.Handshakes != 60 {
		t.Errorf("%d handshakes for 60 requests in handshake mode", r.Handshakes)
	}
	// crypto/tls's default client preferences put the hybrid first, and
	// the edge offers it.
	if r.Groups["X25519MLKEM768"] != 60 || r.Versions["TLS 1.3"] != 60 || r.Protocols["http/1.1"] != 60 {
		t.Errorf("groups %v, versions %v, protocols %v; want X25519MLKEM768, TLS 1.3, http/1.1 for all", r.Groups, r.Versions, r.Protocols)
	}
	if r.ServerCPU < 0 || r.ClientCPU < 0 || r.ClockTicks <= 0 {
		t.Errorf("server cpu %v, client cpu %v, clock ticks %d", r.ServerCPU, r.ClientCPU, r.ClockTicks)
	}
	if got := r.Metrics[`keyedge_edge_handshakes_total{group="X25519MLKEM768",result="ok",version="TLS 1.3"}`]; got != 60 {
		t.Errorf("edge counted %v ok handshakes, want 60; metrics %v", got, r.Metrics)
	}
	var text bytes.Buffer
	WriteText(&text, r)
	for _, want := range []string{"60 ok, 0 errors", "X25519MLKEM768 60", "per server CPU-second"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text report lacks %q:\n%s", want, text.String())
		}
	}
}

func TestRunHandshakeClassicalCurve(t *testing.T) {
	e := startEdge(t)
	r, err := Run(context.Background(), Options{
		Addr: e.Addr, Names: e.Names, RootCAs: e.Roots, Dist: DistUniform,
		Curves: []tls.CurveID{tls.X25519}, Concurrency: 2, Requests: 10,
	})
	if err != nil {
		t.Fatal(err)
	}
	checkCounts(t, r, 10)
	if r.Groups["X25519"] != 10 {
		t.Errorf("groups %v, want X25519 for all 10", r.Groups)
	}
}

func TestRunKeepAlive(t *testing.T) {
	e := startEdge(t)
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			r, err := Run(context.Background(), Options{
				Addr: e.Addr, Mode: ModeKeepAlive, HTTP2: h2, Names: e.Names, RootCAs: e.Roots,
				Concurrency: 3, Requests: 90,
			})
			if err != nil {
				t.Fatal(err)
			}
			checkCounts(t, r, 90)
			if r.Handshakes != 3 {
				t.Errorf("%d handshakes for 3 keep-alive connections", r.Handshakes)
			}
			proto := "http/1.1"
			if h2 {
				proto = "h2"
			}
			if r.Protocols[proto] != 3 {
				t.Errorf("protocols %v, want %s", r.Protocols, proto)
			}
		})
	}
}

// A duration bound alone ends the run.
func TestRunDurationBound(t *testing.T) {
	e := startEdge(t)
	start := time.Now()
	r, err := Run(context.Background(), Options{
		Addr: e.Addr, Mode: ModeKeepAlive, Names: e.Names, RootCAs: e.Roots,
		Concurrency: 2, Duration: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a 200ms run took %v", d)
	}
	if r.Errs() != 0 || r.Requests == 0 {
		t.Errorf("%d requests, errors %v %v", r.Requests, r.Errors, r.ErrorSamples)
	}
}

// Cancelling the caller's context ends the run at once; requests it cut
// off are aborted, not errors.
func TestRunCanceled(t *testing.T) {
	e := startEdge(t)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	r, err := Run(ctx, Options{Addr: e.Addr, Names: e.Names, RootCAs: e.Roots, Concurrency: 4, Duration: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("a run canceled after 200ms took %v", d)
	}
	if r.Errs() != 0 || r.Requests == 0 {
		t.Errorf("%d requests, %d aborted, errors %v %v", r.Requests, r.Aborted, r.Errors, r.ErrorSamples)
	}
}

// Failures are counted by kind, and the run still ends.
func TestRunErrors(t *testing.T) {
	e := startEdge(t)
	// Nothing listens on a port just closed.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	cases := []struct {
		name string
		cfg  Options
		kind string
	}{
		{"dial", Options{Addr: closed, Names: e.Names, RootCAs: e.Roots}, ErrDial},
		{"untrusted", Options{Addr: e.Addr, Names: e.Names, RootCAs: x509.NewCertPool()}, ErrHandshake},
		{"unknown name", Options{Addr: e.Addr, Names: []string{"nobody.keyedge.test"}, RootCAs: e.Roots}, ErrHandshake},
		{"status", Options{Addr: e.Addr, Names: e.Names, RootCAs: e.Roots, Mode: ModeKeepAlive, Path: "/missing"}, ErrStatus},
		{"h2 status", Options{Addr: e.Addr, Names: e.Names, RootCAs: e.Roots, Mode: ModeKeepAlive, HTTP2: true, Path: "/missing"}, ErrStatus},
		{"handshake status", Options{Addr: e.Addr, Names: e.Names, RootCAs: e.Roots, Path: "/missing"}, ErrStatus},
		{"h2 dial", Options{Addr: closed, Names: e.Names, RootCAs: e.Roots, Mode: ModeKeepAlive, HTTP2: true}, ErrDial},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Requests, c.cfg.Concurrency = 5, 2
			r, err := Run(context.Background(), c.cfg)
			if err != nil {
				t.Fatal(err)
			}
			if r.Errors[c.kind] != 5 || r.Errs() != 5 || r.Requests != 0 {
				t.Errorf("errors %v, %d ok; want 5 %s errors (first: %v)", r.Errors, r.Requests, c.kind, r.ErrorSamples)
			}
			if c.kind == ErrStatus && r.Statuses[http.StatusNotFound] != 5 {
				t.Errorf("statuses %v, want 5 × 404", r.Statuses)
			}
		})
	}
}

func TestRunBadConfig(t *testing.T) {
	for _, cfg := range []Options{
		{},
		{Addr: "127.0.0.1:1"},
		{Addr: "127.0.0.1:1", Names: []string{"a"}, Mode: "nope"},
		{Addr: "127.0.0.1:1", Names: []string{"a"}, Dist: "nope"},
		{Addr: "127.0.0.1:1", Names: []string{"a"}, HTTP2: true, HTTP3: true},
		{Addr: "127.0.0.1:1", Names: []string{"a"}, ServerPIDs: []int{-1}},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("Run(%+v) succeeded", cfg)
		}
	}
}

// Check names every problem at once, not just the first.
func TestCheckReportsEveryProblem(t *testing.T) {
	err := Options{Dist: "nope", HTTP2: true, HTTP3: true, ServerPIDs: []int{0}}.Check()
	for _, want := range []string{"no address", "no server names", `unknown distribution "nope"`, "HTTP/2 and HTTP/3 exclude each other", "bad server PID 0"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check() = %v, want it to say %q", err, want)
		}
	}
	if err := (Options{Addr: "127.0.0.1:1", Names: []string{"a"}}).Check(); err != nil {
		t.Errorf("Check() of good options = %v", err)
	}
}

func TestHistogramPercentiles(t *testing.T) {
	h := NewHistogram()
	if (h.Summary() != Percentiles{}) {
		t.Errorf("empty histogram: %+v", h.Summary())
	}
	// 1…10000 µs, each once, recorded by two histograms and merged.
	other := NewHistogram()
	for i := 1; i <= 10000; i++ {
		if i%2 == 0 {
			h.Record(time.Duration(i) * time.Microsecond)
		} else {
			other.Record(time.Duration(i) * time.Microsecond)
		}
	}
	h.Merge(other)
	p := h.Summary()
	near := func(what string, got, want float64) {
		t.Helper()
		if got < want*0.999 || got > want*1.001 {
			t.Errorf("%s = %v ms, want %v ms ±0.1%%", what, got, want)
		}
	}
	if p.Count != 10000 {
		t.Errorf("count %d", p.Count)
	}
	near("min", p.Min, 0.001)
	near("p50", p.P50, 5)
	near("p90", p.P90, 9)
	near("p99", p.P99, 9.9)
	near("p99.9", p.P999, 9.99)
	near("max", p.Max, 10)
	near("mean", p.Mean, 5.0005)

	// Out of range values are clamped, not lost.
	c := NewHistogram()
	c.Record(0)
	c.Record(2 * time.Hour)
	if s := c.Summary(); s.Count != 2 || s.Min != 0.001 || s.Max < 59_000 {
		t.Errorf("clamped: %+v", s)
	}
}

func TestSpread(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want spread
	}{
		{nil, spread{}},
		{[]float64{3}, spread{3, 3, 3}},
		{[]float64{5, 1, 3}, spread{3, 1, 5}},
		{[]float64{4, 1, 2, 3}, spread{2.5, 1, 4}},
	} {
		if got := spreadOf(c.xs); got != c.want {
			t.Errorf("spreadOf(%v) = %+v, want %+v", c.xs, got, c.want)
		}
	}
}

func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses, as a process may set.
	line := "4242 (we ird) (name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 1234 567 0 0 20 0 8 0 100 0 0\n"
	u, s, err := parseStat([]byte(line))
	if err != nil || u != 1234 || s != 567 {
		t.Errorf("parseStat = %d, %d, %v; want 1234, 567", u, s, err)
	}
	for _, bad := range []string{"", "12 (x) S 1 2", "12 (x) S 1 2 3 4 5 6 7 8 9 10 x 6", "no parens 1 2 3 4 5 6 7 8 9 10 11 12 13 14"} {
		if _, _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q) succeeded", bad)
		}
	}

	// This process, after burning some CPU.
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(100 * time.Millisecond)
	x := 0
	for time.Now().Before(deadline) {
		x++
	}
	after, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if after < before || after == 0 {
		t.Errorf("cpu time went from %v to %v after a busy loop (%d)", before, after, x)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("ProcessCPU(-1) succeeded")
	}
	if hz := ClockTicks(); hz <= 0 {
		t.Errorf("ClockTicks() = %d", hz)
	}
}

func TestPicker(t *testing.T) {
	names := TenantNames(1000, "keyedge.test")
	if names[7] != "t7.keyedge.test" {
		t.Fatalf("names[7] = %q", names[7])
	}
	draw := func(dist string, seed uint64) []int {
		p := newPicker(names, dist, DefaultZipfS, seed, 3, new(atomic.Uint64))
		counts := make([]int, len(names))
		for range 100_000 {
			counts[p.index()]++
		}
		return counts
	}
	z := draw(DistZipf, 1)
	if z[0] <= z[1] || z[1] <= z[10] || z[10] <= z[500] {
		t.Errorf("zipf counts not falling with rank: %d %d %d %d", z[0], z[1], z[10], z[500])
	}
	// P(rank 0) = 1/H(1000, 1.1) ≈ 1/5.57 ≈ 0.179.
	if f := float64(z[0]) / 100_000; f < 0.165 || f > 0.195 {
		t.Errorf("zipf share of the first name %.3f, want about 0.179", f)
	}
	if again := draw(DistZipf, 1); fmt.Sprint(again) != fmt.Sprint(z) {
		t.Error("same seed, different draws")
	}
	u := draw(DistUniform, 1)
	for i, c := range u {
		if c < 40 || c > 180 {
			t.Errorf("uniform: name %d drawn %d times of 100000, want about 100", i, c)
			break
		}
	}
	// In turn: 100,000 draws over 1,000 names take each 100 times.
	for i, c := range draw(DistSequential, 1) {
		if c != 100 {
			t.Errorf("seq: name %d drawn %d times of 100000, want 100", i, c)
			break
		}
	}
	if one := newPicker([]string{"only"}, DistZipf, DefaultZipfS, 1, 0, nil); one.pick() != "only" {
		t.Errorf("single name: drew %q", one.pick())
	}
	if err := (Options{Addr: "127.0.0.1:1", Names: names, ZipfS: 1}).Check(); err == nil {
		t.Error("zipf s=1 accepted")
	}
}

func TestReadNamesAndCurves(t *testing.T) {
	path := t.TempDir() + "/names"
	os.WriteFile(path, []byte("# tenants\na.example\n\n  b.example  \n"), 0o644)
	names, err := ReadNames(path)
	if err != nil || strings.Join(names, ",") != "a.example,b.example" {
		t.Errorf("ReadNames = %q, %v", names, err)
	}
	os.WriteFile(path, []byte("# nothing\n"), 0o644)
	if _, err := ReadNames(path); err == nil {
		t.Error("a file without names accepted")
	}
	ids, err := ParseCurves("X25519MLKEM768, X25519,P-256")
	if err != nil || len(ids) != 3 || ids[0] != tls.X25519MLKEM768 || ids[2] != tls.CurveP256 {
		t.Errorf("ParseCurves = %v, %v", ids, err)
	}
	if ids, err := ParseCurves(""); err != nil || ids != nil {
		t.Errorf("ParseCurves(\"\") = %v, %v", ids, err)
	}
	if _, err := ParseCurves("X448"); err == nil {
		t.Error("unknown curve accepted")
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP keyedge_keystore_lookups_total x
# TYPE keyedge_keystore_lookups_total counter
keyedge_keystore_lookups_total{result="hit"} 10
keyedge_keystore_lookups_total{result="miss"} 3
keyedge_edge_handshakes_total{group="X25519MLKEM768",result="ok",version="TLS 1.3"} 7
keyedge_edge_handshake_seconds_bucket{le="0.1"} 7
keyedge_edge_handshake_seconds_sum 0.05
keyedge_edge_open_connections 2
go_goroutines 12
`
	m, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		`keyedge_keystore_lookups_total{result="hit"}`:                                        10,
		`keyedge_keystore_lookups_total{result="miss"}`:                                       3,
		`keyedge_edge_handshakes_total{group="X25519MLKEM768",result="ok",version="TLS 1.3"}`: 7,
		`keyedge_edge_handshake_seconds_sum`:                                                  0.05,
	}
	if fmt.Sprint(m) != fmt.Sprint(want) {
		t.Errorf("parseMetrics = %v, want %v", m, want)
	}
	after := map[string]float64{`keyedge_keystore_lookups_total{result="hit"}`: 15, `keyedge_keystore_lookups_total{result="miss"}`: 3}
	if d := metricsDelta(m, after); len(d) != 1 || d[`keyedge_keystore_lookups_total{result="hit"}`] != 5 {
		t.Errorf("metricsDelta = %v", d)
	}
}

func TestSummarize(t *testing.T) {
	mk := func(label, scenario string, rate, perCPU float64) *Result {
		return &Result{Label: label, Scenario: scenario, Mode: ModeHandshake, Rate: rate, HandshakesPerServerCPU: perCPU,
			Groups: map[string]int64{"X25519MLKEM768": 10}, Latency: Percentiles{P50: 1, P99: 2}}
	}
	var out bytes.Buffer
	Summarize(&out, []*Result{
		mk("1 tenant", "handshake", 100, 200), mk("100000 tenants", "handshake", 90, 180),
		mk("1 tenant", "handshake", 110, 220), mk("100000 tenants", "handshake", 80, 160),
		mk("1 tenant", "handshake", 120, 240), mk("100000 tenants", "handshake", 70, 140),
	}, 0)
	s := out.String()
	for _, want := range []string{
		"| handshake | 1 tenant | 3 | 110 (100–120) | 220 (200–240) |",
		"| handshake | 100000 tenants | 3 | 80 (70–90) | 160 (140–180) |",
		"| handshake | 100000 tenants / 1 tenant | 0.727 | 0.727 |",
		"X25519MLKEM768 100%",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}

func TestMachineLoad(t *testing.T) {
	load, err := MachineLoad(context.Background(), 100*time.Millisecond)
	if err != nil || load < 0 || load > 1024 {
		t.Errorf("MachineLoad = %v, %v", load, err)
	}
	if _, ok, err := WaitQuiet(context.Background(), 1024, time.Second); !ok || err != nil {
		t.Errorf("WaitQuiet(1024 cores) = %v, %v", ok, err)
	}
}

func TestSummarizeLeavesOutDisturbedRuns(t *testing.T) {
	mk := func(label string, rate, other float64) *Result {
		return &Result{Label: label, Scenario: "keep-alive", Mode: ModeKeepAlive, Rate: rate, OtherCores: other}
	}
	var out bytes.Buffer
	Summarize(&out, []*Result{
		mk("a", 100, 0), mk("a", 10, 0.9), mk("a", 120, 0.1),
		mk("b", 50, 0.5), mk("b", 60, 0.6),
	}, 0.2)
	s := out.String()
	for _, want := range []string{
		"| keep-alive | a | 2 of 3 | 110 (100–120) |",
		"| keep-alive | b | 2 of 2 | 55 (50–60) |",
		"- keep-alive, a, started 00:00:00: 0.90 cores, 10 req/s (left out)",
		"- keep-alive, b, started 00:00:00: 0.50 cores, 50 req/s (kept: every run of its group was disturbed)",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("summary lacks %q:\n%s", want, s)
		}
	}
}
