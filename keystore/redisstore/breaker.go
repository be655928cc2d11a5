package redisstore

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
	"github.com/sony/gobreaker/v2"
)

// Every Redis call runs through do: bounded by OpTimeout, and refused at
// once while the circuit breaker is open. The breaker opens after
// BreakerThreshold consecutive calls failed for want of Redis (refused,
// reset, timed out); after BreakerOpenFor it lets one call through, and
// closes when that call succeeds. So while Redis is down or hung, a
// lookup fails in microseconds instead of waiting out timeouts and
// retries, and the keystore's journal poll is what notices the recovery.

// UnavailableError is a failure of Redis itself, not of a key: it could
// not be reached or did not answer within OpTimeout, or the breaker is
// open after repeated such failures. Its Unavailable method reports true,
// which the keystore takes for keystore.ErrUnavailable.
type UnavailableError struct{ Err error }

func (e *UnavailableError) Error() string     { return "redis unavailable: " + e.Err.Error() }
func (e *UnavailableError) Unwrap() error     { return e.Err }
func (e *UnavailableError) Unavailable() bool { return true }

// newBreaker returns the breaker of a Storage with opts' settings
// (defaults applied).
func newBreaker(opts Options) *gobreaker.CircuitBreaker[struct{}] {
	threshold, log := uint32(opts.BreakerThreshold), opts.Logger
	return gobreaker.NewCircuitBreaker[struct{}](gobreaker.Settings{
		Name:        "redis",
		MaxRequests: 1,
		Timeout:     opts.BreakerOpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool { return c.ConsecutiveFailures >= threshold },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			switch to {
			case gobreaker.StateOpen:
				if from == gobreaker.StateClosed {
					log.Error("redisstore: Redis unavailable; failing calls at once until it answers", "failures", threshold)
				}
			case gobreaker.StateClosed:
				log.Info("redisstore: Redis answers again")
			}
		},
	})
}

// do runs op with a context bounded by OpTimeout, through the breaker.
// A failure of Redis itself comes back as an *UnavailableError; a
// reply from Redis (redis.Nil included) or the caller's own cancellation
// comes back as it is and does not count against Redis.
func (s *Storage) do(ctx context.Context, op func(context.Context) error) error {
	var opErr error
	_, err := s.breaker.Execute(func() (struct{}, error) {
		octx, cancel := context.WithTimeout(ctx, s.opTimeout)
		defer cancel()
		opErr = op(octx)
		if opErr != nil && ctx.Err() == nil && !isReply(opErr) {
			return struct{}{}, opErr
		}
		return struct{}{}, nil
	})
	if err != nil {
		return &UnavailableError{Err: err}
	}
	return opErr
}

// isReply reports whether err is an answer from Redis (such as redis.Nil
// or a script error), which shows Redis is up.
func isReply(err error) bool {
	var reply redis.Error
	return errors.As(err, &reply)
}

// Err returns nil while the breaker is closed, and an *UnavailableError
// while it is open or half-open: Redis failed the last calls.
func (s *Storage) Err() error {
	if st := s.breaker.State(); st != gobreaker.StateClosed {
		return &UnavailableError{Err: errors.New("circuit breaker " + st.String())}
	}
	return nil
}
