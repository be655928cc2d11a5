//go:build unix

package rsasigner

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"syscall"
	"testing"
	"time"
)

// BenchmarkSign compares one RSA-2048 signature by Go's crypto/rsa and by
// OpenSSL, PSS (TLS 1.3) and PKCS #1 v1.5 (TLS 1.2), on one goroutine:
// ns/op is wall time, cpu-ns/op the process's CPU time (user + system)
// per signature, which background load on a shared machine does not
// inflate as much.
func BenchmarkSign(b *testing.B) {
	d := digestOf(crypto.SHA256, "bench")
	pss := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}
	signers := []struct {
		name   string
		signer crypto.Signer
	}{{"go", testKey()}, {"openssl", openSSLSigner(b)}}
	for _, opts := range []struct {
		name string
		opts crypto.SignerOpts
	}{{"pss", pss}, {"pkcs1", crypto.SHA256}} {
		for _, s := range signers {
			b.Run(opts.name+"/"+s.name, func(b *testing.B) {
				start := cpuTime(b)
				for b.Loop() {
					if _, err := s.signer.Sign(rand.Reader, d, opts.opts); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

// BenchmarkSignParallel is BenchmarkSign's PSS signature from
// GOMAXPROCS goroutines: OpenSSL's locks (blinding) under contention.
func BenchmarkSignParallel(b *testing.B) {
	d := digestOf(crypto.SHA256, "bench")
	pss := &rsa.PSSOptions{Hash: crypto.SHA256, SaltLength: rsa.PSSSaltLengthEqualsHash}
	for _, s := range []struct {
		name   string
		signer crypto.Signer
	}{{"go", testKey()}, {"openssl", openSSLSigner(b)}} {
		b.Run(s.name, func(b *testing.B) {
			start := cpuTime(b)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.signer.Sign(rand.Reader, d, pss); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64((cpuTime(b)-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
