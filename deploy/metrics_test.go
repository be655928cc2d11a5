package deploy

// The metrics keyedge exports, read from the product's source: every
// prometheus.New{Counter,Gauge,Histogram,Summary}[Vec|Func] call with a
// literal Opts, its name, variable labels and constant labels. The
// alert rules and the dashboard are checked against this catalogue, and
// TestMetricCatalogueMatchesProcesses checks the catalogue against the
// /metrics of a real keyedge and key server.

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// metricLabels are the label names of one exported series name.
type metricLabels map[string]bool

// targetLabels are the labels Prometheus adds to every scraped series.
var targetLabels = []string{"job", "instance"}

// synthetic are series Prometheus itself writes for every target.
var synthetic = map[string]metricLabels{
	"up": {},
}

// metricCatalogue returns the series names the product's packages
// export (histograms as their _bucket, _sum and _count series), each
// with its label names. Test files, bench/ and deploy/ are skipped.
func metricCatalogue(t *testing.T) map[string]metricLabels {
	t.Helper()
	out := map[string]metricLabels{}
	fset := token.NewFileSet()
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if d.IsDir() {
			if rel == "deploy" || rel == "bench" || strings.HasPrefix(d.Name(), ".") && rel != "." || d.Name() == "testdata" {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok || !isSelector(call.Fun, "prometheus", sel.Sel.Name) || !strings.HasPrefix(sel.Sel.Name, "New") || len(call.Args) == 0 {
				return true
			}
			name, labels, ok := metricOpts(call.Args[0])
			if !ok {
				return true
			}
			if strings.HasSuffix(sel.Sel.Name, "Vec") && len(call.Args) > 1 {
				if lit, ok := call.Args[1].(*ast.CompositeLit); ok {
					for _, e := range lit.Elts {
						if s, ok := stringLit(e); ok {
							labels[s] = true
						}
					}
				}
			}
			switch {
			case strings.HasPrefix(sel.Sel.Name, "NewHistogram"):
				withLE := metricLabels{"le": true}
				for l := range labels {
					withLE[l] = true
				}
				out[name+"_bucket"] = withLE
				out[name+"_sum"], out[name+"_count"] = labels, labels
			case strings.HasPrefix(sel.Sel.Name, "NewSummary"):
				withQ := metricLabels{"quantile": true}
				for l := range labels {
					withQ[l] = true
				}
				out[name] = withQ
				out[name+"_sum"], out[name+"_count"] = labels, labels
			default:
				if prev := out[name]; prev != nil { // one name, several const label values
					for l := range prev {
						labels[l] = true
					}
				}
				out[name] = labels
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metricOpts reads a literal prometheus.*Opts{Name: "...", ConstLabels:
// prometheus.Labels{...}}: its name and constant label names.
func metricOpts(e ast.Expr) (string, metricLabels, bool) {
	lit, ok := e.(*ast.CompositeLit)
	if !ok {
		return "", nil, false
	}
	if sel, ok := lit.Type.(*ast.SelectorExpr); !ok || !strings.HasSuffix(sel.Sel.Name, "Opts") {
		return "", nil, false
	}
	var name string
	labels := metricLabels{}
	for _, elt := range lit.Elts {
		kv, ok := elt.(*ast.KeyValueExpr)
		if !ok {
			continue
		}
		switch key, _ := kv.Key.(*ast.Ident); {
		case key == nil:
		case key.Name == "Name":
			name, _ = stringLit(kv.Value)
		case key.Name == "ConstLabels":
			if m, ok := kv.Value.(*ast.CompositeLit); ok {
				for _, le := range m.Elts {
					if kv, ok := le.(*ast.KeyValueExpr); ok {
						if s, ok := stringLit(kv.Key); ok {
							labels[s] = true
						}
					}
				}
			}
		}
	}
	return name, labels, name != ""
}

// TestMetricCatalogue checks the source reader against series the code
// is known to export, so a refactoring that hides metrics from it fails
// here rather than as a confusing rule failure.
func TestMetricCatalogue(t *testing.T) {
	cat := metricCatalogue(t)
	want := map[string][]string{
		"keyedge_edge_handshakes_total":                            {"result", "version", "group"},
		"keyedge_edge_handshake_seconds_bucket":                    {"le"},
		"keyedge_keystore_cache_entries":                           {"cache"},
		"keyedge_keystore_storage_up":                              nil,
		"keyedge_keyless_client_identity_expiry_timestamp_seconds": nil,
		"keyedge_keyserver_sign_seconds_bucket":                    {"family", "le"},
		"keyedge_acme_min_days_to_expiry":                          nil,
		"keyedge_proxy_errors_total":                               {"reason"},
	}
	for name, labels := range want {
		got, ok := cat[name]
		if !ok {
			t.Errorf("catalogue has no %s", name)
			continue
		}
		var names []string
		for l := range got {
			names = append(names, l)
		}
		slices.Sort(names)
		slices.Sort(labels)
		if !slices.Equal(names, labels) {
			t.Errorf("%s labels %v, want %v", name, names, labels)
		}
	}
}
