package deploy

// The alert rules, read with Prometheus's own rule file parser (which
// also parses every expression and annotation template), and the Grafana
// dashboard, decoded strictly with the Grafana Foundation SDK's
// dashboard types (generated from Grafana's schema); every PromQL
// expression in either is parsed with Prometheus's parser, and every
// metric and label it names is checked against metricCatalogue.

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	grafanaprom "github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
)

const (
	alertsFile    = "monitoring/keyedge-alerts.yaml"
	dashboardFile = "monitoring/keyedge-dashboard.json"
)

// promQL parses expressions as Prometheus does by default.
var promQL = parser.NewParser(parser.Options{})

// requiredAlerts are the conditions issue 16 asks an alert for, each as
// a metric some alert's expression must use.
var requiredAlerts = []string{
	"keyedge_acme_min_days_to_expiry",                          // certificate expiry
	"keyedge_keyserver_connections",                            // key server down
	"keyedge_keyless_client_failovers_total",                   // failing over
	"keyedge_edge_route_decisions_total",                       // route "none"
	"keyedge_keystore_storage_up",                              // storage down
	"keyedge_keystore_lookups_total",                           // keystore backend errors
	"keyedge_edge_handshakes_total",                            // handshake failure ratio
	"keyedge_proxy_requests_total",                             // origin 5xx
	"keyedge_proxy_errors_total",                               // origin 502/504
	"keyedge_edge_access_log_dropped_total",                    // access-log drops
	"keyedge_keyless_client_identity_expiry_timestamp_seconds", // edge identity expiry
	"keyedge_keyserver_identity_expiry_timestamp_seconds",      // key server identity expiry
}

func TestAlertRules(t *testing.T) {
	data := readFile(t, alertsFile)
	for _, p := range checkAlertRules(t, []byte(data), metricCatalogue(t)) {
		t.Error(p)
	}
}

// checkAlertRules parses a rule file and checks each alert: a known
// severity, a summary and a description, and an expression over metrics
// and labels the binaries export.
func checkAlertRules(t *testing.T, data []byte, cat map[string]metricLabels) problems {
	var p problems
	groups, errs := rulefmt.Parse(data, false, model.UTF8Validation, promQL, slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		p.add("%s: %v", alertsFile, err)
	}
	if groups == nil {
		return p
	}
	used := map[string]bool{}
	seen := map[string]bool{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" {
				p.add("%s group %s: recording rule %s: this file holds alerts only", alertsFile, g.Name, r.Record)
				continue
			}
			where := fmt.Sprintf("%s alert %s", alertsFile, r.Alert)
			if seen[r.Alert] {
				p.add("%s: declared twice", where)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				p.add("%s: severity %q, want warning or critical", where, s)
			}
			for _, a := range []string{"summary", "description"} {
				if r.Annotations[a] == "" {
					p.add("%s: no %s annotation", where, a)
				}
			}
			names := checkExpr(&p, where, r.Expr, cat)
			for n := range names {
				used[n] = true
			}
			// Labels the annotations print must be ones the series have.
			for _, m := range templateLabel.FindAllStringSubmatch(r.Annotations["summary"]+r.Annotations["description"], -1) {
				if !anyHasLabel(names, m[1], cat) {
					p.add("%s: annotation uses $labels.%s, which none of %v has", where, m[1], keys(names))
				}
			}
		}
	}
	for _, m := range requiredAlerts {
		if !used[m] {
			p.add("%s: no alert uses %s", alertsFile, m)
		}
	}
	return p
}

var templateLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// checkExpr parses a PromQL expression and checks that every metric it
// selects is exported (or synthetic, or pending) and every label it
// matches or groups by is one of those metrics' labels or a target
// label. It returns the metric names used.
func checkExpr(p *problems, where, expr string, cat map[string]metricLabels) map[string]bool {
	e, err := promQL.ParseExpr(expr)
	if err != nil {
		p.add("%s: %q: %v", where, expr, err)
		return nil
	}
	names := map[string]bool{}
	var grouping [][]string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.VectorSelector:
			if n.Name == "" {
				p.add("%s: selector %s without a metric name", where, n)
				return nil
			}
			labels, ok := lookupMetric(cat, n.Name)
			if !ok {
				p.add("%s: metric %s is not exported by keyedge or the key server", where, n.Name)
				return nil
			}
			names[n.Name] = true
			for _, m := range n.LabelMatchers {
				if m.Name != model.MetricNameLabel && !labels[m.Name] && !slices.Contains(targetLabels, m.Name) {
					p.add("%s: %s has no label %q (has %v, plus %v)", where, n.Name, m.Name, keys(labels), targetLabels)
				}
			}
		case *parser.AggregateExpr:
			grouping = append(grouping, n.Grouping)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				grouping = append(grouping, n.VectorMatching.MatchingLabels, n.VectorMatching.Include)
			}
		}
		return nil
	})
	for _, g := range grouping {
		for _, l := range g {
			if !anyHasLabel(names, l, cat) {
				p.add("%s: groups or matches by %q, which none of %v has", where, l, keys(names))
			}
		}
	}
	return names
}

func lookupMetric(cat map[string]metricLabels, name string) (metricLabels, bool) {
	for _, m := range []map[string]metricLabels{cat, synthetic} {
		if l, ok := m[name]; ok {
			return l, true
		}
	}
	return nil, false
}

