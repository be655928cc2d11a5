package bench

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/keyedge/keyedge/internal/tlsconf"
)

// Result is what a run measured. Durations are in seconds, latencies in
// milliseconds.
type Result struct {
	Label       string    `json:"label,omitempty"`
	Scenario    string    `json:"scenario,omitempty"`
	Mode        string    `json:"mode"`
	HTTP2       bool      `json:"http2"`
	HTTP3       bool      `json:"http3,omitempty"`
	Addr        string    `json:"addr"`
	Names       int       `json:"names"`
	Dist        string    `json:"dist"`
	ZipfS       float64   `json:"zipf_s,omitempty"`
	Seed        uint64    `json:"seed"`
	Curves      []string  `json:"curves"`
	Concurrency int       `json:"concurrency"`
	Start       time.Time `json:"start"`
	Seconds     float64   `json:"seconds"` // wall time, until the last request finished
	ClientProcs int       `json:"client_gomaxprocs"`

	Requests int64            `json:"requests"` // successful (status 200, body read)
	Errors   map[string]int64 `json:"errors"`   // by kind, every kind present
	// ErrorSamples holds the first error message seen of each kind.
	ErrorSamples map[string]string `json:"error_samples,omitempty"`
	Statuses     map[int]int64     `json:"statuses,omitempty"` // non-200 statuses
	// Aborted requests were cut off because the caller's context ended;
	// they are neither successes nor errors. Requests + errors + Aborted
	// is every request started.
	Aborted int64   `json:"aborted"`
	Rate    float64 `json:"rate"` // Requests per second

	// Handshakes are the TLS handshakes that completed, and what they
	// negotiated: key exchange group, TLS version, ALPN protocol.
	Handshakes    int64            `json:"handshakes"`
	HandshakeRate float64          `json:"handshake_rate"`
	Groups        map[string]int64 `json:"groups"`
	Versions      map[string]int64 `json:"versions"`
	Protocols     map[string]int64 `json:"protocols"`
	// CertKeys counts the key types of the server certificates the
	// completed handshakes verified, e.g. "ECDSA P-256", "RSA-2048".
	CertKeys map[string]int64 `json:"cert_keys"`
	// Resumed handshakes resumed a session; ResumeOffered offered one
	// (ModeResumed). ResumedShare is Resumed over Handshakes.
	Resumed       int64   `json:"resumed"`
	ResumeOffered int64   `json:"resume_offered"`
	ResumedShare  float64 `json:"resumed_share"`
	// TLSVersion and AcceptedCertKeys are Options.TLSVersion and
	// Options.CertKeys, when set.
	TLSVersion       string   `json:"tls_version,omitempty"`
	AcceptedCertKeys []string `json:"accepted_cert_keys,omitempty"`
	// SignKey is the type of the key signed with in ModeKeyless, e.g.
	// "ECDSA P-256" (Addr is the key server's).
	SignKey string `json:"sign_key,omitempty"`

	// Latency is per successful request: in handshake mode from the
	// start of the TCP connect to the end of the response body; in
	// keep-alive mode from sending the request to the end of the body
	// (a new connection's handshake is not included); in keyless mode
	// one signature, from asking to the answer. Handshake is the
	// TLS handshake alone (ClientHello to Finished), for every completed
	// handshake.
	Latency   Percentiles `json:"latency"`
	Handshake Percentiles `json:"handshake"`

	// CPU seconds used during the run. ServerCores is ServerCPU over the
	// wall time: 1.0 is one core kept busy.
	ServerPIDs             []int           `json:"server_pids,omitempty"`
	ServerCPU              float64         `json:"server_cpu_seconds"`
	ServerCPUByPID         map[int]float64 `json:"server_cpu_by_pid,omitempty"`
	ServerCores            float64         `json:"server_cores"`
	RequestsPerServerCPU   float64         `json:"requests_per_server_cpu_second"`
	HandshakesPerServerCPU float64         `json:"handshakes_per_server_cpu_second"`
	OriginCPU              float64         `json:"origin_cpu_seconds,omitempty"`
	ClientCPU              float64         `json:"client_cpu_seconds"` // this process
	ClientCores            float64         `json:"client_cores"`
	ClockTicks             int64           `json:"clock_ticks_per_second"`
	// CPUs is how busy each CPU of the machine was, whoever used it.
	// OtherCores is the CPU time, in cores, that neither the server, the
	// origin, this process nor softirq (loopback networking) accounts
	// for: other processes competing for the machine. Near 0 on a quiet
	// machine; it is only as exact as the clock tick.
	CPUs       []CPUBusy          `json:"cpus,omitempty"`
	OtherCores float64            `json:"other_cores"`
	Metrics    map[string]float64 `json:"metrics,omitempty"` // keyedge_* counters' change
	Warnings   []string           `json:"warnings,omitempty"`
}

// Errs is the total of Errors.
func (r *Result) Errs() int64 {
	var n int64
	for _, v := range r.Errors {
		n += v
	}
	return n
}

