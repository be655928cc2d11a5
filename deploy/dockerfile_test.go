package deploy

// The Dockerfiles, read with BuildKit's own parser, instruction parser and
// linter (what `docker build --check` runs), and the .dockerignore with
// moby's matcher.

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
)

// images are the Dockerfiles, by binary, with the ports each must
// expose: those the Kubernetes manifests use.
var images = map[string][]string{
	"keyedge":   {"8443", "8080", "9090"},
	"keyserver": {"2407", "9102"},
	"keyctl":    nil,
}

func TestDockerfiles(t *testing.T) {
	for bin, ports := range images {
		t.Run(bin, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("docker", bin+".Dockerfile"))
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range checkDockerfile(bin, ports, data) {
				t.Error(p)
			}
		})
	}
}

// checkDockerfile parses a Dockerfile and checks the build: a Go builder
// stage with cached modules and a static, stripped, reproducible build of
// ./cmd/<bin>, and a final stage on a static non-root base whose
// ENTRYPOINT is that binary, run as a numeric non-root user.
func checkDockerfile(bin string, ports []string, data []byte) problems {
	var p problems
	res, err := parser.Parse(bytes.NewReader(data))
	if err != nil {
		p.add("%s.Dockerfile: %v", bin, err)
		return p
	}
	for _, w := range res.Warnings {
		p.add("%s.Dockerfile: parser warning: %s", bin, w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, desc, url, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		p.add("%s.Dockerfile:%d: lint %s: %s", bin, line, rule, msg)
	}})
	stages, _, err := instructions.Parse(res.AST, lint)
	if err != nil {
		p.add("%s.Dockerfile: %v", bin, err)
		return p
	}
	if len(stages) < 2 {
		p.add("%s.Dockerfile: %d stage(s): want a builder stage and a final stage", bin, len(stages))
		return p
	}

	// The builder.
	build := stages[0]
	if !strings.HasPrefix(build.BaseName, "golang:1.26") {
		p.add("%s.Dockerfile: builder FROM %s: want golang:1.26 (go.mod's toolchain line)", bin, build.BaseName)
	}
	var (
		cgoOff, downloaded, copiedAll bool
		out                           string
	)
	for _, cmd := range build.Commands {
		switch c := cmd.(type) {
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				if kv.Key == "CGO_ENABLED" && kv.Value == "0" {
					cgoOff = true
				}
			}
		case *instructions.CopyCommand:
			if slices.Contains(c.SourcePaths, ".") {
				copiedAll = true
			} else if !copiedAll && !slices.Equal(c.SourcePaths, []string{"go.mod", "go.sum"}) {
				p.add("%s.Dockerfile: builder copies %v before the modules are downloaded", bin, c.SourcePaths)
			}
		case *instructions.RunCommand:
			line := strings.Join(c.CmdLine, " ")
			if strings.Contains(line, "go mod download") {
				if copiedAll {
					p.add("%s.Dockerfile: go mod download after COPY . .: every source change downloads the modules again", bin)
				}
				downloaded = true
			}
			if !strings.Contains(line, "go build") {
				continue
			}
			if strings.Contains(line, "CGO_ENABLED=0") {
				cgoOff = true
			}
			for _, want := range []string{"-trimpath", `-ldflags="-s -w"`, "./cmd/" + bin} {
				if !strings.Contains(line, want) {
					p.add("%s.Dockerfile: go build without %s: %s", bin, want, line)
				}
			}
			fields := strings.Fields(line)
			if i := slices.Index(fields, "-o"); i >= 0 && i+1 < len(fields) {
				out = fields[i+1]
			}
		}
	}
	if !cgoOff {
		p.add("%s.Dockerfile: the builder does not set CGO_ENABLED=0 (a static binary for a libc-less image)", bin)
	}
	if !downloaded || !copiedAll {
		p.add("%s.Dockerfile: want COPY go.mod go.sum, RUN go mod download, then COPY . .", bin)
	}
	if out == "" {
		p.add("%s.Dockerfile: no go build -o <path> in the builder", bin)
	}

	// The final image.
	final := stages[len(stages)-1]
	if final.BaseName != "gcr.io/distroless/static-debian12:nonroot" && final.BaseName != "scratch" {
		p.add("%s.Dockerfile: final FROM %s: want gcr.io/distroless/static-debian12:nonroot (or scratch)", bin, final.BaseName)
	}
	var (
		user, dest string
		entrypoint []string
		exposed    []string
	)
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.RunCommand:
			p.add("%s.Dockerfile: RUN in the final stage: the image has no shell", bin)
		case *instructions.UserCommand:
			user = c.User
		case *instructions.CopyCommand:
			if c.From == build.Name && slices.Contains(c.SourcePaths, out) {
				dest = c.DestPath
			}
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				p.add("%s.Dockerfile: ENTRYPOINT in shell form: the image has no shell; use the exec (JSON) form", bin)
			}
			entrypoint = c.CmdLine
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		}
	}
	if dest == "" {
		p.add("%s.Dockerfile: the final stage does not copy %s from the builder", bin, out)
	}
	if len(entrypoint) != 1 || entrypoint[0] != dest {
		p.add("%s.Dockerfile: ENTRYPOINT %q: want [%q], the binary the builder made", bin, entrypoint, dest)
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		p.add("%s.Dockerfile: USER %q: want a numeric non-root user (runAsNonRoot can only verify a number)", bin, user)
	}
	slices.Sort(exposed)
	want := slices.Clone(ports)
	slices.Sort(want)
	if !slices.Equal(exposed, want) {
		p.add("%s.Dockerfile: EXPOSE %v, want %v", bin, exposed, want)
	}
	return p
}

