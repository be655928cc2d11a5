package accesslog

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestDiskFullLeavesWholeLines fills the file system under the log while
// records are written, then frees it: a write the disk cut short leaves
// no half line for the next record to be glued to, so every line of the
// file is one whole JSON record; the records after the space came back
// are all there; and each record logged is either in the file or counted
// as dropped, never both.
func TestDiskFullLeavesWholeLines(t *testing.T) {
	dir := proctest.Tmpfs(t, 256<<10)
	path := filepath.Join(dir, "access.log")
	l := newLogger(t, Options{Path: path, Format: JSON})
	logged := 0
	logN := func(n int, prefix string) {
		for i := range n {
			l.Log(&Record{Path: fmt.Sprintf("/%s/%d/%s", prefix, i, strings.Repeat("x", 200))})
			logged++
		}
	}
	logN(1, "first")
	// Written: the first page of the file is allocated, partly used.
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	free := proctest.Fill(t, dir, 0)
	logN(100, "full") // more than the page's room left: a write is cut short
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	free()
	logN(3, "after")
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	got := lines(t, path)
	after := 0
	for i, line := range got {
		var rec struct{ Path string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("line %d is not one JSON record (%v): %.300q", i+1, err, line)
			continue
		}
		if strings.HasPrefix(rec.Path, "/after/") {
			after++
		}
	}
	if after != 3 {
		t.Errorf("%d of the 3 records logged after the space came back are in the file", after)
	}
	dropped := int(testutil.ToFloat64(l.failed))
	if dropped == 0 || len(got)+dropped != logged {
		t.Errorf("%d records logged: %d lines in the file and %d counted as dropped; want some dropped and the sum %d", logged, len(got), dropped, logged)
	}
}

// fullWriter takes room bytes, then fails once as a full disk does
// (standard output redirected to a file on it), closing failed; later
// writes succeed.
type fullWriter struct {
	strings.Builder
	room   int
	failed chan struct{}
}

func (w *fullWriter) Write(p []byte) (int, error) {
	if w.room < 0 || len(p) <= w.room {
		w.room -= len(p)
		return w.Builder.Write(p)
	}
	n, _ := w.Builder.Write(p[:w.room])
	w.room = -1
	close(w.failed)
	return n, errors.New("no space left on device")
}

// TestCutLineEndedOnWriter: on a Writer (standard output), which cannot
// be truncated, a line a failed write cut short is ended before the next
// record, which is written whole on a line of its own.
func TestCutLineEndedOnWriter(t *testing.T) {
	w := &fullWriter{room: 100, failed: make(chan struct{})}
	l := newLogger(t, Options{Writer: w, Format: JSON})
	l.Log(&Record{Path: "/cut"})
	<-w.failed
	l.Log(&Record{Path: "/next"})
	l.Close()
	got := strings.Split(w.String(), "\n")
	if len(got) != 3 || got[2] != "" || !strings.HasPrefix(got[1], `{"time"`) || !strings.Contains(got[1], `"path":"/next"`) {
		t.Errorf("written %q; want the cut line ended, then the next record whole on its own line", w.String())
	}
	if dropped := testutil.ToFloat64(l.failed); dropped != 1 {
		t.Errorf("%v records counted as dropped, want 1", dropped)
	}
}
