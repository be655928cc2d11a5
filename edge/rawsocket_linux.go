package edge

import (
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"
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
	r, w rawOp

	// waiting is set once a write bounded by a stall has waited for the
	// peer, until it completes (trackedConn.sendWaits).
	waiting atomic.Bool
}

// rawOp is the state of one read or write in progress, for the system
// call's function, bound once: a method value made per call allocates.
type rawOp struct {
	buf   []byte
	n     int
	errno syscall.Errno
	fn    func(fd uintptr) bool

	// A write's wait for the peer: each wait bounded by stall if it is
	// not 0 (writeBounded); armed once a deadline was set for one.
	stall time.Duration
	armed bool
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
	s.r.fn, s.w.fn = s.rawRead, s.rawWrite
	return s
}

func (s *rawSocket) rawRead(fd uintptr) bool {
	for {
		n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&s.r.buf[0])), uintptr(len(s.r.buf)))
		switch errno {
		case 0:
			s.r.n = int(n)
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait until readable
		}
		s.r.errno = errno
		return true
	}
}

func (s *rawSocket) rawWrite(fd uintptr) bool {
	for s.w.n < len(s.w.buf) {
		n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&s.w.buf[s.w.n])), uintptr(len(s.w.buf)-s.w.n))
		switch errno {
		case 0:
			s.w.n += int(n)
		case syscall.EINTR:
		case syscall.EAGAIN:
			if s.w.stall > 0 { // each wait anew: progress resets it
				s.conn.SetWriteDeadline(time.Now().Add(s.w.stall))
				s.w.armed = true
				s.waiting.Store(true)
			}
			return false // wait until writable
		default:
			s.w.errno = errno
			return true
		}
	}
	return true
}

// Read reads p as net.Conn's Read does: io.EOF at the end, errors as
// *net.OpError.
func (s *rawSocket) Read(p []byte) (int, error) {
	n, err := s.run(&s.r, "read", s.rc.Read, p)
	if err == nil && n == 0 && len(p) > 0 {
		return 0, io.EOF
	}
	return n, err
}

// Write writes all of p as net.Conn's Write does.
func (s *rawSocket) Write(p []byte) (int, error) {
	return s.writeBounded(p, 0)
}

// writeBounded is Write, with each wait for the peer to read bounded by
// stall (0: unbounded): a deadline is set only when the socket's buffer
// is full, so a write that does not wait costs nothing more, and it is
// cleared after the write. It fails with os.ErrDeadlineExceeded when the
// peer read nothing for stall. The caller must have no write deadline of
// its own set, which this would replace.
func (s *rawSocket) writeBounded(p []byte, stall time.Duration) (int, error) {
	s.w.stall, s.w.armed = stall, false
	n, err := s.run(&s.w, "write", s.rc.Write, p)
	if s.w.armed {
		s.conn.SetWriteDeadline(time.Time{})
		if err == nil {
			s.waiting.Store(false)
		}
	}
	return n, err
}

// run runs op on p through do, RawConn's Read or Write, which calls
// op.fn until it reports done, waiting in the poller in between.
func (s *rawSocket) run(op *rawOp, name string, do func(func(uintptr) bool) error, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	op.buf, op.n, op.errno = p, 0, 0
	err := do(op.fn)
	n, errno := op.n, op.errno
	op.buf = nil
	switch {
	case err != nil:
		return n, s.opError(name, err)
	case errno != 0:
		return n, s.opError(name, errno)
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
