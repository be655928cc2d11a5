package edge

import (
	"bufio"
	"io"
	"net/http"
	"testing"
)

// BenchmarkH1Loop measures proxied keep-alive GETs through the HTTP/1.1
// connection loop: a real TLS connection to a real edge, a request head
// like h2load's, and a plain-HTTP origin on 127.0.0.1 that answers every
// request with the same 3-byte, Content-Length framed response (it reads
// heads with a bufio.Reader; its allocations, and the client's, are in
// allocs/op, the same before and after a change of the edge). Compare
// commits with:
//
//	go test -run '^$' -bench H1Loop -benchmem -count 6 ./edge
func BenchmarkH1Loop(b *testing.B) {
	const response = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nDate: Wed, 02 Dec 2026 00:00:00 GMT\r\n\r\nok\n"
	origin := rawOrigin(b, func(string) string { return response })
	w := tenantWorld(b, "http://"+origin, "bench.keyedge.test")
	cfg := w.tlsConfig("bench.keyedge.test")
	cfg.NextProtos = []string{"http/1.1"}
	conn, err := w.handshake(cfg)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	const req = "GET /index.html HTTP/1.1\r\nhost: bench.keyedge.test\r\nuser-agent: h2load nghttp2/1.52.0\r\naccept: */*\r\n\r\n"
	br := bufio.NewReader(conn)
	get := &http.Request{Method: http.MethodGet}
	b.ReportAllocs()
	cpu0 := cpuTime()
	for b.Loop() {
		if _, err := io.WriteString(conn, req); err != nil {
			b.Fatal(err)
		}
		res, err := http.ReadResponse(br, get)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK {
			b.Fatalf("status %d", res.StatusCode)
		}
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/op")
}
