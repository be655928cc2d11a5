//go:build unix

package keyserver_test

import (
	"crypto"
	"log/slog"
	"syscall"
	"testing"

	"github.com/keyedge/keyedge/keyserver"
	"github.com/keyedge/keyedge/keyserver/wire"
)

// BenchmarkServerRSA measures RSA-2048 PSS signatures (TLS 1.3's) per
// second through a key server over one mutual TLS connection (client
// and server in this process), 16 requests in flight, with each RSA
// signer backend (rsasigner); and the process's CPU time (user +
// system) per signature, client's included. On a loaded machine read
// the CPU figure: OpenSSL signs in cgo calls, on threads outside
// GOMAXPROCS, so its wall rate gets a larger share of the machine.
func BenchmarkServerRSA(b *testing.B) {
	k := keys(b)
	s := ski(b, k.rsa.Public())
	d := digest(crypto.SHA256, []byte("bench"))
	for _, backend := range signerBackends(b) {
		b.Run(string(backend.name), func(b *testing.B) {
			var signer crypto.Signer = k.rsa
			if backend.wrap != nil {
				signer = backend.wrap(k.rsa)
			}
			ts := startServer(b, keyserver.ServerOptions{Keys: mapSource{[20]byte(s): signer}, Logger: slog.New(slog.DiscardHandler)})
			c := ts.client(b)
			var before, after syscall.Rusage
			syscall.Getrusage(syscall.RUSAGE_SELF, &before)
			benchSign(b, c, &wire.Message{Opcode: wire.OpRSAPSSSignSHA256, Payload: d, SKI: s}, 16)
			syscall.Getrusage(syscall.RUSAGE_SELF, &after)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "sig/s")
			cpu := after.Utime.Nano() + after.Stime.Nano() - before.Utime.Nano() - before.Stime.Nano()
			b.ReportMetric(float64(cpu)/1e3/float64(b.N), "cpu-µs/sig")
		})
	}
}
