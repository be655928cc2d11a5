package keystore_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/keystore"
)

func TestParseOrigin(t *testing.T) {
	for _, tt := range []struct {
		origin  string
		problem string // "" when valid
	}{
		{"http://127.0.0.1:8080", ""},
		{"https://origin.example/app", ""},
		{"http://[::1]:8080", ""},
		{"127.0.0.1:8080", "no scheme"},
		{"http://bad host/", "not a URL"},
		{"localhost:8080", "no scheme"},
		{"origin.example", "no scheme"},
		{"ftp://origin.example/", `scheme "ftp"`},
		{"http://", "no host"},
		{"http://:8080", "no host"},
		{"http:///path", "no host"},
		{"", "empty"},
	} {
		u, err := keystore.ParseOrigin(tt.origin)
		switch {
		case tt.problem == "" && err != nil:
			t.Errorf("ParseOrigin(%q) = %v, want it accepted", tt.origin, err)
		case tt.problem == "" && u.String() != tt.origin:
			t.Errorf("ParseOrigin(%q) = %s", tt.origin, u)
		case tt.problem != "" && (!errors.Is(err, keystore.ErrBadOrigin) || !strings.Contains(err.Error(), tt.problem) || !strings.Contains(err.Error(), "want http://HOST")):
			t.Errorf("ParseOrigin(%q) = %v, want ErrBadOrigin saying %q and the expected form", tt.origin, err, tt.problem)
		}
	}
}
