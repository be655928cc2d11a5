package bench

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// Options describe a run. The zero value of each field but Addr, Names
// and Keyless stands for the default in brackets; Check says what is
// wrong with a set of Options, and Run refuses what Check refuses.
type Options struct {
	Addr  string   // host:port of the edge (required but in ModeKeyless)
	Mode  string   // one of Modes [ModeHandshake]
	Names []string // server names (SNI and Host) to draw from (required but in ModeKeyless)
	Dist  string   // DistZipf [default], DistUniform or DistSequential
	ZipfS float64  // Zipf exponent [DefaultZipfS]
	Seed  uint64   // seed of the name draws [1]

	// RootCAs verify the edge's certificates, with the drawn name as
	// ServerName. Nil: the system roots.
	RootCAs *x509.CertPool
	// Curves are the client's key exchange preferences. Nil: crypto/tls's
	// defaults (X25519MLKEM768 first).
	Curves []tls.CurveID
	// TLSVersion, if set, is the only TLS version the client offers
	// (tls.VersionTLS12 or tls.VersionTLS13); zero offers both.
	TLSVersion uint16
	// CertKeys, if set, are the server certificate key types the client
	// accepts (see ParseCertKeys): a handshake with any other fails. In
	// TLS 1.2 the client also offers only the cipher suites for them, so
	// a server holding several certificates for a name picks one of
	// these. crypto/tls does not let a TLS 1.3 client restrict its
	// signature_algorithms, so there the names must be chosen to match.
	CertKeys []x509.PublicKeyAlgorithm
	HTTP2    bool // keep-alive mode over HTTP/2 instead of HTTP/1.1
	// HTTP3 sends the requests over HTTP/3: QUIC to Addr's port over UDP
	// (keyedge serves HTTP/3 on the UDP port of its TCP listener), with
	// quic-go's client, in every mode but ModeKeyless.
	HTTP3 bool
	Path  string // request path ["/"]

	Concurrency int // parallel workers (connections in keep-alive mode, signatures in flight in keyless mode) [1]

	// Keyless is the key server and key of ModeKeyless.
	Keyless *Keyless

	// A run ends when Duration has passed or Requests requests have been
	// made, whichever comes first; requests in flight then finish (each
	// is bounded by Timeout). With neither set, Duration is 10s.
	Duration time.Duration
	Requests int64
	// Timeout bounds each request, connect and handshake included [10s].
	Timeout time.Duration

	// ServerPIDs are the server's processes: their CPU time (user +
	// system, from /proc/PID/stat) over the run gives Result.ServerCPU.
	// OriginPIDs are measured the same way, separately.
	ServerPIDs []int
	OriginPIDs []int
	// MetricsURL, if set, is the edge's /metrics: the keyedge_* counters
	// that changed during the run are in Result.Metrics.
	MetricsURL string

	// Progress, if set, gets a line every ProgressInterval [1s] with the
	// rate so far and the errors.
	Progress         io.Writer
	ProgressInterval time.Duration

	// Label and Scenario name the run in reports: Summarize groups runs
	// by them (e.g. Label "100000 tenants", Scenario "handshake").
	Label, Scenario string
}

// withDefaults returns o with the defaults in place of zero values.
func (o Options) withDefaults() Options {
	o.Mode = cmp.Or(o.Mode, ModeHandshake)
	if o.Mode == ModeKeyless && o.Keyless != nil {
		o.Addr = o.Keyless.Addr
	}
	o.Dist = cmp.Or(o.Dist, DistZipf)
	if o.ZipfS == 0 {
		o.ZipfS = DefaultZipfS
	}
	o.Seed = cmp.Or(o.Seed, 1)
	o.Path = cmp.Or(o.Path, "/")
	o.Concurrency = max(o.Concurrency, 1)
	o.Timeout = cmp.Or(o.Timeout, 10*time.Second)
	o.ProgressInterval = cmp.Or(o.ProgressInterval, time.Second)
	if o.Duration <= 0 && o.Requests <= 0 {
		o.Duration = 10 * time.Second
	}
	return o
}

// Check returns every problem with o (defaults applied), joined with
// errors.Join, or nil when Run can start with o.
func (o Options) Check() error {
	o = o.withDefaults()
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf("bench: "+format, a...)) }
	switch {
	case !slices.Contains(Modes, o.Mode):
		bad("unknown mode %q (want one of %s)", o.Mode, strings.Join(Modes, ", "))
	case o.Mode == ModeKeyless && o.Keyless == nil:
		bad("keyless mode needs Options.Keyless")
	case o.Mode == ModeKeyless:
		if o.Keyless.Addr == "" || o.Keyless.TLSConfig == nil || o.Keyless.Public == nil {
			bad("Keyless needs Addr, TLSConfig and Public")
		}
	default:
		if o.Addr == "" {
			bad("no address")
		}
		if len(o.Names) == 0 {
			bad("no server names")
		}
		if err := checkDist(o.Dist, o.ZipfS); err != nil {
			errs = append(errs, err)
		}
	}
	switch {
	case o.HTTP2 && o.HTTP3:
		bad("HTTP/2 and HTTP/3 exclude each other")
	case (o.HTTP2 || o.HTTP3) && o.Mode == ModeKeyless:
		bad("HTTP/2 and HTTP/3 are for the modes that send requests, not keyless")
	}
	for _, pid := range o.ServerPIDs {
		if pid <= 0 {
			bad("bad server PID %d", pid)
		}
	}
	for _, pid := range o.OriginPIDs {
		if pid <= 0 {
			bad("bad origin PID %d", pid)
		}
	}
	return errors.Join(errs...)
}
