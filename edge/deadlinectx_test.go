package edge

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestDeadlineCtx: a deadlineCtx behaves as context.WithDeadline's
// context, whether or not something waited on it (Done) before it
// ended: its error and cause, its Done channel, its values and deadline,
// and the contexts made from it.
func TestDeadlineCtx(t *testing.T) {
	type key struct{}
	future := time.Now().Add(time.Hour)
	for _, tc := range []struct {
		name     string
		deadline time.Time
		waited   bool // Done called before the context ends
		end      func(c *deadlineCtx, cancelParent context.CancelFunc)
		want     error // nil: the context has not ended
	}{
		{"live", future, false, nil, nil},
		{"live, waited on", future, true, nil, nil},
		{"deadline passed", time.Now().Add(-time.Second), false, nil, context.DeadlineExceeded},
		{"deadline passed, waited on", time.Now().Add(-time.Second), true, nil, context.DeadlineExceeded},
		{"parent canceled", future, false, func(_ *deadlineCtx, cancel context.CancelFunc) { cancel() }, context.Canceled},
		{"parent canceled, waited on", future, true, func(_ *deadlineCtx, cancel context.CancelFunc) { cancel() }, context.Canceled},
		{"ended", future, false, func(c *deadlineCtx, _ context.CancelFunc) { c.end() }, context.Canceled},
		{"ended, waited on", future, true, func(c *deadlineCtx, _ context.CancelFunc) { c.end() }, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parent, cancelParent := context.WithCancel(context.WithValue(context.Background(), key{}, "v"))
			defer cancelParent()
			c := newDeadlineCtx(parent, tc.deadline)
			defer c.end()
			var done <-chan struct{}
			if tc.waited {
				done = c.Done()
			}
			if tc.end != nil {
				tc.end(c, cancelParent)
			}
			// Not waited on: Err and Cause come before anything makes the
			// timer.
			err, cause := c.Err(), context.Cause(c)
			if !tc.waited {
				done = c.Done()
			}
			child, cancelChild := context.WithCancel(c)
			defer cancelChild()
			if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Errorf("Err() = %v, want %v", err, tc.want)
			}
			if cause != tc.want {
				t.Errorf("Cause = %v, want %v", cause, tc.want)
			}
			if tc.want != nil {
				for name, ch := range map[string]<-chan struct{}{"the context's": done, "a child's": child.Done()} {
					select {
					case <-ch:
					case <-time.After(5 * time.Second):
						t.Fatalf("%s Done not closed with Err() = %v", name, c.Err())
					}
				}
			} else {
				select {
				case <-done:
					t.Error("Done closed while the context is live")
				default:
				}
			}
			if d, ok := c.Deadline(); !ok || !d.Equal(tc.deadline) {
				t.Errorf("Deadline() = %v, %v, want %v", d, ok, tc.deadline)
			}
			if v := c.Value(key{}); v != "v" {
				t.Errorf("Value = %v, want the parent's", v)
			}
		})
	}
}

// TestDeadlineCtxDeadline: a context something waits on ends at its
// deadline.
func TestDeadlineCtxDeadline(t *testing.T) {
	c := newDeadlineCtx(context.Background(), time.Now().Add(50*time.Millisecond))
	defer c.end()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed after the deadline")
	}
	if err := c.Err(); err != context.DeadlineExceeded {
		t.Errorf("Err() = %v, want DeadlineExceeded", err)
	}
}