// anyHasLabel reports whether label is a target label or a label of one
// of the named metrics.
func anyHasLabel(names map[string]bool, label string, cat map[string]metricLabels) bool {
	if slices.Contains(targetLabels, label) || label == "le" {
		return true
	}
	for n := range names {
		if l, _ := lookupMetric(cat, n); l[label] {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// TestAlertRuleChecksCatch breaks the rule file one way at a time.
func TestAlertRuleChecksCatch(t *testing.T) {
	cat := metricCatalogue(t)
	src := readFile(t, alertsFile)
	cases := []struct{ name, old, new, want string }{
		{"unknown metric", "keyedge_keystore_storage_up == 0", "keyedge_keystore_storage_ok == 0", "not exported"},
		{"unknown label", `keyedge_proxy_requests_total{code="5xx"}`, `keyedge_proxy_requests_total{status="5xx"}`, `no label "status"`},
		{"bad grouping", "sum by (job, instance, file) (increase(keyedge_keystore_load_errors_total", "sum by (job, instance, path) (increase(keyedge_keystore_load_errors_total", `"path"`},
		{"syntax", "keyedge_acme_min_days_to_expiry < 14", "keyedge_acme_min_days_to_expiry < < 14", "parse error"},
		{"bad duration", "for: 1h", "for: 1 hour", "1 hour"},
		{"template", `{{ $labels.instance }} expires in {{ $value | humanizeDuration }}"`, `{{ $labels.instance }} expires in {{ $value | humanizeDurations }}"`, "humanizeDurations"},
		{"annotation label", "found stored {{ $labels.file }} files", "found stored {{ $labels.kind }} files", "$labels.kind"},
		{"severity", "severity: critical", "severity: page", "severity"},
		{"unknown field", "    rules:\n      # certmagic", "    rule:\n      # certmagic", "rule"},
		{"required alert", "keyedge_edge_route_decisions_total{route=\"none\"}", "keyedge_edge_handshakes_total{result=\"none\"}", "no alert uses keyedge_edge_route_decisions_total"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{alertsFile: src}
			replaceIn(t, files, alertsFile, tc.old, tc.new)
			wantProblem(t, checkAlertRules(t, []byte(files[alertsFile]), cat), tc.want)
		})
	}
}

func TestDashboard(t *testing.T) {
	for _, p := range checkDashboard(t, []byte(readFile(t, dashboardFile)), metricCatalogue(t)) {
		t.Error(p)
	}
}

// grafanaVars are the dashboard's variables and Grafana's built-ins the
// expressions use, with a value to parse them with.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$instance", ".*")

// checkDashboard decodes the dashboard strictly (unknown fields, wrong
// types and missing required fields fail) and checks every query:
// Prometheus queries only, through the datasource variable, over known
// metrics and labels; and that panels do not overlap.
func checkDashboard(t *testing.T, data []byte, cat map[string]metricLabels) problems {
	var p problems
	plugins.RegisterDefaultPlugins()
	//lint:ignore SA1019 the file is Grafana's classic (v1) dashboard JSON, which every Grafana imports; dashboardv2 is another schema
	var d dashboard.Dashboard
	if err := sdkErr(d.UnmarshalJSONStrict(data)); err != nil {
		p.add("%s: %v", dashboardFile, err)
		return p
	}
	if err := sdkErr(d.Validate()); err != nil {
		p.add("%s: %v", dashboardFile, err)
	}
	if d.Uid == nil || *d.Uid == "" {
		p.add("%s: no uid: imports would create a new dashboard each time", dashboardFile)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		if v.Type == "query" && (v.Datasource == nil || ptrOr(v.Datasource.Uid, "") != "${datasource}") {
			p.add("%s: variable %s: datasource must be ${datasource}", dashboardFile, v.Name)
		}
		if v.Query != nil && v.Query.Map != nil {
			if q, ok := v.Query.Map["query"].(string); ok {
				lv := labelValues.FindStringSubmatch(q)
				if lv == nil {
					p.add("%s: variable %s: query %q: want label_values(metric, label)", dashboardFile, v.Name, q)
				} else if l, ok := lookupMetric(cat, lv[1]); !ok || !l[lv[2]] && !slices.Contains(targetLabels, lv[2]) {
					p.add("%s: variable %s: %s has no label %s", dashboardFile, v.Name, lv[1], lv[2])
				}
			}
		}
	}
	if !vars["datasource"] {
		p.add("%s: no datasource variable: the dashboard would be bound to one Prometheus", dashboardFile)
	}
	// The SDK (v0.0.22) drops every panel that decodes without error
	// from Dashboard.Panels (its strict decoders return an empty
	// BuildErrors as a non-nil error), so the panels are decoded here.
	top, err := decodePanels(data)
	if err != nil {
		p.add("%s: %v", dashboardFile, err)
		return p
	}
	d.Panels = top
	var panels []dashboard.Panel
	for _, pr := range d.Panels {
		switch {
		case pr.Panel != nil:
			panels = append(panels, *pr.Panel)
		case pr.RowPanel != nil:
			panels = append(panels, pr.RowPanel.Panels...)
		}
	}
	if len(panels) == 0 {
		p.add("%s: no panels", dashboardFile)
	}
	type cell struct{ x, y uint32 }
	taken := map[cell]string{}
	for _, pr := range d.Panels {
		var title string
		var g *dashboard.GridPos
		switch {
		case pr.Panel != nil:
			title, g = ptrOr(pr.Panel.Title, ""), pr.Panel.GridPos
		case pr.RowPanel != nil:
			title, g = ptrOr(pr.RowPanel.Title, ""), pr.RowPanel.GridPos
		}
		if g == nil {
			p.add("%s: panel %q: no gridPos", dashboardFile, title)
			continue
		}
		if g.X+g.W > 24 {
			p.add("%s: panel %q: wider than the 24-column grid", dashboardFile, title)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := taken[cell{x, y}]; ok {
					p.add("%s: panel %q overlaps %q", dashboardFile, title, other)
					goto next
				}
				taken[cell{x, y}] = title
			}
		}
	next:
	}
	for _, panel := range panels {
		where := fmt.Sprintf("%s panel %q", dashboardFile, ptrOr(panel.Title, ""))
		if len(panel.Targets) == 0 {
			p.add("%s: no queries", where)
		}
		for _, target := range panel.Targets {
			q := target.(*grafanaprom.Dataquery)
			if q.Datasource == nil || ptrOr(q.Datasource.Uid, "") != "${datasource}" {
				p.add("%s: query %s: datasource must be ${datasource}", where, ptrOr(q.RefId, ""))
			}
			if strings.Contains(grafanaVars.Replace(q.Expr), "$") {
				p.add("%s: %q: uses a variable the dashboard does not define", where, q.Expr)
				continue
			}
			checkExpr(&p, where, grafanaVars.Replace(q.Expr), cat)
		}
	}
	return p
}

// decodePanels decodes a dashboard's panels strictly, rows by the row
// type and the rest as panels, as dashboard.PanelOrRowPanel does, and
// the panels' Prometheus queries (the SDK drops those too).
func decodePanels(data []byte) ([]dashboard.PanelOrRowPanel, error) {
	var d struct {
		Panels []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		return nil, err
	}
	var out []dashboard.PanelOrRowPanel
	for i, raw := range d.Panels {
		var kind struct {
			Type   string            `json:"type"`
			Panels []json.RawMessage `json:"panels"`
		}
		if err := json.Unmarshal(raw, &kind); err != nil {
			return nil, fmt.Errorf("panels[%d]: %w", i, err)
		}
		var pr dashboard.PanelOrRowPanel
		if kind.Type != "row" {
			panel, err := decodePanel(raw)
			if err != nil {
				return nil, fmt.Errorf("panels[%d]: %w", i, err)
			}
			out = append(out, dashboard.PanelOrRowPanel{Panel: panel})
			continue
		}
		pr.RowPanel = &dashboard.RowPanel{}
		if err := sdkErr(pr.RowPanel.UnmarshalJSONStrict(raw)); err != nil {
			return nil, fmt.Errorf("panels[%d]: %w", i, err)
		}
		pr.RowPanel.Panels = nil
		for j, raw := range kind.Panels {
			panel, err := decodePanel(raw)
			if err != nil {
				return nil, fmt.Errorf("panels[%d].panels[%d]: %w", i, j, err)
			}
			pr.RowPanel.Panels = append(pr.RowPanel.Panels, *panel)
		}
		out = append(out, pr)
	}
	return out, nil
}

// decodePanel decodes one panel strictly, with its targets as
// Prometheus queries.
func decodePanel(raw json.RawMessage) (*dashboard.Panel, error) {
	panel := &dashboard.Panel{}
	if err := sdkErr(panel.UnmarshalJSONStrict(raw)); err != nil {
		return nil, err
	}
	var t struct {
		Targets []json.RawMessage `json:"targets"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, err
	}
	panel.Targets = nil
	for k, raw := range t.Targets {
		q := &grafanaprom.Dataquery{}
		if err := sdkErr(q.UnmarshalJSONStrict(raw)); err != nil {
			return nil, fmt.Errorf("targets[%d]: %w", k, err)
		}
		panel.Targets = append(panel.Targets, q)
	}
	return panel, nil
}

// sdkErr is err, or nil for the empty cog.BuildErrors the SDK returns
// (as a non-nil error) when there is nothing wrong.
func sdkErr(err error) error {
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

var labelValues = regexp.MustCompile(`^label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\)$`)

// TestDashboardChecksCatch breaks the dashboard one way at a time.
func TestDashboardChecksCatch(t *testing.T) {
	cat := metricCatalogue(t)
	src := readFile(t, dashboardFile)
	cases := []struct{ name, old, new, want string }{
		{"not JSON", `"panels": [`, `"panels": [,`, "invalid character"},
		{"unknown field", `"graphTooltip": 1,`, `"graphTooltip": 1, "graphToolTip": 1,`, "graphToolTip"},
		{"unknown metric", "keyedge_keystore_storage_up{", "keyedge_keystore_storage_upp{", "not exported"},
		{"unknown label", `sum by (reason) (rate(keyedge_proxy_errors_total`, `sum by (cause) (rate(keyedge_proxy_errors_total`, `"cause"`},
		{"bad promql", `histogram_quantile(0.5, sum by (le)`, `histogram_quantile(0.5, sum by (le`, "parse error"},
		{"undefined variable", `instance=~\"$instance\"`, `instance=~\"$node\"`, "does not define"},
		{"fixed datasource", `"uid": "${datasource}"`, `"uid": "prometheus"`, "datasource must be"},
		{"variable label", "label_values(keyedge_edge_open_connections, instance)", "label_values(keyedge_edge_open_connections, node)", "no label node"},
		{"overlap", `"x": 12,`, `"x": 6,`, "overlaps"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			files := map[string]string{dashboardFile: src}
			replaceIn(t, files, dashboardFile, tc.old, tc.new)
			wantProblem(t, checkDashboard(t, []byte(files[dashboardFile]), cat), tc.want)
		})
	}
}

// TestMonitoringFilesListed keeps doc.go's list of artefacts honest.
func TestMonitoringFilesListed(t *testing.T) {
	doc := readFile(t, "doc.go")
	entries, err := os.ReadDir("monitoring")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !strings.Contains(doc, filepath.Base(e.Name())) {
			t.Errorf("doc.go does not mention monitoring/%s", e.Name())
		}
	}
}
