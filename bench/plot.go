package bench

import (
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WritePlot draws results to path, an SVG or PNG file by its extension:
// on top the median rate and the median rate per server CPU-second of
// each scenario and label (grouped as Summarize groups them), below the
// median request latency percentiles p50, p90, p99 and p99.9 of each on
// a log scale.
func WritePlot(path string, results []*Result) error {
	if len(results) == 0 {
		return fmt.Errorf("bench: plot: no results")
	}
	var newCanvas func(w, h vg.Length) (vg.CanvasWriterTo, vg.CanvasSizer)
	switch strings.ToLower(filepath.Ext(path)) {
	case ".svg":
		newCanvas = func(w, h vg.Length) (vg.CanvasWriterTo, vg.CanvasSizer) {
			c := vgsvg.New(w, h)
			return c, c
		}
	case ".png":
		newCanvas = func(w, h vg.Length) (vg.CanvasWriterTo, vg.CanvasSizer) {
			c := vgimg.New(w, h)
			return vgimg.PngCanvas{Canvas: c}, c
		}
	default:
		return fmt.Errorf("bench: plot %s: want a .svg or .png file", path)
	}
	groups := groupRuns(results)
	rates, err := ratePlot(groups)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	latency, err := latencyPlot(groups)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	height := vg.Length(len(groups))*0.45*vg.Inch + 6*vg.Inch
	out, c := newCanvas(10*vg.Inch, height)
	dc := draw.New(c)
	// The rates get the room their bars need, the latencies 4 inches.
	top := dc
	top.Min.Y = dc.Min.Y + 4*vg.Inch
	bottom := dc
	bottom.Max.Y = dc.Min.Y + 4*vg.Inch
	rates.Draw(top)
	latency.Draw(bottom)
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("bench: plot: %w", err)
	}
	if _, err := out.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("bench: plot %s: %w", path, err)
	}
	return f.Close()
}

func groupName(g *group) string {
	if g.scenario == "" {
		return g.label
	}
	return g.scenario + ": " + g.label
}

// ratePlot is horizontal bars: per group, the median rate and the median
// per server CPU-second (0 without a server PID).
func ratePlot(groups []*group) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "rate: median over runs (handshake modes: handshakes; keyless: signatures)"
	p.X.Label.Text = "per second"
	var names []string
	var rateVals, cpuVals plotter.Values
	// Bars are drawn bottom up: reverse, so the first group is on top.
	for i := len(groups) - 1; i >= 0; i-- {
		g := groups[i]
		names = append(names, groupName(g))
		rateVals = append(rateVals, g.figure(rate).med)
		cpuVals = append(cpuVals, g.figure(perCPU).med)
	}
	w := vg.Points(9)
	for i, s := range []struct {
		name string
		vals plotter.Values
	}{{"per second", rateVals}, {"per server CPU-second", cpuVals}} {
		b, err := plotter.NewBarChart(s.vals, w)
		if err != nil {
			return nil, err
		}
		b.Horizontal = true
		b.Color = plotutil.Color(i)
		b.LineStyle.Width = 0
		b.Offset = w/2 - vg.Length(i)*w
		p.Add(b)
		p.Legend.Add(s.name, b)
	}
	p.Legend.Top = true
	p.NominalY(names...)
	p.Add(plotter.NewGrid())
	p.X.Max *= 1.15 // room for the legend
	return p, nil
}

// latencyPlot is a line per group through its median p50, p90, p99 and
// p99.9 request latencies, on a log scale.
func latencyPlot(groups []*group) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = "request latency percentiles, medians over runs"
	p.Y.Label.Text = "ms (log scale)"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	p.NominalX("p50", "p90", "p99", "p99.9")
	percentiles := []func(*Result) float64{
		func(r *Result) float64 { return r.Latency.P50 },
		func(r *Result) float64 { return r.Latency.P90 },
		func(r *Result) float64 { return r.Latency.P99 },
		func(r *Result) float64 { return r.Latency.P999 },
	}
	for i, g := range groups {
		pts := make(plotter.XYs, len(percentiles))
		for j, f := range percentiles {
			// A log scale cannot show 0 (a run with no successes).
			pts[j] = plotter.XY{X: float64(j), Y: max(g.figure(f).med, 0.001)}
		}
		l, s, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, err
		}
		l.Color, s.Color = plotutil.Color(i), plotutil.Color(i)
		l.Dashes = plotutil.Dashes(i / len(plotutil.DefaultColors))
		s.Shape = plotutil.Shape(i)
		p.Add(l, s)
		p.Legend.Add(groupName(g), l, s)
	}
	p.Legend.Top = true
	p.Legend.Left = true
	p.Add(plotter.NewGrid())
	// Raise the top of the log axis so that the legend, about a line
	// per group of the plot's 4 inches, sits above the data.
	legend := min(0.6, float64(len(groups)+1)*0.2/4)
	decades := math.Log10(p.Y.Max / p.Y.Min)
	p.Y.Max = p.Y.Min * math.Pow(10, decades/(1-legend))
	return p, nil
}
