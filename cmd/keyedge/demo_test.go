package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
)

// TestDemoPrintedCommands runs keyedge demo as make demo does (keyctl
// built beside it), pastes every command it prints under "try:" into a
// shell, and wants each to succeed. Then, with the demo ended, it serves
// the demo's edge.yaml again, and wants the file and the log to say that
// the origin and key servers went with the demo.
func TestDemoPrintedCommands(t *testing.T) {
	bins := proctest.Build(t, "cmd/keyedge", "cmd/keyctl")
	tmp := t.TempDir()
	// env sets TMPDIR, where the demo makes its directory, so the test
	// removes it.
	demo := proctest.Start(t, "demo", tmp, "env", "TMPDIR="+tmp, bins[0], "demo", "--tenants", "120", "--listen", "127.0.0.1:0")
	demo.WaitOutput(t, "serving until Ctrl-C", 3*time.Minute)
	out := demo.Output(t)
	m := regexp.MustCompile(`\(config (\S+)\)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("the demo printed no config path:\n%s", out)
	}
	cfgPath := m[1]
	_, try, ok := strings.Cut(out, "\ntry:\n")
	if !ok {
		t.Fatalf("the demo printed no commands to try:\n%s", out)
	}
	try, _, _ = strings.Cut(try, "\n\n")
	var curl, keyctl int
	for line := range strings.Lines(try) {
		line = strings.TrimSpace(line)
		if !strings.HasPrefix(line, "curl ") && !strings.HasPrefix(line, bins[1]+" ") {
			continue // a log line of the demo's edge
		}
		if strings.HasPrefix(line, "curl ") {
			curl++
		} else {
			keyctl++
		}
		cmd := exec.Command("sh", "-c", line)
		cmd.Dir = tmp
		got, err := cmd.CombinedOutput()
		if err != nil {
			t.Errorf("pasted %s: %v\n%s", line, err, got)
			continue
		}
		if strings.Contains(line, " show ") && !strings.Contains(string(got), "name:      t42.keyedge.test") {
			t.Errorf("pasted %s:\n%s", line, got)
		}
	}
	if curl < 6 || keyctl < 2 {
		t.Fatalf("found %d curl and %d keyctl commands to try, want at least 6 and 2:\n%s", curl, keyctl, out)
	}
	demo.Signal(t, syscall.SIGINT)
	if err := demo.Wait(t, time.Minute); err != nil {
		t.Fatalf("demo: %v", err)
	}

	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(cfg), "# Written by keyedge demo. The origin and the key servers") ||
		!strings.Contains(string(cfg), "ran inside the demo process") {
		t.Errorf("edge.yaml does not say its origin and key servers lived in the demo:\n%s", cfg)
	}
	serve := proctest.Start(t, "serve", filepath.Dir(cfgPath), bins[0], "serve", "--config", cfgPath)
	// The warning comes once the edge listens (edge.yaml's log_level
	// is warn: nothing else is logged).
	serve.WaitOutput(t, "geo key server unreachable at start", time.Minute)
	first, _, _ := strings.Cut(try, "\n")
	cmd := exec.Command("sh", "-c", strings.TrimSpace(first)+" -s -o /dev/null -w '%{http_code}'")
	if got, err := cmd.CombinedOutput(); err != nil || string(got) != "502" {
		t.Errorf("%s with the demo ended: %s, %v; want status 502 (no origin), as edge.yaml says", first, got, err)
	}
	serve.Signal(t, syscall.SIGTERM)
	if err := serve.Wait(t, time.Minute); err != nil {
		t.Errorf("serve: %v", err)
	}
}
