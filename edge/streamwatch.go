package edge

import (
	"context"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// streamWatch bounds by Limits.SendTimeout how long an HTTP/2 response
// write may wait for the client's flow-control window, which the
// connection's send timeout (trackedConn.Write) cannot see: a client
// that reads its connection but never opens a stream's window would
// otherwise hold that request, and its origin connection, for ever.
//
// The proxy watches each HTTP/2 request's stream for as long as its
// handler runs (Proxy.track, proxyExchange.finish), and marks each
// response write and flush in progress (proxyWriter); a sweeper
// (Server.watchStreams) resets a stream whose one write it has seen in
// progress for SendTimeout, as net/http does for a stream's write
// deadline. A response that is not writing, such as a long poll between
// events, is never cut. A write is one of the proxy's (at most its
// 32 KiB copy buffer): a window opened bit by bit does not restart its
// wait. What this costs a request is two uncontended mutex sections,
// and two atomic adds per write, with no allocation and no message to
// the connection's serve loop: net/http's own per-stream write deadline
// is a message and a timer for each setting.
//
// Not watched: the last bytes (at most net/http's 4 KiB write buffer)
// that net/http flushes with the end of the stream after the handler
// has returned, by then without an origin connection.
type streamWatch struct {
	shards [streamWatchShards]streamShard
}

// streamSweepMax is the longest interval between sweeps: a reload's
// SendTimeout applies within it. A sweep reads each watched stream's
// write count, under its shard's lock.
const streamSweepMax = time.Second

// streamSweepMin is the shortest interval between sweeps, whatever
// SendTimeout: a sweep takes every shard's lock.
const streamSweepMin = 10 * time.Millisecond

// streamWatchShards spreads the streams over locks, so that requests on
// different cores seldom wait for each other, or for a sweep.
const streamWatchShards = 16

// streamShard is one lock's streams, padded to its own cache line.
type streamShard struct {
	mu   sync.Mutex
	head *watchedStream // guarded by mu
	_    [48]byte
}

// watchedStream is one HTTP/2 response's entry in the watch. It lives in
// the request's exchange, so watching allocates nothing.
type watchedStream struct {
	// writes counts the starts and ends of the response's writes and
	// flushes: odd while one is in progress. The handler adds; the sweeper
	// reads.
	writes atomic.Uint64

	// Set by watch, before the sweeper can see the entry.
	w     http.ResponseWriter // the server's writer, reset through
	ctx   context.Context     // the request's, which finds its connection (trackedConnOf)
	shard *streamShard

	// Guarded by shard.mu.
	prev, next *watchedStream
	seen       uint64    // writes at the sweep that first saw its value
	seenAt     time.Time // when that sweep was
	reset      bool      // stalled has reported it
}

// watch adds s, the stream of the request r served through w, to the
// watch, until s.unwatch, which must come before the handler returns:
// past that the server may reuse w for another stream.
func (sw *streamWatch) watch(s *watchedStream, w http.ResponseWriter, r *http.Request) {
	s.w, s.ctx = w, r.Context()
	s.shard = &sw.shards[rand.Uint32()%streamWatchShards]
	s.shard.mu.Lock()
	s.next = s.shard.head
	if s.next != nil {
		s.next.prev = s
	}
	s.shard.head = s
	s.shard.mu.Unlock()
}

// unwatch removes s from its watch; after it returns, no sweep touches
// s's writer.
func (s *watchedStream) unwatch() {
	sh := s.shard
	sh.mu.Lock()
	if s.prev != nil {
		s.prev.next = s.next
	} else {
		sh.head = s.next
	}
	if s.next != nil {
		s.next.prev = s.prev
	}
	sh.mu.Unlock()
	s.prev, s.next, s.shard = nil, nil, nil
}

// begin and end bracket a write or flush of the response.
func (s *watchedStream) begin() { s.writes.Add(1) }
func (s *watchedStream) end()   { s.writes.Add(1) }

// sweep resets, at now, the streams whose write has waited for timeout,
// and returns how many it reset.
func (sw *streamWatch) sweep(now time.Time, timeout time.Duration) (reset int) {
	for i := range sw.shards {
		sh := &sw.shards[i]
		sh.mu.Lock()
		for s := sh.head; s != nil; s = s.next {
			if s.stalled(now, timeout) {
				// A deadline in the past resets the stream at once (net/http's
				// RST_STREAM, INTERNAL_ERROR), from any goroutine; the write
				// waiting fails, and with it the origin request. Under
				// sh.mu, so the handler has not returned (unwatch).
				http.NewResponseController(s.w).SetWriteDeadline(aLongTimeAgo)
				reset++
			}
		}
		sh.mu.Unlock()
	}
	return reset
}

// stalled reports, for the sweep at now, whether s is to be reset: its
// write in progress is one that a sweep saw in progress timeout or more
// before now, so that it has waited at least timeout, and at most
// timeout and a sweep's interval more. It reports a stream once; never
// one whose connection's own write waits for the client to read (or
// gave up): that is the connection's send timeout, which closes it.
func (s *watchedStream) stalled(now time.Time, timeout time.Duration) bool {
	n := s.writes.Load()
	if n%2 == 0 || n != s.seen {
		s.seen, s.seenAt = n, now
		return false
	}
	if s.reset || now.Sub(s.seenAt) < timeout {
		return false
	}
	if c := trackedConnOf(s.ctx); c != nil && c.sendWaits() {
		return false
	}
	s.reset = true
	return true
}

// watchStreams sweeps the server's HTTP/2 streams every quarter of
// SendTimeout, or every streamSweepMax if that is sooner, until
// Shutdown, counting their resets as send timeouts. SendTimeout is read
// anew for each sweep, so a reload applies within streamSweepMax.
func (s *Server) watchStreams() {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		timeout := s.settings.Load().limits.SendTimeout
		timer.Reset(max(min(timeout/4, streamSweepMax), streamSweepMin))
		select {
		case <-timer.C:
		case <-s.done:
			return
		}
		if n := s.streams.sweep(time.Now(), timeout); n > 0 {
			s.metrics.sendTimeouts.Add(float64(n))
		}
	}
}
