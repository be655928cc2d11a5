// Package pebbletest runs a real ACME CA, Pebble (its CA, VA and WFE in
// process), on 127.0.0.1 for tests that obtain certificates.
package pebbletest

import (
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testlog"

	"github.com/letsencrypt/pebble/v2/ca"
	"github.com/letsencrypt/pebble/v2/db"
	"github.com/letsencrypt/pebble/v2/va"
	"github.com/letsencrypt/pebble/v2/wfe"
	"github.com/miekg/dns"
	"golang.org/x/crypto/ocsp"
)

// Pebble is a real Pebble ACME CA (its CA, VA and WFE, in process)
// on 127.0.0.1. Its VA resolves every name to 127.0.0.1 through a small
// DNS server and validates on the given HTTP-01 and TLS-ALPN-01 ports.
// With ocsp set, issued certificates name an OCSP responder that answers
// from Pebble's own database, signed by its issuing intermediate: Pebble
// itself has no OCSP responder (its README says so).
type Pebble struct {
	URL     string            // ACME directory
	Roots   *x509.CertPool    // trust for the directory's HTTPS
	TLSCert *x509.Certificate // the directory's HTTPS certificate, which Roots holds
	Root    *x509.CertPool    // trust for the certificates it issues

	ca *ca.CAImpl
	db *db.MemoryStore

	Down      atomic.Bool  // set: answer every ACME request 503
	NewOrders atomic.Int64 // new-order requests that reached Pebble
}

// Options says where Pebble's VA validates challenges (the ports of the
// listeners under test, on 127.0.0.1) and what it issues.
type Options struct {
	HTTPPort, TLSPort int
	Validity          time.Duration // certificate lifetime [Pebble's default]
	OCSP              bool          // name an OCSP responder in certificates
}

// Start runs Pebble until the test ends.
func Start(t testing.TB, cfg Options) *Pebble {
	t.Helper()
	t.Setenv("PEBBLE_VA_NOSLEEP", "1")
	t.Setenv("PEBBLE_WFE_NONCEREJECT", "0")
	logs := &testlog.Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("pebble log:\n%s", logs)
		}
	})
	logger := log.New(logs, "pebble ", log.Lmicroseconds)

	p := &Pebble{db: db.NewMemoryStore()}
	var ocspURL string
	if cfg.OCSP {
		responder := httptest.NewServer(http.HandlerFunc(p.serveOCSP))
		t.Cleanup(responder.Close)
		ocspURL = responder.URL
	}
	profiles := map[string]ca.Profile{"default": {
		Description:    "keyedge tests",
		ValidityPeriod: uint64(cfg.Validity / time.Second),
	}}
	p.ca = ca.New(logger, p.db, ocspURL, "rsa", 0, 1, profiles)
	vaImpl := va.New(logger, cfg.HTTPPort, cfg.TLSPort, false, startDNS(t), p.db)
	wfeImpl := wfe.New(logger, p.db, vaImpl, p.ca, nil, false, false, 0, 0)
	handler := wfeImpl.Handler()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p.Down.Load() {
			http.Error(w, "pebble is down for this test", http.StatusServiceUnavailable)
			return
		}
		if strings.HasSuffix(r.URL.Path, "/order-plz") {
			p.NewOrders.Add(1)
		}
		handler.ServeHTTP(w, r)
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)

	p.URL = srv.URL + wfe.DirectoryPath
	p.Roots = x509.NewCertPool()
	p.Roots.AddCert(srv.Certificate())
	p.TLSCert = srv.Certificate()
	p.Root = x509.NewCertPool()
	p.Root.AddCert(p.ca.GetRootCert(0).Cert)
	return p
}

// serveOCSP answers OCSP requests for certificates Pebble issued, from
// its database: revoked if revoked through ACME, good otherwise.
func (p *Pebble) serveOCSP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 10<<10))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	req, err := ocsp.ParseRequest(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	issuer := p.ca.GetIntermediateCert(0).Cert
	tmpl := ocsp.Response{
		SerialNumber: req.SerialNumber,
		Status:       ocsp.Unknown,
		ThisUpdate:   time.Now().Add(-time.Minute),
		NextUpdate:   time.Now().Add(time.Hour),
	}
	if rc := p.db.GetRevokedCertificateBySerial(req.SerialNumber); rc != nil {
		tmpl.Status, tmpl.RevokedAt = ocsp.Revoked, rc.RevokedAt
		tmpl.RevocationReason = ocsp.Unspecified
	} else if p.db.GetCertificateBySerial(req.SerialNumber) != nil {
		tmpl.Status = ocsp.Good
	}
	resp, err := ocsp.CreateResponse(issuer, issuer, tmpl, p.ca.GetIntermediateKey(0))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/ocsp-response")
	w.Write(resp)
}

// startDNS runs a DNS server over TCP (Pebble's VA asks over TCP) that
// answers every A question with 127.0.0.1 and nothing else, so test
// names need no entry anywhere. It returns its address.
func startDNS(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{Listener: ln, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		for _, q := range r.Question {
			if q.Qtype == dns.TypeA {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET},
					A:   net.IPv4(127, 0, 0, 1),
				})
			}
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return ln.Addr().String()
}
