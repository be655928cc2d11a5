package accesslog

import (
	"crypto/tls"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// record is a request as the edge records it: h2, a keyless tenant.
var record = Record{
	Time:       time.Date(2026, 12, 1, 14, 3, 5, 123456789, time.FixedZone("CET", 3600)),
	RequestID:  "0123456789abcdef0123456789abcdef",
	Client:     "203.0.113.7:40000",
	Proto:      "h2",
	Method:     "GET",
	Host:       "shop.example",
	Path:       "/cart",
	Status:     200,
	BytesOut:   3,
	Total:      1500 * time.Microsecond,
	OriginAddr: "10.0.0.5:8080",
	Origin:     time.Millisecond,
	SNI:        "shop.example",
	Tenant:     "shop",
	Cert:       "3f1a",
	TLSVersion: tls.VersionTLS13,
	Group:      tls.X25519MLKEM768,
	Handshake:  2 * time.Millisecond,
	Route:      "keyless",
	KeyServer:  "10.0.1.1:2407",
}

func TestFormats(t *testing.T) {
	failed := Record{Time: record.Time, RequestID: "r", Client: "[2001:db8::1]:1", Proto: "h1", Method: "GET", Host: "h", Path: "/", Status: 502, Error: "unreachable", OriginAddr: "o:80"}
	tests := []struct {
		name string
		r    Record
		json bool
		want string
	}{
		{"json", record, true, `{"time":"2026-12-01T13:03:05.123Z","request_id":"0123456789abcdef0123456789abcdef","client":"203.0.113.7:40000","proto":"h2","method":"GET","host":"shop.example","path":"/cart","status":200,"bytes_in":0,"bytes_out":3,"duration":0.001500,"origin":"10.0.0.5:8080","origin_duration":0.001000,"sni":"shop.example","tenant":"shop","cert":"3f1a","tls":"1.3","group":"X25519MLKEM768","resumed":false,"handshake_duration":0.002000,"route":"keyless","key_server":"10.0.1.1:2407"}`},
		{"text", record, false, `time=2026-12-01T13:03:05.123Z request_id=0123456789abcdef0123456789abcdef client=203.0.113.7:40000 proto=h2 method=GET host=shop.example path=/cart status=200 bytes_in=0 bytes_out=3 duration=0.001500 origin=10.0.0.5:8080 origin_duration=0.001000 sni=shop.example tenant=shop cert=3f1a tls=1.3 group=X25519MLKEM768 resumed=false handshake_duration=0.002000 route=keyless key_server=10.0.1.1:2407`},
		{"json, failed, no TLS", failed, true, `{"time":"2026-12-01T13:03:05.123Z","request_id":"r","client":"[2001:db8::1]:1","proto":"h1","method":"GET","host":"h","path":"/","status":502,"bytes_in":0,"bytes_out":0,"duration":0.000000,"origin":"o:80","origin_duration":0.000000,"error":"unreachable"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := string(appendRecord(nil, &tt.r, tt.json))
			if got != tt.want+"\n" {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
			if tt.json && !json.Valid([]byte(got)) {
				t.Error("not valid JSON")
			}
		})
	}
}

// TestHostileValues: whatever a client puts in its path or Host, a line
// stays one line, valid JSON, and bounded.
func TestHostileValues(t *testing.T) {
	long := strings.Repeat("a", 3*MaxValue)
	for _, v := range []string{"/a\"b\\c\nd\re\tf\x00g\x7f", "/\xff\xfe invalid UTF-8 é", long, "", "x=y z"} {
		r := record
		r.Path, r.Host = v, v
		for _, isJSON := range []bool{true, false} {
			line := appendRecord(nil, &r, isJSON)
			if strings.Count(string(line), "\n") != 1 {
				t.Errorf("%q (json %v): %d newlines in %q", v, isJSON, strings.Count(string(line), "\n"), line)
			}
			if len(line) > 3*MaxValue {
				t.Errorf("%q (json %v): a %d-byte line", v[:min(len(v), 20)], isJSON, len(line))
			}
			if !isJSON {
				continue
			}
			var got struct{ Path string }
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("%q: %v in %s", v, err, line)
			}
			want := string([]rune(v)) // each invalid byte U+FFFD, as encoding/json writes it
			if len(v) > MaxValue {
				want = v[:MaxValue] + "..."
			}
			if got.Path != want {
				t.Errorf("path %q logged as %q, want %q", v, got.Path, want)
			}
		}
	}
}
