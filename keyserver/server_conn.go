package keyserver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/keyedge/keyedge/keyserver/wire"
)

// serverConn is one client connection.
//
// Protocol flow: after the mutual TLS handshake, readLoop takes a slot
// of sem, reads one message, and hands it to a goroutine of its own;
// that goroutine computes the response and queues it, encoded, on out;
// writeLoop writes responses in the order they complete and frees
// their slots. So at most MaxInFlight requests are read and unanswered,
// and when they are, readLoop stops reading (backpressure). A malformed
// message whose framing is intact is answered under its ID; lost
// framing (an I/O error, a truncated message) closes the connection.
//
// Request goroutines are reused: one that has answered waits a while
// for the next request before it exits, which saves growing a fresh
// stack for every signature. There are never more than MaxInFlight.
type serverConn struct {
	// Static after newServerConn.
	srv     *Server
	nc      net.Conn
	tc      *tls.Conn
	remote  string
	ctx     context.Context // ends when the connection is aborted or done
	cancel  context.CancelFunc
	sem     chan struct{} // a slot per request read and not yet written
	out     chan []byte   // encoded responses; closed by serve after the last worker
	drainCh chan struct{} // closed by drain: read no more requests
	drainMu sync.Once
	jobs    chan job // unbuffered: requests to idle workers; closed by serve after readLoop

	// Set by serve after the handshake, read-only after.
	peer *x509.Certificate
	id   string // client identity for logs (clientIdentity)

	workers sync.WaitGroup // request goroutines
}

// job is a request read, with the buffer it aliases.
type job struct {
	m  *wire.Message
	bp *[]byte
}

// workerIdle is how long a request goroutine waits for another request
// before it exits.
const workerIdle = 5 * time.Second

func newServerConn(s *Server, nc net.Conn) *serverConn {
	ctx, cancel := context.WithCancel(context.Background())
	return &serverConn{
		srv:     s,
		nc:      nc,
		tc:      tls.Server(nc, s.tls),
		remote:  nc.RemoteAddr().String(),
		ctx:     ctx,
		cancel:  cancel,
		sem:     make(chan struct{}, s.opts.MaxInFlight),
		out:     make(chan []byte, s.opts.MaxInFlight),
		drainCh: make(chan struct{}),
		jobs:    make(chan job),
	}
}

// bufPool holds read buffers. A decoded message aliases its buffer, so
// each request keeps one until its response is encoded.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, wire.PaddedLen); return &b }}

// serve runs the connection to its end.
func (c *serverConn) serve() {
	defer c.cancel()
	log := c.srv.log.With("remote", c.remote)
	if err := c.handshake(); err != nil {
		if !c.draining() {
			c.srv.metrics.connsTotal.WithLabelValues("handshake_error").Inc()
			log.Debug("keyserver: TLS handshake failed", "err", err)
		}
		c.nc.Close()
		return
	}
	c.srv.metrics.connsTotal.WithLabelValues("ok").Inc()
	c.srv.metrics.conns.Inc()
	defer c.srv.metrics.conns.Dec()
	log = log.With("client", c.id)
	log.Debug("keyserver: client connected", "tls_version", tls.VersionName(c.tc.ConnectionState().Version))

	writerDone := make(chan struct{})
	go func() {
		defer close(writerDone)
		c.writeLoop(log)
	}()
	err := c.readLoop()
	if err != nil {
		c.abort() // framing lost: answer nothing more
	}
	close(c.jobs)
	c.workers.Wait()
	close(c.out)
	<-writerDone
	c.tc.Close() // sends close_notify unless aborted
	log.Debug("keyserver: client disconnected", "err", err)
}