// TestDockerfileChecksCatch breaks the keyedge Dockerfile one way at a
// time and expects checkDockerfile to say so.
func TestDockerfileChecksCatch(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("docker", "keyedge.Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	src := string(data)
	cases := []struct{ name, old, new, want string }{
		{"single stage", "FROM gcr.io/distroless/static-debian12:nonroot\nCOPY --from=build /out/keyedge /usr/local/bin/keyedge\n", "", "stage"},
		{"cgo", "ENV CGO_ENABLED=0 ", "ENV ", "CGO_ENABLED=0"},
		{"root", "USER 65532:65532", "USER root", "numeric non-root"},
		{"no user", "USER 65532:65532\n", "", "numeric non-root"},
		{"entrypoint", `ENTRYPOINT ["/usr/local/bin/keyedge"]`, `ENTRYPOINT ["/usr/local/bin/keyserver"]`, "ENTRYPOINT"},
		{"shell entrypoint", `ENTRYPOINT ["/usr/local/bin/keyedge"]`, `ENTRYPOINT /usr/local/bin/keyedge`, "shell form"},
		{"wrong binary", "-o /out/keyedge ./cmd/keyedge", "-o /out/keyedge ./cmd/keyctl", "./cmd/keyedge"},
		{"no trimpath", "go build -trimpath", "go build", "-trimpath"},
		{"fat base", "FROM gcr.io/distroless/static-debian12:nonroot", "FROM debian:12", "final FROM"},
		{"shell in final", "USER 65532:65532", "RUN chmod 755 /usr/local/bin/keyedge\nUSER 65532:65532", "RUN in the final stage"},
		{"ports", "EXPOSE 8443 8080 9090", "EXPOSE 443 80 9090", "EXPOSE"},
		{"lint", "FROM golang:1.26 AS build", "FROM golang:1.26 as build", "lint"},
		{"download after copy", "COPY go.mod go.sum ./\n", "COPY . .\n", "go mod download"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(src, tc.old) {
				t.Fatalf("%q not in keyedge.Dockerfile: update the test case", tc.old)
			}
			broken := strings.Replace(src, tc.old, tc.new, 1)
			got := checkDockerfile("keyedge", images["keyedge"], []byte(broken))
			for _, p := range got {
				if strings.Contains(p, tc.want) {
					return
				}
			}
			t.Errorf("broken Dockerfile passed: want a problem containing %q, got %q", tc.want, got)
		})
	}
}

// TestDockerignore checks the build context: what must stay out is out,
// and no Go source file or module file the builds need is excluded.
func TestDockerignore(t *testing.T) {
	for _, p := range checkDockerignore(t, filepath.Join(repoRoot, ".dockerignore")) {
		t.Error(p)
	}
	// Breaking it: excluding a package the binaries import.
	broken := filepath.Join(t.TempDir(), ".dockerignore")
	data, err := os.ReadFile(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(broken, append(data, "\nkeystore\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := checkDockerignore(t, broken); len(got) == 0 {
		t.Error("a .dockerignore excluding keystore/ passed")
	}
}

func checkDockerignore(t *testing.T, file string) problems {
	t.Helper()
	var p problems
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	patterns, err := ignorefile.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{".git", "bin", "bin/keyedge", "bench/_out", "bench/_out/run1/results.json"} {
		if ok, _ := pm.MatchesOrParentMatches(path); !ok {
			p.add(".dockerignore: %s is not excluded", path)
		}
	}
	needed := []string{"go.mod", "go.sum"}
	err = filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		rel = filepath.ToSlash(rel)
		if d.IsDir() && (rel == ".git" || rel == "bench/_out" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(rel, ".go") && !strings.HasSuffix(rel, "_test.go") {
			needed = append(needed, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, path := range needed {
		if ok, _ := pm.MatchesOrParentMatches(path); ok {
			p.add(".dockerignore excludes %s, which the image builds need", path)
		}
	}
	if len(needed) < 10 {
		p.add("found only %d Go files to check: %v", len(needed), fmt.Sprint(needed))
	}
	return p
}
