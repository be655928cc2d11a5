package deploy

// What the artefacts are checked against, read from the code itself: the
// flag sets of the binaries (from cmd/*'s source, since package main
// cannot be imported), and edge.yaml and keyserver.yaml through the real
// loaders and schemas, internal/config's.

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/internal/config"
	"go.yaml.in/yaml/v3"
)

// repoRoot is the product module's root (the checkout), relative to this
// package's directory.
const repoRoot = ".."

// flagSpec is one flag.FlagSet found in a command's source: the name
// given to flag.NewFlagSet, and each flag's name with whether it is a
// boolean (which takes no separate value).
type flagSpec struct {
	set   string
	flags map[string]bool // name -> boolean
}

// flagSets parses the non-test Go files of cmd/<command> and returns its
// flag sets by name. A flag set is found where a variable is assigned
// flag.NewFlagSet("name", ...); flags are the calls v.String("f", ...),
// v.BoolVar(&x, "f", ...) and the like on that variable after it, in
// source order (so `fs` reused in two switch cases is told apart).
func flagSets(t *testing.T, command string) map[string]*flagSpec {
	t.Helper()
	sets := map[string]*flagSpec{}
	for _, f := range commandFiles(t, command) {
		current := map[string]*flagSpec{} // variable expression -> its flag set
		ast.Inspect(f, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for i, rhs := range n.Rhs {
					call, ok := rhs.(*ast.CallExpr)
					if !ok || !isSelector(call.Fun, "flag", "NewFlagSet") || len(call.Args) == 0 || i >= len(n.Lhs) {
						continue
					}
					setName, ok := stringLit(call.Args[0])
					if !ok {
						continue
					}
					spec := sets[setName]
					if spec == nil {
						spec = &flagSpec{set: setName, flags: map[string]bool{}}
						sets[setName] = spec
					}
					current[exprString(n.Lhs[i])] = spec
				}
			case *ast.CallExpr:
				sel, ok := n.Fun.(*ast.SelectorExpr)
				if !ok {
					return true
				}
				spec := current[exprString(sel.X)]
				if spec == nil {
					return true
				}
				method := sel.Sel.Name
				idx := 0 // String("name", ...), Func("name", ...)
				if strings.HasSuffix(method, "Var") {
					idx = 1 // StringVar(&v, "name", ...), Var(v, "name", ...), TextVar(&v, "name", ...)
				}
				if !flagMethods[method] || len(n.Args) <= idx {
					return true
				}
				if name, ok := stringLit(n.Args[idx]); ok {
					spec.flags[name] = method == "Bool" || method == "BoolVar" || method == "BoolFunc"
				}
			}
			return true
		})
	}
	return sets
}

var flagMethods = map[string]bool{
	"String": true, "StringVar": true, "Bool": true, "BoolVar": true, "BoolFunc": true,
	"Int": true, "IntVar": true, "Int64": true, "Int64Var": true, "Uint": true, "UintVar": true,
	"Uint64": true, "Uint64Var": true, "Float64": true, "Float64Var": true,
	"Duration": true, "DurationVar": true, "Func": true, "Var": true, "TextVar": true,
}

// flagSet returns the named flag set of a command, failing the test when
// the source has none by that name.
func flagSet(t *testing.T, command, set string) *flagSpec {
	t.Helper()
	spec := flagSets(t, command)[set]
	if spec == nil || len(spec.flags) == 0 {
		t.Fatalf("cmd/%s: no flag set %q with flags in the source (has the command line moved?)", command, set)
	}
	return spec
}

// parseArgs parses a command line the way package flag would with spec:
// -f or --f, "-f value" or "-f=value", booleans without a value, stopping
// at the first non-flag or "--". It returns the values by flag name and
// the remaining arguments; an undefined flag or a missing value is an
// error.
func (spec *flagSpec) parseArgs(args []string) (map[string]string, []string, error) {
	values := map[string]string{}
	for len(args) > 0 {
		a := args[0]
		if a == "--" {
			return values, args[1:], nil
		}
		if len(a) < 2 || a[0] != '-' {
			break
		}
		args = args[1:]
		name := strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-")
		name, value, hasValue := strings.Cut(name, "=")
		isBool, ok := spec.flags[name]
		if !ok {
			return nil, nil, fmt.Errorf("%s: flag -%s is not defined (defined: %s)", spec.set, name, strings.Join(spec.names(), ", "))
		}
		switch {
		case hasValue:
		case isBool:
			value = "true"
		case len(args) == 0:
			return nil, nil, fmt.Errorf("%s: flag -%s needs a value", spec.set, name)
		default:
			value, args = args[0], args[1:]
		}
		values[name] = value
	}
	return values, args, nil
}

