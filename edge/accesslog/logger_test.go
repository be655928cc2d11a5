package accesslog

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// lines reads the lines of the file at path.
func lines(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
}

func newLogger(t *testing.T, opts Options) *Logger {
	t.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	l, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestSampling: a fraction of the successful requests is logged, by the
// draws of Rand; every failure is.
func TestSampling(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	draws := []float64{0.1, 0.7, 0.29, 0.3, 0.99}
	l := newLogger(t, Options{Path: path, Sample: 0.3, Rand: func() float64 {
		d := draws[0]
		draws = draws[1:]
		return d
	}})
	for i, status := range []int{200, 200, 502, 200, 404, 200, 500} {
		r := Record{Status: status, Path: "/" + string(rune('a'+i))}
		if status == 502 {
			r.Error = "unreachable"
		}
		l.Log(&r)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	var paths []string
	for _, line := range lines(t, path) {
		_, rest, _ := strings.Cut(line, `"path":"`)
		p, _, _ := strings.Cut(rest, `"`)
		paths = append(paths, p)
	}
	// Draws: a 0.1 in, b 0.7 out, d 0.29 in, e 0.3 out, f 0.99 out;
	// c (an error) and g (a 5xx) without a draw.
	if got := strings.Join(paths, " "); got != "/a /c /d /g" {
		t.Errorf("logged %s, want /a /c /d /g", got)
	}
}

// gateWriter blocks every Write until released, as a stuck disk would,
// and says when the first Write has begun.
type gateWriter struct {
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.once.Do(func() { close(w.entered) })
	<-w.release
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

// TestFullBufferDrops: with the writer stuck, Log returns at once and
// records beyond the buffer are dropped and counted; the ones buffered
// are written once the writer moves again.
func TestFullBufferDrops(t *testing.T) {
	w := &gateWriter{entered: make(chan struct{}), release: make(chan struct{})}
	l := newLogger(t, Options{Writer: w, Buffer: 2})
	l.Log(&Record{Path: "/stuck"})
	<-w.entered // the writer holds /stuck and is blocked
	for _, p := range []string{"/q1", "/q2", "/lost1", "/lost2", "/lost3"} {
		l.Log(&Record{Path: p})
	}
	if got := testutil.ToFloat64(l.full); got != 3 {
		t.Errorf("dropped %v records for a full buffer, want 3", got)
	}
	close(w.release)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got := w.buf.String()
	for _, p := range []string{"/stuck", "/q1", "/q2"} {
		if !strings.Contains(got, `"path":"`+p+`"`) {
			t.Errorf("%s not written: %s", p, got)
		}
	}
	if strings.Contains(got, "/lost") {
		t.Errorf("a dropped record was written: %s", got)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestWriteErrorsCounted(t *testing.T) {
	l := newLogger(t, Options{Writer: failingWriter{}})
	l.Log(&Record{Path: "/a"})
	l.Close()
	if got := testutil.ToFloat64(l.failed); got != 1 {
		t.Errorf("counted %v records lost to write errors, want 1", got)
	}
}

// TestReopen is logrotate's sequence: rename the file, Reopen, and the
// next records go to a new file at the path.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	l := newLogger(t, Options{Path: path, Format: Text})
	l.Log(&Record{Path: "/before"})
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(&Record{Path: "/after"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, current := lines(t, path+".1"), lines(t, path)
	if len(old) != 1 || !strings.Contains(old[0], "path=/before") {
		t.Errorf("rotated file: %q", old)
	}
	if len(current) != 1 || !strings.Contains(current[0], "path=/after") {
		t.Errorf("new file: %q", current)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new file: %v, mode %v, want 0640", err, fi.Mode())
	}
	if err := l.Reopen(); !errors.Is(err, ErrClosed) {
		t.Errorf("Reopen after Close: %v, want ErrClosed", err)
	}
}

// TestReopenFailureKeepsWriting: a path that cannot be opened any more
// (its directory gone) leaves the Logger writing to the file it has.
func TestReopenFailureKeepsWriting(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "logs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "access.log")
	l := newLogger(t, Options{Path: path})
	if err := os.Rename(dir, dir+".old"); err != nil {
		t.Fatal(err)
	}
	if err := l.Reopen(); err == nil {
		t.Fatal("Reopen succeeded without the directory")
	}
	l.Log(&Record{Path: "/still"})
	l.Close()
	if got := lines(t, filepath.Join(dir+".old", "access.log")); len(got) != 1 || !strings.Contains(got[0], "/still") {
		t.Errorf("the open file got %q", got)
	}
}

// TestReconfigure: a reload moves the log to another file and format;
// what was logged before goes to the old file in the old format, and a
// bad new setting changes nothing.
func TestReconfigure(t *testing.T) {
	dir := t.TempDir()
	first, second := filepath.Join(dir, "a.log"), filepath.Join(dir, "b.log")
	l := newLogger(t, Options{Path: first, Format: Text})
	l.Log(&Record{Path: "/before"})
	for name, bad := range map[string]Options{
		"bad format":  {Path: second, Format: "combined"},
		"bad sample":  {Path: second, Sample: 2},
		"missing dir": {Path: filepath.Join(dir, "nope", "b.log")},
	} {
		if err := l.Reconfigure(bad); err == nil {
			t.Errorf("%s: Reconfigure succeeded", name)
		}
	}
	l.Log(&Record{Path: "/still-first"})
	if err := l.Reconfigure(Options{Path: second, Format: JSON}); err != nil {
		t.Fatal(err)
	}
	l.Log(&Record{Path: "/after"})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	old, current := lines(t, first), lines(t, second)
	if len(old) != 2 || !strings.Contains(old[0], "path=/before") || !strings.Contains(old[1], "path=/still-first") {
		t.Errorf("first file: %q", old)
	}
	if len(current) != 1 || !strings.Contains(current[0], `"path":"/after"`) {
		t.Errorf("second file: %q", current)
	}
	if _, err := os.Stat(filepath.Join(dir, "nope")); !os.IsNotExist(err) {
		t.Errorf("a refused path left something behind: %v", err)
	}
}

func TestNewErrors(t *testing.T) {
	for name, opts := range map[string]Options{
		"no path":         {},
		"bad format":      {Path: Stdout, Format: "combined"},
		"sample above 1":  {Path: Stdout, Sample: 1.5},
		"negative buffer": {Path: Stdout, Buffer: -1},
		"missing dir":     {Path: filepath.Join(t.TempDir(), "nope", "access.log")},
	} {
		if l, err := New(opts); err == nil {
			l.Close()
			t.Errorf("%s: New succeeded", name)
		}
	}
}
