// Command browsercheck drives a headless Chromium against a running
// edge, for bench/chromium.sh: what a user of a browser would check,
// with a client nobody here wrote.
//
// Usage:
//
//	browsercheck origin ADDR
//	browsercheck page DEBUG_ADDR URL
//	browsercheck netlog FILE
//
// origin serves, in plain HTTP on ADDR, an HTML page, /big?mib=N (N MiB
// with its SHA-256 in X-Sha256), /upload (answers the length and SHA-256
// of the body it read), /ws (a WebSocket echo) and /cut (8 MiB of a
// body, with a Content-Length of 16 MiB when ?cl=1, then the connection
// dropped).
//
// page opens URL in a new tab of the Chromium whose DevTools listen on
// DEBUG_ADDR (--remote-debugging-port), runs the checks in checks.js
// there (against origin's paths, through the edge) and prints one line
// per check: "ok" or "FAIL", and what the page saw.
//
// netlog prints what Chromium negotiated per connection, from the
// --log-net-log FILE of a finished run: TLS version, ALPN, key exchange
// group, certificate subject, QUIC sessions, alerts and net errors.
//
// It exits non-zero if a check failed.
package main

import (
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"golang.org/x/net/websocket"
)

func main() {
	err := errors.New("usage: browsercheck origin ADDR | page DEBUG_ADDR URL | netlog FILE")
	switch {
	case len(os.Args) == 3 && os.Args[1] == "origin":
		err = serveOrigin(os.Args[2])
	case len(os.Args) == 4 && os.Args[1] == "page":
		err = page(os.Args[2], os.Args[3])
	case len(os.Args) == 3 && os.Args[1] == "netlog":
		err = netlog(os.Args[2], os.Stdout)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "browsercheck: %v\n", err)
		os.Exit(1)
	}
}

// maxMiB bounds /big: the origin holds that much in memory.
const maxMiB = 64

const html = `<!doctype html><html><head><title>browsercheck</title></head><body>browsercheck</body></html>`

// serveOrigin serves the origin's paths on addr until it fails.
func serveOrigin(addr string) error {
	big := make([]byte, maxMiB<<20)
	for i := range big {
		big[i] = byte(i*7 + i>>13)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		io.WriteString(w, html)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		n, err := strconv.Atoi(r.URL.Query().Get("mib"))
		if err != nil || n < 0 || n > maxMiB {
			http.Error(w, fmt.Sprintf("mib: 0 to %d", maxMiB), http.StatusBadRequest)
			return
		}
		b := big[:n<<20]
		sum := sha256.Sum256(b)
		w.Header().Set("X-Sha256", hex.EncodeToString(sum[:]))
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.Itoa(len(b)))
		w.Write(b)
	})
	mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, err := io.Copy(h, r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprintf(w, `{"bytes":%d,"sha256":"%x"}`, n, h.Sum(nil))
	})
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("cl") == "1" {
			w.Header().Set("Content-Length", strconv.Itoa(16<<20))
		}
		w.Write(big[:8<<20])
		rc := http.NewResponseController(w)
		rc.Flush()
		if conn, _, err := rc.Hijack(); err == nil {
			conn.Close()
		}
	})
	mux.Handle("/ws", websocket.Handler(func(c *websocket.Conn) {
		c.PayloadType = websocket.BinaryFrame
		io.Copy(c, c)
	}))
	return http.ListenAndServe(addr, mux)
}

//go:embed checks.js
var checksJS string

// page runs checks.js in a new tab on url and prints its verdicts.
func page(debugAddr, url string) error {
	req, err := http.NewRequest(http.MethodPut, "http://"+debugAddr+"/json/new?"+url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("DevTools at %s: %w", debugAddr, err)
	}
	var target struct{ WebSocketDebuggerURL string }
	err = json.NewDecoder(resp.Body).Decode(&target)
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("DevTools /json/new: %w", err)
	}
	ws, err := websocket.Dial(target.WebSocketDebuggerURL, "", "http://"+debugAddr)
	if err != nil {
		return err
	}
	defer ws.Close()
	ws.SetDeadline(time.Now().Add(5 * time.Minute))
	t := &tab{ws: ws}
	// The tab starts on about:blank: wait until url has loaded.
	for loaded := false; !loaded; time.Sleep(200 * time.Millisecond) {
		if err := t.eval(fmt.Sprintf("location.href === %q && document.readyState === 'complete'", url), &loaded); err != nil {
			return err
		}
	}
	var verdicts []verdict
	if err := t.eval(checksJS, &verdicts); err != nil {
		return err
	}
	failed := 0
	for _, v := range verdicts {
		word := "ok"
		if !v.OK {
			word, failed = "FAIL", failed+1
		}
		fmt.Printf("%-4s %s: %s\n", word, v.Check, v.Saw)
	}
	if failed > 0 {
		return fmt.Errorf("%d check(s) failed on %s", failed, url)
	}
	return nil
}

// tab is a DevTools connection to one tab.
type tab struct {
	ws *websocket.Conn
	id int
}

// eval evaluates expr in the tab, awaiting a promise, into v.
func (t *tab) eval(expr string, v any) error {
	t.id++
	call := map[string]any{"id": t.id, "method": "Runtime.evaluate", "params": map[string]any{
		"expression": expr, "awaitPromise": true, "returnByValue": true}}
	if err := websocket.JSON.Send(t.ws, call); err != nil {
		return err
	}
	for {
		var m struct {
			ID     int
			Error  json.RawMessage
			Result struct {
				Result           struct{ Value json.RawMessage }
				ExceptionDetails json.RawMessage
			}
		}
		if err := websocket.JSON.Receive(t.ws, &m); err != nil {
			return err
		}
		switch {
		case m.ID != t.id:
			continue // an event
		case m.Error != nil:
			return fmt.Errorf("DevTools: %s", m.Error)
		case m.Result.ExceptionDetails != nil:
			return fmt.Errorf("the page threw: %s", m.Result.ExceptionDetails)
		}
		return json.Unmarshal(m.Result.Result.Value, v)
	}
}

// verdict is one check of checks.js.
type verdict struct {
	Check string
	OK    bool
	Saw   string
}
