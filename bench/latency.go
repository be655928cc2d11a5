package bench

import (
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Histogram records durations from 1 µs to histogramMax with three
// significant digits (an HDR histogram: fixed memory, about 100 KiB,
// however many values). Longer durations are recorded as histogramMax.
// A Histogram is not safe for concurrent use: each worker keeps its own
// and they are merged at the end.
type Histogram struct {
	h *hdrhistogram.Histogram
}

// histogramMax is the largest duration a Histogram tells apart.
const histogramMax = time.Minute

// NewHistogram returns an empty Histogram.
func NewHistogram() *Histogram {
	return &Histogram{h: hdrhistogram.New(1, histogramMax.Microseconds(), 3)}
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	us := min(max(d.Microseconds(), 1), histogramMax.Microseconds())
	h.h.RecordValue(us) // in range by construction: never fails
}

// Merge adds every value recorded in o.
func (h *Histogram) Merge(o *Histogram) { h.h.Merge(o.h) }

// Count is the number of values recorded.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Percentiles summarises a Histogram, in milliseconds.
type Percentiles struct {
	Count int64   `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

// Summary returns the histogram's percentiles; all zero when empty.
func (h *Histogram) Summary() Percentiles {
	if h.h.TotalCount() == 0 {
		return Percentiles{}
	}
	ms := func(us int64) float64 { return float64(us) / 1e3 }
	return Percentiles{
		Count: h.h.TotalCount(),
		Min:   ms(h.h.Min()),
		Mean:  h.h.Mean() / 1e3,
		P50:   ms(h.h.ValueAtQuantile(50)),
		P90:   ms(h.h.ValueAtQuantile(90)),
		P99:   ms(h.h.ValueAtQuantile(99)),
		P999:  ms(h.h.ValueAtQuantile(99.9)),
		Max:   ms(h.h.Max()),
	}
}
