package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/proctest"
)

// TestAccessLogReopenAndReload is logrotate against a real keyedge
// process: requests are logged to access_log.path; once the file is
// renamed and the process gets SIGUSR1, the next requests go to a new
// file at the path, and the renamed one gets no more. Then SIGHUP moves
// the log to another file and format, and refuses to turn it off (that
// needs SIGUSR2).
func TestAccessLogReopenAndReload(t *testing.T) {
	w, addr, cfg, p := okEdge(t, "accesslog", "access_log:\n  path: access.log\n  format: text\n")

	tr := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: w.Roots},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
	}
	defer tr.CloseIdleConnections()
	get := func(path string) {
		t.Helper()
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://t0.keyedge.test" + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	logged := func(file, path string) bool {
		data, _ := os.ReadFile(w.Path(file))
		return strings.Contains(string(data), "path="+path+" ")
	}

	get("/before")
	proctest.Eventually(t, 10*time.Second, "/before in access.log", func() bool { return logged("access.log", "/before") })
	if err := os.Rename(w.Path("access.log"), w.Path("access.log.1")); err != nil {
		t.Fatal(err)
	}
	p.Signal(t, syscall.SIGUSR1)
	p.WaitOutput(t, "access log reopened", 10*time.Second)
	get("/after")
	proctest.Eventually(t, 10*time.Second, "/after in the new access.log", func() bool { return logged("access.log", "/after") })
	if logged("access.log.1", "/after") || logged("access.log", "/before") {
		t.Error("a line went to the wrong file")
	}
	if fi, err := os.Stat(filepath.Join(w.Dir, "access.log")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("new access.log: %v, mode %v", err, fi.Mode())
	}

	// SIGHUP moves the log to another file and format.
	moved := strings.Replace(cfg, "  path: access.log\n  format: text\n", "  path: moved.log\n  format: json\n", 1)
	if err := os.WriteFile(w.Path("edge.yaml"), []byte(moved), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(t, syscall.SIGHUP)
	p.WaitOutput(t, "SIGHUP: config reloaded", 10*time.Second)
	get("/moved")
	proctest.Eventually(t, 10*time.Second, "/moved in moved.log as JSON", func() bool {
		data, _ := os.ReadFile(w.Path("moved.log"))
		return strings.Contains(string(data), `"path":"/moved"`)
	})

	// Turning it off needs a new process: refused by name, still logging.
	off := strings.Replace(moved, "  format: json\n", "  format: json\n  off: true\n", 1)
	if err := os.WriteFile(w.Path("edge.yaml"), []byte(off), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(t, syscall.SIGHUP)
	p.WaitOutput(t, "SIGHUP: reload refused", 10*time.Second)
	if out := p.Output(t); !strings.Contains(out, "access_log") {
		t.Errorf("the refusal does not name access_log:\n%s", out)
	}
	get("/still")
	proctest.Eventually(t, 10*time.Second, "/still in moved.log", func() bool {
		data, _ := os.ReadFile(w.Path("moved.log"))
		return strings.Contains(string(data), `"path":"/still"`)
	})
}
