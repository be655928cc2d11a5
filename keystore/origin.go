package keystore

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// ErrBadOrigin is returned by ParseOrigin for an origin the edge cannot
// proxy to.
var ErrBadOrigin = errors.New("keystore: bad origin URL")

// ParseOrigin parses a Meta.Origin: an absolute http or https URL with a
// host, such as "http://10.0.0.7:8080" or "https://origin.example/app".
// Writers check an origin with it before storing, so that a mistake such
// as "10.0.0.7:8080" (no scheme) is refused at once rather than failing
// every request for the tenant. The error wraps ErrBadOrigin and says
// what form is expected.
func ParseOrigin(origin string) (*url.URL, error) {
	u, err := url.Parse(origin)
	var problem string
	switch {
	case origin == "":
		problem = "empty"
	case !strings.Contains(origin, "://"):
		problem = "no scheme"
	case err != nil:
		problem = "not a URL"
	case u.Scheme != "http" && u.Scheme != "https":
		problem = fmt.Sprintf("scheme %q", u.Scheme)
	case u.Hostname() == "":
		problem = "no host"
	default:
		return u, nil
	}
	return nil, fmt.Errorf("%w %q: %s; want http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH], e.g. http://10.0.0.7:8080", ErrBadOrigin, origin, problem)
}
