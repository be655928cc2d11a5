package main

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
)

// groups names the TLS key exchange groups (IANA) Chromium offers.
var groups = map[int]string{0x11ec: "X25519MLKEM768", 29: "X25519", 23: "P-256", 24: "P-384", 25: "P-521"}

// netEvent is one event of a Chromium NetLog.
type netEvent struct {
	Type   int
	Source struct{ ID int }
	Params map[string]any
}

// netlog prints, per TLS connection and QUIC session of the NetLog in
// file, what was negotiated and how it ended.
func netlog(file string, w io.Writer) error {
	raw, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	var nl struct {
		Constants struct{ LogEventTypes map[string]int }
		Events    []netEvent
	}
	if err := json.Unmarshal(raw, &nl); err != nil {
		// A Chromium that was killed leaves the log open: close it.
		raw = append(bytes.TrimRight(bytes.TrimSpace(raw), ","), "]}"...)
		if err2 := json.Unmarshal(raw, &nl); err2 != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
	}
	name := map[int]string{}
	for k, v := range nl.Constants.LogEventTypes {
		name[v] = k
	}
	for _, e := range nl.Events {
		p := e.Params
		say := func(format string, args ...any) {
			fmt.Fprintf(w, "[%d] %s\n", e.Source.ID, fmt.Sprintf(format, args...))
		}
		switch name[e.Type] {
		case "SSL_CONNECT":
			if v, ok := p["version"]; ok {
				say("TLS: %v, ALPN %v, group %s, cipher 0x%04x, server signature 0x%04x, resumed %v", v, p["next_proto"], group(p["key_exchange_group"]), num(p["cipher_suite"]), num(p["peer_signature_algorithm"]), p["is_resumed"])
			} else if p["net_error"] != nil {
				say("TLS failed: net error %v", p["net_error"])
			}
		case "SSL_CERTIFICATES_RECEIVED":
			if certs, ok := p["certificates"].([]any); ok && len(certs) > 0 {
				say("certificate: %s", leaf(certs[0]))
			}
		case "SSL_ALERT_RECEIVED":
			if a := base64Bytes(p["bytes"]); len(a) == 2 {
				say("TLS alert received: level %d, description %d", a[0], a[1])
			}
		case "QUIC_SESSION":
			if p["host"] != nil {
				say("QUIC session to %v:%v", p["host"], p["port"])
			}
		case "QUIC_SESSION_CERTIFICATE_VERIFIED":
			say("QUIC certificate verified: %v", p["subjects"])
		case "QUIC_SESSION_CRYPTO_FRAME_RECEIVED":
			if g, ok := serverHelloGroup(p["bytes"]); ok {
				say("QUIC TLS 1.3, group %s", g)
			}
		case "QUIC_SESSION_CLOSED":
			say("QUIC closed: %v (quic error %v, from peer %v)", p["details"], p["quic_error"], p["from_peer"])
		case "QUIC_SESSION_CONNECTION_CLOSE_FRAME_RECEIVED":
			say("QUIC CONNECTION_CLOSE received: wire error 0x%x", num(p["quic_wire_error"]))
		case "HTTP2_SESSION":
			if p["host"] != nil {
				say("HTTP/2 session to %v", p["host"])
			}
		case "URL_REQUEST_START_JOB":
			if p["url"] != nil {
				say("%v %v", p["method"], p["url"])
			}
		case "HTTP_TRANSACTION_READ_RESPONSE_HEADERS":
			if h, ok := p["headers"].([]any); ok && len(h) > 0 {
				say("  response: %v", h[0])
			}
		}
	}
	return nil
}

// num is a NetLog number (a JSON float64) as an int.
func num(v any) int {
	f, _ := v.(float64)
	return int(f)
}

// group names a key exchange group by its code.
func group(v any) string {
	if g, ok := groups[num(v)]; ok {
		return g
	}
	return fmt.Sprintf("0x%04x", num(v))
}

// leaf is the subject and DNS names of a PEM certificate.
func leaf(v any) string {
	s, _ := v.(string)
	b, _ := pem.Decode([]byte(s))
	if b == nil {
		return "(no PEM)"
	}
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("%s [%s], issuer %s", c.Subject, strings.Join(c.DNSNames, " "), c.Issuer)
}

// serverHelloGroup finds the key share group of a TLS 1.3 ServerHello,
// the first message of the CRYPTO frame whose base64 bytes are v.
func serverHelloGroup(v any) (string, bool) {
	b := base64Bytes(v)
	if len(b) < 39 || b[0] != 2 {
		return "", false
	}
	// type(1) length(3) version(2) random(32) session_id cipher(2) compression(1) extensions
	i := 38
	i += 1 + int(b[i])
	i += 3
	if i+2 > len(b) {
		return "", false
	}
	end := i + 2 + (int(b[i])<<8 | int(b[i+1]))
	for i += 2; i+4 <= end && i+4 <= len(b); {
		typ, n := int(b[i])<<8|int(b[i+1]), int(b[i+2])<<8|int(b[i+3])
		if typ == 0x33 && n >= 2 && i+6 <= len(b) {
			return group(float64(int(b[i+4])<<8 | int(b[i+5]))), true
		}
		i += 4 + n
	}
	return "", false
}

// base64Bytes decodes a NetLog's base64 bytes; nil if v is not such.
func base64Bytes(v any) []byte {
	s, _ := v.(string)
	b, _ := base64.StdEncoding.DecodeString(s)
	return b
}
