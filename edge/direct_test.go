package edge

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

func TestDirect(t *testing.T) {
	origin, _ := url.Parse("http://origin.example")
	secure, _ := url.Parse("https://origin.example")
	for _, tt := range []struct {
		name   string
		target string
		origin *url.URL
		header http.Header
		length int64 // the request's ContentLength, its body empty
		want   bool
	}{
		{"GET", "/a?b=c&d=%41", origin, nil, 0, true},
		{"GET of unknown length (chunked, or HTTP/2 without END_STREAM)", "/", origin, nil, -1, false},
		{"https origin", "/", secure, nil, 0, false},
		{"upgrade", "/", origin, http.Header{"Upgrade": {"websocket"}}, 0, false},
		{"semicolon in the query", "/?a=1;b=2", origin, nil, 0, false},
		{"malformed escape in the query", "/?a=%4", origin, nil, 0, false},
	} {
		// As net/http's HTTP/2 server gives it: a Body that is not
		// http.NoBody, whatever the length.
		r := httptest.NewRequest(http.MethodGet, tt.target, strings.NewReader(""))
		r.ContentLength = tt.length
		for k, v := range tt.header {
			r.Header[k] = v
		}
		if got := direct(r, tt.origin); got != tt.want {
			t.Errorf("direct(%s) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// TestDirectMatchesReverseProxy checks that the origin gets the same
// request, and the client the same response, from serveDirect as from
// the ReverseProxy path (but for the X-Request-ID each request gets). An Upgrade field without "Connection: upgrade"
// keeps a request off the direct path, and ReverseProxy removes it.
func TestDirectMatchesReverseProxy(t *testing.T) {
	origin := httptest.NewServer(http.HandlerFunc(proxyEchoHandler))
	t.Cleanup(origin.Close)
	pt := newProxyTest(t, ProxyOptions{}, proxyTestOrigin(t, origin.URL+"/base"))
	for _, target := range []string{"https://" + proxyTestHost + "/p?q=1&r=%41", "http://" + proxyTestHost + "/p?q=1;r=2"} {
		var echoes [2]proxyEcho
		var headers [2]http.Header
		for i, viaRP := range []bool{false, true} {
			r := httptest.NewRequest(http.MethodGet, target, nil)
			r.RemoteAddr = "[2001:db8::1]:50000"
			r.Header = http.Header{
				"Connection":          {"X-Secret, keep-alive"},
				"X-Secret":            {"1"},
				"Keep-Alive":          {"timeout=5"},
				"Proxy-Authorization": {"Basic dXNlcjpwYXNz"},
				"Te":                  {"trailers, deflate"},
				"X-Forwarded-For":     {"203.0.113.1"},
				"X-Forwarded-Host":    {"admin.tenant.example"},
				"Forwarded":           {"for=203.0.113.1"},
				"X-Real-Ip":           {"203.0.113.9"},
				"X-Kept":              {"a", "b"},
			}
			if viaRP {
				r.Header["Upgrade"] = []string{"websocket"}
			}
			rec := pt.serve(r)
			if rec.Code != http.StatusOK {
				t.Fatalf("%s: status %d, body %q", target, rec.Code, rec.Body)
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &echoes[i]); err != nil {
				t.Fatalf("decoding the origin's echo %q: %v", rec.Body, err)
			}
			headers[i] = rec.Header()
			// Each request gets its own ID.
			if id := echoes[i].Header.Get("X-Request-Id"); len(id) != 32 {
				t.Errorf("%s: the origin got X-Request-ID %q, want 32 hex digits", target, id)
			}
			echoes[i].Header.Del("X-Request-Id")
		}
		if !reflect.DeepEqual(echoes[0], echoes[1]) {
			t.Errorf("%s: the origin got\n%+v directly,\n%+v through ReverseProxy", target, echoes[0], echoes[1])
		}
		if !reflect.DeepEqual(headers[0], headers[1]) {
			t.Errorf("%s: the client got\n%v directly,\n%v through ReverseProxy", target, headers[0], headers[1])
		}
	}
}
