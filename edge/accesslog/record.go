package accesslog

import (
	"crypto/tls"
	"strconv"
	"time"
	"unicode/utf8"
)

// Record is one request as the access log keeps it. The edge fills it
// when the request ends; a caller serving requests its own way (a
// connection loop of its own) fills the fields it knows and leaves the
// others zero, which are left out of the line or written as zero.
type Record struct {
	Time      time.Time // when the request's header had been read
	RequestID string    // X-Request-ID, as passed to the origin
	Client    string    // client host:port, as the PROXY header names it when PROXY protocol is on
	Proto     string    // "h1" or "h2"
	Method    string
	Host      string // the Host header or :authority
	Path      string // without the query, which may carry credentials
	Status    int    // what the client got; 0: it went away before any response
	BytesIn   int64  // request body bytes read from the client (and, after a protocol switch, tunnelled)
	BytesOut  int64  // response body bytes written to the client (likewise)
	Total     time.Duration

	OriginAddr string        // the origin's host[:port]; "" when none was chosen
	Origin     time.Duration // from sending the request to the origin to its response header
	Error      string        // why the edge failed the request (keyedge_proxy_errors_total's reason); "" if it did not

	// The connection's TLS handshake.
	SNI        string
	Tenant     string // tenant of the certificate served; "" for the fallback certificate
	Cert       string // ID of the certificate served
	TLSVersion uint16 // 0: not TLS
	Group      tls.CurveID
	Resumed    bool
	Handshake  time.Duration
	Route      string // where the handshake was signed: "local", "keyless" or "geo"; "" when resumed or on the fallback
	KeyServer  string // the key server that signed, for keyless and geo
}

// always reports whether r is logged whatever the sampling rate: an
// error, or a 5xx.
func (r *Record) always() bool { return r.Error != "" || r.Status >= 500 }

// MaxValue bounds each string of a line, in bytes: longer ones (a path,
// a Host) are cut there and end in "...".
const MaxValue = 1024

// encoder appends one line in a format.
type encoder struct {
	json bool
	b    []byte
	n    int // fields written
}

// appendRecord appends r as one line, newline included.
func appendRecord(b []byte, r *Record, json bool) []byte {
	e := encoder{json: json, b: b}
	if json {
		e.b = append(e.b, '{')
	}
	e.key("time")
	e.quoted(func(b []byte) []byte { return r.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00") })
	e.str("request_id", r.RequestID)
	e.str("client", r.Client)
	e.str("proto", r.Proto)
	e.str("method", r.Method)
	e.str("host", r.Host)
	e.str("path", r.Path)
	e.int("status", int64(r.Status))
	e.int("bytes_in", r.BytesIn)
	e.int("bytes_out", r.BytesOut)
	e.seconds("duration", r.Total)
	if r.OriginAddr != "" {
		e.str("origin", r.OriginAddr)
		e.seconds("origin_duration", r.Origin)
	}
	e.optional("error", r.Error)
	if r.TLSVersion != 0 {
		e.optional("sni", r.SNI)
		e.optional("tenant", r.Tenant)
		e.optional("cert", r.Cert)
		e.str("tls", versionName(r.TLSVersion))
		e.str("group", r.Group.String())
		e.key("resumed")
		e.b = strconv.AppendBool(e.b, r.Resumed)
		e.seconds("handshake_duration", r.Handshake)
		e.optional("route", r.Route)
		e.optional("key_server", r.KeyServer)
	}
	if json {
		e.b = append(e.b, '}')
	}
	return append(e.b, '\n')
}

func versionName(v uint16) string {
	switch v {
	case tls.VersionTLS13:
		return "1.3"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS10:
		return "1.0"
	}
	return "0x" + strconv.FormatUint(uint64(v), 16)
}

// key starts a field.
func (e *encoder) key(k string) {
	if e.n > 0 {
		if e.json {
			e.b = append(e.b, ',')
		} else {
			e.b = append(e.b, ' ')
		}
	}
	e.n++
	if e.json {
		e.b = append(e.b, '"')
		e.b = append(e.b, k...)
		e.b = append(e.b, `":`...)
	} else {
		e.b = append(e.b, k...)
		e.b = append(e.b, '=')
	}
}

// quoted appends, as a string value, what add appends, which needs no
// escaping in either format.
func (e *encoder) quoted(add func([]byte) []byte) {
	if e.json {
		e.b = append(e.b, '"')
	}
	e.b = add(e.b)
	if e.json {
		e.b = append(e.b, '"')
	}
}

func (e *encoder) int(k string, v int64) {
	e.key(k)
	e.b = strconv.AppendInt(e.b, v, 10)
}

// seconds appends d in seconds, to the microsecond.
func (e *encoder) seconds(k string, d time.Duration) {
	e.key(k)
	e.b = strconv.AppendFloat(e.b, d.Seconds(), 'f', 6, 64)
}

// optional appends a string field unless v is empty.
func (e *encoder) optional(k, v string) {
	if v != "" {
		e.str(k, v)
	}
}

// str appends a string field, cut at MaxValue bytes.
func (e *encoder) str(k, v string) {
	e.key(k)
	cut := len(v) > MaxValue
	if cut {
		v = v[:MaxValue]
	}
	if e.json {
		e.b = appendJSONString(e.b, v, cut)
	} else {
		e.b = appendTextValue(e.b, v, cut)
	}
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string (RFC 8259): quotes,
// backslashes and control characters escaped, invalid UTF-8 replaced by
// U+FFFD; with cut, "..." before the closing quote.
func appendJSONString(b []byte, s string, cut bool) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= utf8.RuneSelf {
			r, size := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && size == 1 {
				b = append(b, s[start:i]...)
				b = append(b, `\ufffd`...)
				start = i + 1
			}
			i += size
			continue
		}
		if c >= 0x20 && c != '"' && c != '\\' {
			i++
			continue
		}
		b = append(b, s[start:i]...)
		switch c {
		case '"', '\\':
			b = append(b, '\\', c)
		case '\n':
			b = append(b, `\n`...)
		case '\t':
			b = append(b, `\t`...)
		default:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		i++
		start = i
	}
	b = append(b, s[start:]...)
	if cut {
		b = append(b, "..."...)
	}
	return append(b, '"')
}

// appendTextValue appends s as a key=value value: as it is when it is
// printable ASCII without space, quote, backslash or '=', else quoted as
// a Go string (as log/slog's text handler does); with cut, ending in
// "...".
func appendTextValue(b []byte, s string, cut bool) []byte {
	if cut {
		s += "..."
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '\\' || c == '=' {
			return strconv.AppendQuote(b, s)
		}
	}
	if s == "" {
		return append(b, `""`...)
	}
	return append(b, s...)
}
