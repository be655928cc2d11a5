package ratelog

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testclock"
)

func TestAllow(t *testing.T) {
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	l := &Limiter{Interval: 10 * time.Second, Now: clock.Now}
	type step struct {
		advance        time.Duration
		kind           string
		wantOK         bool
		wantSuppressed int
	}
	for i, s := range []step{
		{0, "denied", true, 0},            // the first of a kind is logged
		{time.Second, "denied", false, 0}, // within the interval: left out
		{time.Second, "denied", false, 0},
		{0, "internal", true, 0},              // another kind has its own budget
		{8 * time.Second, "denied", true, 2},  // 10s after the last line: logged, 2 left out
		{9 * time.Second, "denied", false, 0}, // the interval restarts at that line
		{time.Second, "denied", true, 1},
		{time.Hour, "denied", true, 0},
	} {
		clock.Advance(s.advance)
		n, ok := l.Allow(s.kind)
		if ok != s.wantOK || n != s.wantSuppressed {
			t.Errorf("step %d (%s): Allow = %d, %v; want %d, %v", i, s.kind, n, ok, s.wantSuppressed, s.wantOK)
		}
	}
}

// TestLog: a burst is one line; the next line, an interval later,
// carries the count of the lines left out.
func TestLog(t *testing.T) {
	clock := testclock.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var l Limiter // zero value: 10s
	l.Now = clock.Now
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	for range 100 {
		l.Log(context.Background(), log, slog.LevelWarn, "denied", "refused", "client", "cn:edge")
	}
	clock.Advance(10 * time.Second)
	l.Log(context.Background(), log, slog.LevelWarn, "denied", "refused", "client", "cn:edge")
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 || strings.Contains(lines[0], "suppressed") || !strings.HasSuffix(lines[1], "client=cn:edge suppressed=99") {
		t.Errorf("logged:\n%s\nwant two lines, the second ending suppressed=99", buf.String())
	}
	// A disabled level neither logs nor uses up the budget.
	l.Log(context.Background(), log, slog.LevelDebug, "debug", "quiet")
	if _, ok := l.Allow("debug"); !ok {
		t.Error("a line below the logger's level used up its kind's budget")
	}
}
