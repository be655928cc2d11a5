package edge

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// TestRawSocket checks that a rawSocket reads and writes as net.Conn
// does: all of a write larger than the socket buffers (which waits for
// the peer), the peer's close as io.EOF, a deadline as
// os.ErrDeadlineExceeded, its own close as net.ErrClosed.
func TestRawSocket(t *testing.T) {
	c, s := tcpPair(t)
	rs := newRawSocket(s)
	if rs == nil {
		t.Fatal("newRawSocket(*net.TCPConn) = nil")
	}
	if newRawSocket(struct{ net.Conn }{s}) != nil {
		t.Error("newRawSocket took a wrapper of a TCP connection")
	}

	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<18) // 4 MiB
	got := make(chan []byte)
	go func() {
		b, _ := io.ReadAll(c)
		got <- b
	}()
	if n, err := rs.Write(big); n != len(big) || err != nil {
		t.Fatalf("Write: %d, %v; want %d, nil", n, err, len(big))
	}
	s.CloseWrite()
	if b := <-got; !bytes.Equal(b, big) {
		t.Fatalf("the peer read %d bytes, not the %d written", len(b), len(big))
	}

	c.Write([]byte("hello"))
	buf := make([]byte, 64)
	if n, err := rs.Read(buf); err != nil || string(buf[:n]) != "hello" {
		t.Fatalf("Read: %q, %v; want hello", buf[:n], err)
	}
	s.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, err := rs.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Read past the deadline: %v; want os.ErrDeadlineExceeded", err)
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("Read past the deadline: %T %v; want a net.Error timeout (crypto/tls retries those)", err, err)
	}
	s.SetReadDeadline(time.Time{})
	c.Close()
	if n, err := rs.Read(buf); n != 0 || err != io.EOF {
		t.Fatalf("Read after the peer closed: %d, %v; want 0, io.EOF", n, err)
	}
	s.Close()
	if _, err := rs.Read(buf); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Read after Close: %v; want net.ErrClosed", err)
	}
	if _, err := rs.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Write after Close: %v; want net.ErrClosed", err)
	}
}