func (spec *flagSpec) names() []string {
	var names []string
	for n := range spec.flags {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// yamlKeys returns the yaml tag names of the fields of struct type T:
// the keys of a config file internal/config decodes into T with unknown
// keys refused.
func yamlKeys[T any]() map[string]bool {
	keys := map[string]bool{}
	st := reflect.TypeFor[T]()
	for i := range st.NumField() {
		name, _, _ := strings.Cut(st.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}

// constSeconds returns the value of `const name = N * time.Second` in
// cmd/<command>.
func constSeconds(t *testing.T, command, name string) int {
	t.Helper()
	for _, f := range commandFiles(t, command) {
		for _, d := range f.Decls {
			gd, ok := d.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, s := range gd.Specs {
				vs := s.(*ast.ValueSpec)
				for i, id := range vs.Names {
					if id.Name != name || i >= len(vs.Values) {
						continue
					}
					if be, ok := vs.Values[i].(*ast.BinaryExpr); ok && be.Op == token.MUL && isSelector(be.Y, "time", "Second") {
						if lit, ok := be.X.(*ast.BasicLit); ok {
							if n, err := strconv.Atoi(lit.Value); err == nil {
								return n
							}
						}
					}
					t.Fatalf("cmd/%s: const %s is not of the form N * time.Second; update this test", command, name)
				}
			}
		}
	}
	t.Fatalf("cmd/%s: no const %s", command, name)
	return 0
}

// commandFiles parses the non-test Go files of cmd/<command>.
func commandFiles(t *testing.T, command string) []*ast.File {
	t.Helper()
	dir := filepath.Join(repoRoot, "cmd", command)
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("reading %s: %v", dir, err)
	}
	fset := token.NewFileSet()
	var files []*ast.File
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatalf("parsing %s: %v", name, err)
		}
		files = append(files, f)
	}
	return files
}

func isSelector(e ast.Expr, pkg, name string) bool {
	sel, ok := e.(*ast.SelectorExpr)
	if !ok || sel.Sel.Name != name {
		return false
	}
	id, ok := sel.X.(*ast.Ident)
	return ok && id.Name == pkg
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

func exprString(e ast.Expr) string {
	switch e := e.(type) {
	case *ast.Ident:
		return e.Name
	case *ast.SelectorExpr:
		return exprString(e.X) + "." + e.Sel.Name
	case *ast.StarExpr:
		return "*" + exprString(e.X)
	}
	return fmt.Sprintf("%T", e)
}

// loadEdgeConfig writes an edge.yaml document to a temporary file and
// loads it with the real loader, config.LoadEdge (which checks syntax,
// unknown keys and values, and reads no other file). It also returns
// the document as a generic map.
func loadEdgeConfig(t *testing.T, doc string) (*config.Edge, map[string]any, error) {
	t.Helper()
	var raw map[string]any
	if err := yaml.Unmarshal([]byte(doc), &raw); err != nil {
		return nil, nil, fmt.Errorf("edge.yaml: %w", err)
	}
	path := filepath.Join(t.TempDir(), "edge.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadEdge(path)
	return cfg, raw, err
}

// loadKeyServerConfig loads a keyserver.yaml document with the real
// loader, config.LoadKeyServer (which checks syntax, unknown keys,
// required settings and authorize rules, and reads no other file).
func loadKeyServerConfig(t *testing.T, doc string) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "keyserver.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := config.LoadKeyServer(path)
	return err
}

// fileSettings returns every setting of a config document whose key ends
// in "_file" (fleet_key_file, session_tickets.secret_file, ...) with its
// dotted path, so that each can be checked against what is mounted.
func fileSettings(doc map[string]any) map[string]string {
	out := map[string]string{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		switch v := v.(type) {
		case map[string]any:
			for k, val := range v {
				p := k
				if prefix != "" {
					p = prefix + "." + k
				}
				if s, ok := val.(string); ok && strings.HasSuffix(k, "_file") && s != "" {
					out[p] = s
					continue
				}
				walk(p, val)
			}
		case []any:
			for i, val := range v {
				walk(fmt.Sprintf("%s[%d]", prefix, i), val)
			}
		}
	}
	walk("", doc)
	return out
}

// TestSourceReaders checks the readers above against the real commands,
// so a refactoring that hides a flag set from them fails here and not as
// a confusing artefact failure.
func TestSourceReaders(t *testing.T) {
	serve := flagSet(t, "keyedge", "keyedge serve")
	if _, ok := serve.flags["config"]; !ok {
		t.Errorf("keyedge serve flags %v: no -config", serve.names())
	}
	demo := flagSet(t, "keyedge", "keyedge demo")
	if isBool, ok := demo.flags["check"]; !ok || !isBool {
		t.Errorf("keyedge demo flags: -check should be a boolean, got %v", demo.flags)
	}
	if _, ok := serve.flags["tenants"]; ok {
		t.Errorf("keyedge serve flags include demo's -tenants: flag sets are mixed up")
	}
	ks := flagSet(t, "keyserver", "keyserver")
	if _, _, err := ks.parseArgs([]string{"--config", "x.yaml"}); err != nil {
		t.Error(err)
	}
	if _, _, err := ks.parseArgs([]string{"--no-such-flag"}); err == nil {
		t.Error("an undefined flag parsed")
	}
	if _, _, err := ks.parseArgs([]string{"-config"}); err == nil {
		t.Error("a flag without its value parsed")
	}
	keys := yamlKeys[config.KeyServer]()
	for _, k := range []string{"listen", "metrics_listen", "keys_dir", "authorize"} {
		if !keys[k] {
			t.Errorf("keyserver config keys %v: no %s", keys, k)
		}
	}
	if n := constSeconds(t, "keyserver", "shutdownTimeout"); n <= 0 {
		t.Errorf("keyserver shutdownTimeout = %ds", n)
	}
}