// newResult returns the Result of a run of o that started at start and
// took elapsed, with every worker's counts merged in; the CPU times and
// metrics are measured apart (usage).
func newResult(o *Options, start time.Time, elapsed time.Duration, workers []*worker, sign *signer) *Result {
	r := &Result{
		Label: o.Label, Scenario: o.Scenario,
		Mode: o.Mode, HTTP2: o.HTTP2, HTTP3: o.HTTP3, Addr: o.Addr, Names: len(o.Names),
		Dist: o.Dist, Seed: o.Seed, Concurrency: o.Concurrency,
		Start: start, Seconds: elapsed.Seconds(), ClientProcs: runtime.GOMAXPROCS(0),
		ClockTicks: ClockTicks(), ServerPIDs: o.ServerPIDs,
		Errors: make(map[string]int64), ErrorSamples: make(map[string]string), Statuses: make(map[int]int64),
		Groups: make(map[string]int64), Versions: make(map[string]int64), Protocols: make(map[string]int64),
		CertKeys: make(map[string]int64),
	}
	if o.TLSVersion != 0 {
		r.TLSVersion = tls.VersionName(o.TLSVersion)
	}
	for _, k := range o.CertKeys {
		r.AcceptedCertKeys = append(r.AcceptedCertKeys, k.String())
	}
	if sign != nil {
		r.SignKey = sign.keyType
	}
	if o.Dist == DistZipf {
		r.ZipfS = o.ZipfS
	}
	r.Curves = make([]string, 0, len(o.Curves))
	for _, c := range o.Curves {
		r.Curves = append(r.Curves, tlsconf.CurveName(c))
	}
	for _, k := range ErrorKinds {
		r.Errors[k] = 0
	}
	latency, handshake := NewHistogram(), NewHistogram()
	for _, w := range workers {
		w.mergeInto(r, latency, handshake)
	}
	r.Latency, r.Handshake = latency.Summary(), handshake.Summary()
	r.Rate = float64(r.Requests) / elapsed.Seconds()
	r.HandshakeRate = float64(r.Handshakes) / elapsed.Seconds()
	if r.Handshakes > 0 {
		r.ResumedShare = float64(r.Resumed) / float64(r.Handshakes)
	}
	if r.Resumed < r.ResumeOffered {
		r.Warnings = append(r.Warnings, fmt.Sprintf("the server declined %d of the %d sessions offered", r.ResumeOffered-r.Resumed, r.ResumeOffered))
	}
	return r
}

// usage holds what was read before a run (CPU times, the edge's
// counters) to be compared with the same read after it.
type usage struct {
	server, origin, self cpuSnapshot
	cpus                 map[string]cpuTimes
	cpusErr              error
	metrics              map[string]float64
}

// readUsage reads o's processes' CPU times, the machine's per-CPU times
// and the edge's counters before a run. It fails when a process or the
// metrics cannot be read; the per-CPU times are optional.
func readUsage(ctx context.Context, o *Options) (*usage, error) {
	u := new(usage)
	var err error
	if o.MetricsURL != "" {
		if u.metrics, err = scrapeMetrics(ctx, o.MetricsURL); err != nil {
			return nil, err
		}
	}
	if u.server, err = snapshotCPU(o.ServerPIDs); err != nil {
		return nil, err
	}
	if u.origin, err = snapshotCPU(o.OriginPIDs); err != nil {
		return nil, err
	}
	if u.self, err = snapshotCPU([]int{os.Getpid()}); err != nil {
		return nil, err
	}
	u.cpus, u.cpusErr = readCPUTimes()
	return u, nil
}

// record reads the same again after a run that took elapsed and puts
// the differences in r. It fails only when the server's processes
// cannot be read (they exited); other failures become r.Warnings.
func (u *usage) record(ctx context.Context, o *Options, r *Result, elapsed time.Duration) error {
	if len(o.ServerPIDs) > 0 {
		after, err := snapshotCPU(o.ServerPIDs)
		if err != nil {
			return fmt.Errorf("bench: after the run (did the server exit?): %w", err)
		}
		r.ServerCPUByPID, r.ServerCPU = u.server.since(after)
		r.ServerCores = r.ServerCPU / elapsed.Seconds()
		if r.ServerCPU > 0 {
			r.RequestsPerServerCPU = float64(r.Requests) / r.ServerCPU
			r.HandshakesPerServerCPU = float64(r.Handshakes) / r.ServerCPU
		}
	}
	if len(o.OriginPIDs) > 0 {
		after, err := snapshotCPU(o.OriginPIDs)
		if err != nil {
			r.Warnings = append(r.Warnings, err.Error())
		} else {
			_, r.OriginCPU = u.origin.since(after)
		}
	}
	if u.cpusErr == nil {
		if after, err := readCPUTimes(); err == nil {
			r.CPUs = cpuBusy(u.cpus, after)
		}
	} else {
		r.Warnings = append(r.Warnings, "per-CPU time: "+u.cpusErr.Error())
	}
	if after, err := snapshotCPU([]int{os.Getpid()}); err == nil {
		_, r.ClientCPU = u.self.since(after)
		r.ClientCores = r.ClientCPU / elapsed.Seconds()
	}
	if len(r.CPUs) > 0 {
		r.OtherCores = -(r.ServerCPU + r.OriginCPU + r.ClientCPU) / elapsed.Seconds()
		for _, c := range r.CPUs {
			r.OtherCores += c.Busy - c.Softirq
		}
	}
	if o.MetricsURL != "" {
		after, err := scrapeMetrics(ctx, o.MetricsURL)
		if err != nil {
			r.Warnings = append(r.Warnings, err.Error())
		} else {
			r.Metrics = metricsDelta(u.metrics, after)
		}
	}
	return nil
}
