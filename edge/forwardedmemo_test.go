package edge

import (
	"crypto/tls"
	"net/http"
	"testing"
)

// TestForwardedMemo: one memo, as one connection's, gives each request of
// a sequence the values computed for it alone, whatever changed from the
// request before: the host, the protocol or the client address.
func TestForwardedMemo(t *testing.T) {
	tlsState := &tls.ConnectionState{}
	steps := []struct {
		remote, host string
		tls          *tls.ConnectionState
		ip           string
		hasIP        bool
		value        string
	}{
		{"192.0.2.1:5000", "a.example", tlsState, "192.0.2.1", true, "for=192.0.2.1;host=a.example;proto=https"},
		{"192.0.2.1:5000", "a.example", tlsState, "192.0.2.1", true, "for=192.0.2.1;host=a.example;proto=https"},
		{"192.0.2.1:5000", "a.example:8443", tlsState, "192.0.2.1", true, `for=192.0.2.1;host="a.example:8443";proto=https`},
		{"192.0.2.1:5000", "a.example:8443", nil, "192.0.2.1", true, `for=192.0.2.1;host="a.example:8443";proto=http`},
		{"[2001:db8::1]:5000", "a.example", nil, "2001:db8::1", true, `for="[2001:db8::1]";host=a.example;proto=http`},
		{"not an address", "a.example", nil, "", false, "for=unknown;host=a.example;proto=http"},
	}
	var m forwardedMemo
	for i, s := range steps {
		r := &http.Request{RemoteAddr: s.remote, Host: s.host, TLS: s.tls}
		got := m.of(r)
		if got.ip != s.ip || got.hasIP != s.hasIP || got.value != s.value {
			t.Errorf("step %d (%s, %s): got ip %q (%v), Forwarded %q; want %q (%v), %q",
				i, s.remote, s.host, got.ip, got.hasIP, got.value, s.ip, s.hasIP, s.value)
		}
	}
}
