package edge

import (
	"context"
	"net"
	"sync"
)

// h1RequestContext is the context of a request the HTTP/1.1 connection
// loop serves: the connection's context (its values; it has no deadline
// and is never done), canceled when the client goes away (the watch) or
// a write to it fails. It is reused from one request to the next, with
// the loop's other buffers (h1Buffers): context.WithCancel, the request
// copy Request.WithContext makes, and the origin client's
// context.AfterFunc cost nine allocations per request, a third of the
// loop's; the origin client registers its connection here instead
// (abortOnDone), which costs none.
//
// A request's context is canceled at the latest when the loop is done
// with it, as net/http's is; after that, nextRequestContext makes it the next
// request's, unless something may still hold it: once Done has been
// called (by whatever waits for it, and by every context derived from
// it: a dial's, a resolver's goroutine), a context that was done must
// stay done, so the loop drops it (reusable) and makes a new one. The
// origin client's own registration (abortOnDone) is stopped before the
// response ends.
type h1RequestContext struct {
	context.Context // the connection's

	mu      sync.Mutex
	done    chan struct{} // made by Done, closed by cancel
	err     error         // context.Canceled once canceled
	abort   net.Conn      // abortOnDone's connection, to cut off when canceled
	exposed bool          // Done was called: not to be reused

	stop func() bool // stopAbort, made once: a method value allocates
}

// nextRequestContext returns the context of a new request on the
// connection whose context is conn: x, the last request's, when nothing
// can hold that one any more (see reusable), else a new one.
func nextRequestContext(x *h1RequestContext, conn context.Context) *h1RequestContext {
	if x == nil || !x.reusable() {
		return &h1RequestContext{Context: conn}
	}
	x.Context, x.done, x.err, x.abort = conn, nil, nil, nil
	return x
}

// reusable reports whether x, canceled, may become another request's
// context: whether nothing has waited for it to be done.
func (x *h1RequestContext) reusable() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	return !x.exposed && x.abort == nil
}

func (x *h1RequestContext) Done() <-chan struct{} {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.exposed = true
	if x.done == nil {
		x.done = make(chan struct{})
		if x.err != nil {
			close(x.done)
		}
	}
	return x.done
}

func (x *h1RequestContext) Err() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.err
}

// cancel cancels the request: its Done closes, and the origin connection
// registered with abortOnDone, if any, has its deadline set in the past,
// which ends its exchange.
func (x *h1RequestContext) cancel() {
	x.mu.Lock()
	if x.err != nil {
		x.mu.Unlock()
		return
	}
	x.err = context.Canceled
	if x.done != nil {
		close(x.done)
	}
	conn := x.abort
	x.abort = nil
	x.mu.Unlock()
	if conn != nil {
		conn.SetDeadline(aLongTimeAgo)
	}
}

// abortOnDone is context.AfterFunc(x, func() { conn.SetDeadline(aLongTimeAgo) })
// for one connection at a time, without allocating: stop reports, as
// AfterFunc's, whether it stopped the abort from happening.
func (x *h1RequestContext) abortOnDone(conn net.Conn) (stop func() bool) {
	if x.stop == nil {
		x.stop = x.stopAbort
	}
	x.mu.Lock()
	canceled := x.err != nil
	if !canceled {
		x.abort = conn
	}
	x.mu.Unlock()
	if canceled {
		conn.SetDeadline(aLongTimeAgo)
	}
	return x.stop
}

func (x *h1RequestContext) stopAbort() bool {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.abort = nil
	return x.err == nil
}

// abortOnDone sets conn's deadline in the past once ctx is done, until
// stop is called, as context.AfterFunc does; without allocating for the
// loop's requests.
func abortOnDone(ctx context.Context, conn net.Conn) (stop func() bool) {
	if x, ok := ctx.(*h1RequestContext); ok {
		return x.abortOnDone(conn)
	}
	return context.AfterFunc(ctx, func() { conn.SetDeadline(aLongTimeAgo) })
}
