package accesslog

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/keyedge/keyedge/internal/ratelog"
	"github.com/prometheus/client_golang/prometheus"
)

// Format is how a record is written.
type Format string

const (
	JSON Format = "json" // one JSON object per line
	Text Format = "text" // key=value pairs, values quoted as Go strings when needed
)

// Stdout as Options.Path writes to the process's standard output.
const Stdout = "stdout"

// Options configures a Logger. Defaults are in brackets.
type Options struct {
	// Path is the file records are appended to, created with mode 0640
	// when missing, or Stdout. Required unless Writer is set.
	Path string

	// Writer, when set, receives the lines instead of Path; Reopen does
	// nothing then.
	Writer io.Writer

	Format Format // [JSON]

	// Sample is the fraction of requests logged, in (0, 1]; a request
	// with an error or a 5xx status is logged whatever it is. [1]
	Sample float64

	// Buffer is how many records may wait for the writer; past it,
	// records are dropped and counted. [4096]
	Buffer int

	// Rand draws the sampling decisions, uniform in [0, 1).
	// [math/rand/v2.Float64]
	Rand func() float64

	// Logger gets write and reopen failures, at most one line every
	// 10 s. [slog.Default()]
	Logger *slog.Logger
}

// ErrClosed is returned by Reopen after Close.
var ErrClosed = errors.New("accesslog: logger closed")

// Logger writes access log records asynchronously. It is safe for
// concurrent use.
type Logger struct {
	// Static after New.
	rand    func() float64
	log     *slog.Logger
	dropped *prometheus.CounterVec // reason: buffer_full, write_error
	full    prometheus.Counter     // dropped's buffer_full child
	failed  prometheus.Counter     // dropped's write_error child

	mu   sync.Mutex                 // guards path, and orders Reopen and Reconfigure
	path string                     // "" when not a file: Reopen does nothing
	form atomic.Pointer[formatting] // set by New and Reconfigure

	queue   chan Record
	wake    chan struct{} // 1-buffered: the queue is half full
	reopen  chan reopenRequest
	done    chan struct{} // closed by Close
	stopped chan struct{} // closed when run has returned
	closed  atomic.Bool
	logs    ratelog.Limiter

	// Owned by run.
	out  io.Writer
	file *os.File // out, when it is a file Logger opened
	buf  []byte   // the batch being formatted
	recs int      // records in buf
	// cut is set when a failed write to standard output or a Writer
	// ended inside a line (a full disk takes what fits): the next write
	// ends that line first, so that the next record is not glued to the
	// fragment.
	cut bool
}

// formatting is what Reconfigure can change without a new Logger.
type formatting struct {
	json   bool
	sample float64
}

type reopenRequest struct {
	out  io.Writer
	file *os.File // out, when it is a file the Logger opened
	done chan struct{}
}

// The writer wakes every flushInterval, or when the queue is half full,
// and writes what is queued in batches of up to batchSize bytes, as
// nginx's access_log buffer= and flush= do. Waking it for every record
// would cost more CPU than the record itself (a thread wake-up each),
// and a write per record a system call each.
const (
	batchSize     = 64 << 10
	flushInterval = 100 * time.Millisecond
)

// New opens the log and starts its writer. Close it to write what is
// queued and release the file.
func New(opts Options) (*Logger, error) {
	form, err := opts.formatting()
	if err != nil {
		return nil, err
	}
	if opts.Buffer < 0 {
		return nil, fmt.Errorf("accesslog: buffer %d is negative", opts.Buffer)
	}
	l := &Logger{
		rand:    opts.Rand,
		log:     opts.Logger,
		queue:   make(chan Record, cmp.Or(opts.Buffer, 4096)),
		wake:    make(chan struct{}, 1),
		reopen:  make(chan reopenRequest),
		done:    make(chan struct{}),
		stopped: make(chan struct{}),
		out:     opts.Writer,
		buf:     make([]byte, 0, batchSize+4<<10),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "keyedge_edge_access_log_dropped_total",
			Help: "Access log records lost, by reason: buffer_full (the writer fell behind: a slow disk), write_error (the write failed).",
		}, []string{"reason"}),
	}
	l.form.Store(form)
	l.full, l.failed = l.dropped.WithLabelValues("buffer_full"), l.dropped.WithLabelValues("write_error")
	if l.rand == nil {
		l.rand = rand.Float64
	}
	if l.log == nil {
		l.log = slog.Default()
	}
	if l.out == nil {
		if l.out, l.file, err = open(opts.Path); err != nil {
			return nil, err
		}
		l.path = opts.Path
	}
	go l.run()
	return l, nil
}

// formatting checks opts' format and sample rate.
func (opts *Options) formatting() (*formatting, error) {
	if opts.Sample < 0 || opts.Sample > 1 {
		return nil, fmt.Errorf("accesslog: sample rate %v is not between 0 and 1", opts.Sample)
	}
	format := cmp.Or(opts.Format, JSON)
	if format != JSON && format != Text {
		return nil, fmt.Errorf("accesslog: format %q is not json or text", opts.Format)
	}
	return &formatting{json: format == JSON, sample: cmp.Or(opts.Sample, 1)}, nil
}

// open opens path for appending, or returns standard output for Stdout
// (and a nil file).
func open(path string) (io.Writer, *os.File, error) {
	switch path {
	case Stdout:
		return os.Stdout, nil, nil
	case "":
		return nil, nil, errors.New("accesslog: no path")
	}
	f, err := openFile(path)
	if err != nil {
		return nil, nil, err
	}
	return f, f, nil
}

