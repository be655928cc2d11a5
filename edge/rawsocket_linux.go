package edge

import (
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"
)

// rawSocket reads and writes a TCP socket with raw system calls
// (syscall.RawSyscall) through its syscall.RawConn, which waits in the
// network poller as net.Conn's Read and Write do and keeps their
// deadlines. What it leaves out is the runtime's syscall bookkeeping
// (entersyscall and exitsyscall): with GOMAXPROCS 1, every time the only
// P comes back from idle, the first system call entered that way wakes
// the runtime's monitor thread (sysmon) from its deep sleep and resets
// it to polling every 20 µs, each wake a context switch that preempts
// the serving thread on the same CPU. A read or write of a non-blocking
// socket never blocks, so the runtime has nothing to hand over while it
// runs. Reads and writes may run concurrently with each other, as a
// net.Conn's; two reads (or two writes) may not.
type rawSocket struct {
	conn net.Conn // for its addresses, in errors
	rc   syscall.RawConn

	rbuf  []byte
	rn    int
	rerr  syscall.Errno
	wbuf  []byte
	wn    int
	werr  syscall.Errno
	read  func(fd uintptr) bool // rawRead, bound once: a method value per call allocates
	write func(fd uintptr) bool
}

// newRawSocket returns c's rawSocket if c is a plain TCP connection (not
// a wrapper that may hold bytes of its own, such as a PROXY protocol
// reader's), else nil.
func newRawSocket(c net.Conn) *rawSocket {
	tcp, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tcp.SyscallConn()
	if err != nil {
		return nil
	}
	s := &rawSocket{conn: c, rc: rc}
	s.read, s.write = s.rawRead, s.rawWrite
	return s
}

func (s *rawSocket) rawRead(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.rbuf[0])), uintptr(len(s.rbuf)))
		switch errno {
		case 0:
			s.rn = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		}
		s.rerr = errno
		return true
	}
}

func (s *rawSocket) rawWrite(fd uintptr) bool {
	for s.wn < len(s.wbuf) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&s.wbuf[s.wn])), uintptr(len(s.wbuf)-s.wn))
		switch errno {
		case 0:
			s.wn += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			return false // wait until writable
		default:
			s.werr = errno
			return true
		}
	}
	return true
}

// Read reads p as net.Conn's Read does: io.EOF at the end, errors as
// *net.OpError.
func (s *rawSocket) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.rbuf, s.rn, s.rerr = p, 0, 0
	err := s.rc.Read(s.read)
	n, errno := s.rn, s.rerr
	s.rbuf = nil
	switch {
	case err != nil:
		return 0, s.opError("read", err)
	case errno != 0:
		return 0, s.opError("read", errno)
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
}

// Write writes all of p as net.Conn's Write does.
func (s *rawSocket) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.wbuf, s.wn, s.werr = p, 0, 0
	err := s.rc.Write(s.write)
	n, errno := s.wn, s.werr
	s.wbuf = nil
	switch {
	case err != nil:
		return n, s.opError("write", err)
	case errno != 0:
		return n, s.opError("write", errno)
	}
	return n, nil
}

// opError is err as net.Conn's Read and Write return it: a deadline's
// os.ErrDeadlineExceeded, a closed connection's net.ErrClosed, a system
// call's *os.SyscallError, each in a *net.OpError.
func (s *rawSocket) opError(op string, err error) error {
	if oe, ok := err.(*net.OpError); ok {
		err = oe.Err // RawConn's own "raw-read" / "raw-write"
	}
	if errno, ok := err.(syscall.Errno); ok {
		err = &os.SyscallError{Syscall: op, Err: errno}
	}
	return &net.OpError{Op: op, Net: "tcp", Source: s.conn.LocalAddr(), Addr: s.conn.RemoteAddr(), Err: err}
}