func (c *serverConn) handshake() error {
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.opts.HandshakeTimeout)
	defer cancel()
	go func() {
		select {
		case <-c.drainCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := c.tc.HandshakeContext(ctx); err != nil {
		return err
	}
	certs := c.tc.ConnectionState().PeerCertificates
	if len(certs) == 0 { // RequireAndVerifyClientCert prevents this
		return errors.New("keyserver: no client certificate")
	}
	c.peer, c.id = certs[0], clientIdentity(certs[0])
	return nil
}

// readLoop reads requests until the peer closes the connection (nil),
// drain is called (nil), or framing is lost (the error).
func (c *serverConn) readLoop() error {
	for {
		select {
		case c.sem <- struct{}{}:
		case <-c.drainCh:
			return nil
		case <-c.ctx.Done():
			return c.ctx.Err()
		}
		// drain sets its flag before the deadline and this reads the flag
		// after setting the deadline, so one of them stops the read.
		if err := c.tc.SetReadDeadline(time.Now().Add(c.srv.opts.IdleTimeout)); err != nil {
			return err
		}
		if c.draining() {
			return nil
		}
		bp := bufPool.Get().(*[]byte)
		m, h, err := wire.ReadMessage(c.tc, bp)
		if err != nil {
			bufPool.Put(bp)
			var werr wire.Error
			if errors.As(err, &werr) { // a bad body; the next message starts after it
				c.srv.metrics.requests.WithLabelValues("unknown", resultBadRequest).Inc()
				c.queue(wire.ErrorResponse(h.ID, werr))
				continue
			}
			<-c.sem
			var ne net.Error
			if errors.Is(err, io.EOF) || (c.draining() && errors.As(err, &ne) && ne.Timeout()) {
				return nil
			}
			return err
		}
		c.dispatch(job{m, bp})
	}
}

// dispatch hands a request to an idle worker, or starts one.
func (c *serverConn) dispatch(j job) {
	select {
	case c.jobs <- j:
	default:
		c.workers.Add(1)
		go c.work(j)
	}
}

// work answers j, then further requests until none comes for
// workerIdle or the connection stops reading.
func (c *serverConn) work(j job) {
	defer c.workers.Done()
	idle := time.NewTimer(workerIdle)
	defer idle.Stop()
	for {
		c.handle(j.m, j.bp)
		idle.Reset(workerIdle)
		var ok bool
		select {
		case j, ok = <-c.jobs:
			if !ok {
				return
			}
		case <-idle.C:
			return
		}
	}
}

// handle answers one request; it holds a slot of sem, which writeLoop
// frees.
func (c *serverConn) handle(m *wire.Message, bp *[]byte) {
	ctx, cancel := context.WithTimeout(c.ctx, c.srv.opts.RequestTimeout)
	resp, result := c.srv.answer(ctx, c, m)
	cancel()
	c.srv.metrics.requests.WithLabelValues(opLabel(m.Opcode), result).Inc()
	c.queue(resp) // encodes resp, which may alias the buffer
	bufPool.Put(bp)
}

// queue encodes a response and hands it to writeLoop. It never blocks:
// out has room for every slot of sem, and the caller holds one.
func (c *serverConn) queue(resp *wire.Message) {
	b, err := resp.MarshalBinary()
	if err != nil { // a response larger than a message can be
		c.srv.log.Error("keyserver: cannot encode response", "client", c.id, "err", err)
		b, _ = wire.ErrorResponse(resp.ID, wire.ErrInternal).MarshalBinary()
	}
	c.out <- b
}

// writeLoop writes queued responses, batching those that are ready into
// as few TLS records as fit, and frees a slot of sem for each. After a
// write error it closes the connection and only frees slots.
func (c *serverConn) writeLoop(log *slog.Logger) {
	timeout := c.srv.opts.WriteTimeout
	bw := bufio.NewWriterSize(c.tc, 16<<10)
	var (
		err         error
		deadlineSet time.Time
	)
	for b := range c.out {
		if err == nil {
			// Refresh the deadline now and then rather than per message.
			if now := time.Now(); now.Sub(deadlineSet) > timeout/10 {
				err = c.tc.SetWriteDeadline(now.Add(timeout))
				deadlineSet = now
			}
			if err == nil {
				_, err = bw.Write(b)
			}
			if err == nil && len(c.out) == 0 {
				err = bw.Flush()
			}
			if err != nil {
				log.Debug("keyserver: write failed; closing connection", "err", err)
				c.abort()
			}
		}
		<-c.sem
	}
	if err == nil {
		bw.Flush()
	}
}

// drain stops reading requests; those already read are still answered.
func (c *serverConn) drain() {
	c.drainMu.Do(func() {
		close(c.drainCh)
		c.nc.SetReadDeadline(time.Now())
	})
}

func (c *serverConn) draining() bool {
	select {
	case <-c.drainCh:
		return true
	default:
		return false
	}
}

// abort closes the connection at once and cancels requests in flight.
// The connection is closed first, so an answer a cancelled request
// makes on its way out (an internal error) can no longer be written.
func (c *serverConn) abort() {
	c.nc.Close()
	c.cancel()
}