func openFile(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return nil, fmt.Errorf("accesslog: failed to open: %w", err)
	}
	return f, nil
}

// Collectors returns the Logger's Prometheus collectors for the caller to
// register: keyedge_edge_access_log_dropped_total{reason}.
func (l *Logger) Collectors() []prometheus.Collector {
	return []prometheus.Collector{l.dropped}
}

// Log queues a copy of r for writing, unless sampling leaves it out. It
// never blocks: when the queue is full the record is dropped and
// counted. The caller may reuse r when Log returns.
func (l *Logger) Log(r *Record) {
	if sample := l.form.Load().sample; sample < 1 && !r.always() && l.rand() >= sample {
		return
	}
	if l.closed.Load() {
		return
	}
	select {
	case l.queue <- *r:
		if len(l.queue) >= cap(l.queue)/2 {
			select {
			case l.wake <- struct{}{}:
			default:
			}
		}
	default:
		l.full.Inc()
	}
}

// Reopen opens the file again by its path and writes to the new file
// from then on: after logrotate has renamed the old one, records logged
// before Reopen go to the old file, those logged after it returns to the
// new one. If the file cannot be opened, the Logger keeps writing to the old
// one and Reopen returns the error. With Stdout or a Writer it does
// nothing.
func (l *Logger) Reopen() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path == "" || l.path == Stdout {
		return nil
	}
	return l.switchTo(l.path)
}

// Reconfigure applies opts' Path, Format and Sample to the Logger, for a
// configuration reload: records logged before it returns are written as
// before, to the file before. Buffer, Writer, Rand and Logger are New's
// only. If the new file cannot be opened, nothing changes.
func (l *Logger) Reconfigure(opts Options) error {
	form, err := opts.formatting()
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.path == "" {
		return errors.New("accesslog: a Logger writing to a Writer cannot be reconfigured")
	}
	if opts.Path != l.path {
		if err := l.switchTo(opts.Path); err != nil {
			return err
		}
		l.path = opts.Path
	}
	l.form.Store(form)
	return nil
}

// switchTo opens path and has the writer write to it from now on, after
// writing what is queued to the old file. l.mu is held.
func (l *Logger) switchTo(path string) error {
	out, f, err := open(path)
	if err != nil {
		return err
	}
	req := reopenRequest{out: out, file: f, done: make(chan struct{})}
	select {
	case l.reopen <- req:
		<-req.done
		return nil
	case <-l.stopped:
		if f != nil {
			f.Close()
		}
		return ErrClosed
	}
}

// Close writes the records queued, stops the writer and closes the file.
// Records logged after Close are discarded.
func (l *Logger) Close() error {
	if l.closed.Swap(true) {
		<-l.stopped
		return nil
	}
	close(l.done)
	<-l.stopped
	if l.file != nil {
		if err := l.file.Close(); err != nil {
			return fmt.Errorf("accesslog: %w", err)
		}
	}
	return nil
}

// run is the writer goroutine: every flushInterval, or when the queue is
// half full, it writes what is queued.
func (l *Logger) run() {
	defer close(l.stopped)
	tick := time.NewTicker(flushInterval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
		case <-l.wake:
		case req := <-l.reopen:
			l.drain()
			if l.file != nil {
				l.file.Close()
			}
			l.out, l.file = req.out, req.file
			close(req.done)
			continue
		case <-l.done:
			l.drain()
			return
		}
		l.drain()
	}
}

// drain writes the records queued, in batches: at most a queue's worth,
// so that records arriving as fast as they are written cannot hold off
// a Reopen or Close.
func (l *Logger) drain() {
	for n := cap(l.queue); n > 0 && len(l.queue) > 0; n-- {
		r := <-l.queue
		l.buf = appendRecord(l.buf, &r, l.form.Load().json)
		l.recs++
		if len(l.buf) >= batchSize {
			l.flush()
		}
	}
	l.flush()
}

// flush writes the batch. The records a failed write did not write
// whole are counted as dropped and not retried; the fragment of a line
// it cut short is removed from the file (or, on standard output or a
// Writer, ended), so that the next record starts a line of its own.
func (l *Logger) flush() {
	if len(l.buf) == 0 {
		return
	}
	var err error
	if l.cut {
		if _, err = l.out.Write(newline); err == nil {
			l.cut = false
		}
	}
	n := 0
	if err == nil {
		n, err = l.out.Write(l.buf)
	}
	if err != nil {
		whole := bytes.LastIndexByte(l.buf[:n], '\n') + 1
		if fragment := n - whole; fragment > 0 && !l.unwrite(fragment) {
			l.cut = true
		}
		dropped := l.recs - bytes.Count(l.buf[:whole], newline)
		l.failed.Add(float64(dropped))
		l.logs.Log(context.Background(), l.log, slog.LevelError, "write", "accesslog: write failed; records dropped (logged at most every 10s)", "records", dropped, "err", err)
	}
	l.buf, l.recs = l.buf[:0], 0
}

var newline = []byte{'\n'}

// unwrite removes the last n bytes of the file, the fragment of a line
// a full disk cut short, and reports whether it could.
func (l *Logger) unwrite(n int) bool {
	if l.file == nil {
		return false
	}
	fi, err := l.file.Stat()
	return err == nil && fi.Size() >= int64(n) && l.file.Truncate(fi.Size()-int64(n)) == nil
}
