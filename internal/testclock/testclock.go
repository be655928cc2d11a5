// Package testclock is a clock that tests move by hand, for the Now
// hooks keyedge's packages take where time decides behaviour (ticket
// epochs, backoffs, refusal memories, log limits), so tests step through
// time instead of sleeping through it.
package testclock

import (
	"sync/atomic"
	"time"
)

// Clock is a manually advanced clock, safe for concurrent use.
type Clock struct{ nanos atomic.Int64 }

// New returns a Clock reading t.
func New(t time.Time) *Clock {
	c := new(Clock)
	c.nanos.Store(t.UnixNano())
	return c
}

// Now returns the clock's time; pass it as a Now hook.
func (c *Clock) Now() time.Time { return time.Unix(0, c.nanos.Load()) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.nanos.Add(int64(d)) }
