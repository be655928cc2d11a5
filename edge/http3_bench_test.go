package edge

import (
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testpki"
)

// BenchmarkHTTP3 compares HTTP/3 with HTTP/2 through one edge, a local
// ECDSA tenant and its origin: "connect" opens a new connection (a full
// handshake, no resumption) for each request, "request" sends requests
// over open connections, 4 at a time per CPU. Client, edge and origin
// share the process, so besides ns/op it reports operations per CPU
// second of the whole process (user + system), not of the edge alone.
//
//	go test -run '^$' -bench HTTP3 -benchtime 3s ./edge
func BenchmarkHTTP3(b *testing.B) {
	w := newWorld(b, 0, Options{})
	w.put(b, testpki.ECDSAP256, w.OriginURL, "bench.example.com")
	h3 := serveH3(b, w.srv)
	clients := map[string]func() *http.Client{
		"h2": func() *http.Client { return w.client(b, true) },
		"h3": func() *http.Client { return h3Client(b, w.Roots, h3, "") },
	}
	get := func(b *testing.B, c *http.Client) {
		resp, err := c.Get("https://bench.example.com/")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
	}
	for _, proto := range []string{"h2", "h3"} {
		b.Run("connect-"+proto, func(b *testing.B) {
			cpu := startCPU()
			for range b.N {
				c := clients[proto]()
				get(b, c)
				c.CloseIdleConnections()
			}
			cpu.report(b)
		})
		b.Run("request-"+proto, func(b *testing.B) {
			c := clients[proto]()
			get(b, c)
			cpu := startCPU()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get(b, c)
				}
			})
			cpu.report(b)
		})
	}
}

// cpuClock reads the process's CPU time (user + system).
type cpuClock time.Duration

func startCPU() cpuClock { return cpuClock(processCPU()) }

// report reports the operations per CPU second since c started.
func (c cpuClock) report(b *testing.B) {
	b.StopTimer()
	if d := processCPU() - time.Duration(c); d > 0 {
		b.ReportMetric(float64(b.N)/d.Seconds(), "ops/cpu-s")
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
