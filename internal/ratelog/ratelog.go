// Package ratelog keeps noisy log lines — one per refused request, one
// per failed handshake — to at most one per interval for each kind of
// event, and says in each line how many events of its kind were left
// out since the previous one. Metrics, not logs, count every event.
package ratelog

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Limiter decides which events are logged. The zero value is ready to
// use; it is safe for concurrent use.
type Limiter struct {
	Interval time.Duration    // at most one line per kind this often [10s]
	Now      func() time.Time // the clock [time.Now]

	mu    sync.Mutex // guards kinds
	kinds map[string]*state
}

// state is what a Limiter remembers about one kind of event.
type state struct {
	last       time.Time // when the last line of this kind was allowed
	suppressed int       // events left out since then
}

// Allow reports whether an event of the given kind may be logged now
// and, if so, how many events of that kind it left out since the last
// one it allowed. kind must come from a small fixed set (a reason, a
// result label): the Limiter keeps one entry per kind, forever.
func (l *Limiter) Allow(kind string) (suppressed int, ok bool) {
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	interval := l.Interval
	if interval <= 0 {
		interval = 10 * time.Second
	}
	t := now()
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.kinds[kind]
	if s == nil {
		if l.kinds == nil {
			l.kinds = map[string]*state{}
		}
		l.kinds[kind] = &state{last: t}
		return 0, true
	}
	if t.Sub(s.last) < interval {
		s.suppressed++
		return 0, false
	}
	suppressed, s.suppressed, s.last = s.suppressed, 0, t
	return suppressed, true
}

// Log logs msg with args at level through log, unless Allow refuses the
// kind; a line that follows left-out events of its kind gets the
// attribute suppressed=N.
func (l *Limiter) Log(ctx context.Context, log *slog.Logger, level slog.Level, kind, msg string, args ...any) {
	if !log.Enabled(ctx, level) {
		return
	}
	n, ok := l.Allow(kind)
	if !ok {
		return
	}
	if n > 0 {
		args = append(args, "suppressed", n)
	}
	log.Log(ctx, level, msg, args...)
}
