package edge

import (
	"context"
	"crypto/tls"
	"sync"
	"time"
)

// deadlineCtx is a context ending at a deadline, or when its parent
// ends, or at end, whichever comes first: context.WithDeadline's, but
// the timer and the registration with the parent that WithDeadline
// makes at once are made only when something first waits on the
// context (Done). A handshake needs its context only for what may wait
// (a keystore read, a remote signature); most handshakes find their
// tenant cached and sign locally, and wait on nothing.
//
// It is what the handshake's hooks see instead of ClientHelloInfo's
// context (handshakeContext): crypto/tls starts a goroutine for every
// handshake given a context that can end, to close the connection when
// it does, and the listener bounds the handshake with the connection's
// deadline instead.
type deadlineCtx struct {
	parent   context.Context
	deadline time.Time

	mu     sync.Mutex // guards the rest
	ctx    context.Context
	cancel context.CancelFunc
	ended  bool
}

// newDeadlineCtx returns a deadlineCtx; its end must be called.
func newDeadlineCtx(parent context.Context, deadline time.Time) *deadlineCtx {
	c := &deadlineCtx{}
	c.init(parent, deadline)
	return c
}

// init readies a zero deadlineCtx (one held in another struct).
func (c *deadlineCtx) init(parent context.Context, deadline time.Time) {
	c.parent, c.deadline = parent, deadline
}

// made returns the context.WithDeadline behind c, making it if need be.
func (c *deadlineCtx) made() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ctx == nil {
		c.ctx, c.cancel = context.WithDeadline(c.parent, c.deadline)
		if c.ended {
			c.cancel()
		}
	}
	return c.ctx
}

// end ends c (as a CancelFunc does), releasing its timer if it has one.
func (c *deadlineCtx) end() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	if c.cancel != nil {
		c.cancel()
	}
}

func (c *deadlineCtx) Deadline() (time.Time, bool) {
	if d, ok := c.parent.Deadline(); ok && d.Before(c.deadline) {
		return d, true
	}
	return c.deadline, true
}

func (c *deadlineCtx) Done() <-chan struct{} { return c.made().Done() }

func (c *deadlineCtx) Err() error {
	if ctx := c.current(); ctx != nil {
		return ctx.Err()
	}
	return nil
}

func (c *deadlineCtx) Value(key any) any {
	if ctx := c.current(); ctx != nil {
		return ctx.Value(key)
	}
	return c.parent.Value(key)
}

// current returns the context.WithDeadline behind c if it is made, or
// makes it if c has ended (so its error and cause are WithDeadline's);
// nil while c has not ended and nothing waited on it.
func (c *deadlineCtx) current() context.Context {
	c.mu.Lock()
	ctx, ended := c.ctx, c.ended
	c.mu.Unlock()
	if ctx == nil && (ended || c.parent.Err() != nil || !time.Now().Before(c.deadline)) {
		ctx = c.made()
	}
	return ctx
}

// handshakeContext is the context of hello's handshake for the hooks:
// the listener's deadlineCtx for a TCP connection, else (QUIC)
// crypto/tls's.
func handshakeContext(hello *tls.ClientHelloInfo) context.Context {
	if tc, ok := hello.Conn.(*trackedConn); ok && tc.hs.parent != nil {
		return &tc.hs
	}
	return hello.Context()
}
