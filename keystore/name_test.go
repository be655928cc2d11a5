package keystore

import (
	"errors"
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	long := strings.Repeat("a", 63)
	tests := []struct {
		in, want string
		err      bool
	}{
		{in: "Example.COM", want: "example.com"},
		{in: "example.com.", want: "example.com"},
		{in: "*.Example.com", want: "*.example.com"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "xn--bcher-kva.example", want: "xn--bcher-kva.example"},
		{in: "_acme-challenge.example.com", want: "_acme-challenge.example.com"},
		{in: "", err: true},
		{in: ".", err: true},
		{in: "../etc/passwd", err: true},
		{in: "a..b", err: true},
		{in: ".example.com", err: true},
		{in: "a/b.example", err: true},
		{in: `a\b.example`, err: true},
		{in: "a\x00b.example", err: true},
		{in: "a\nb.example", err: true},
		{in: "a\x7fb.example", err: true},
		{in: "a b.example", err: true},
		{in: "a:443", err: true},
		{in: "a.*.example.com", err: true},
		{in: "**.example.com", err: true},
		{in: strings.Repeat(long+".", 4) + "com", err: true}, // 259 bytes
		{in: long + "a.example", err: true},                  // 64-byte label
		{in: strings.Repeat("ä", 300), err: true},
	}
	for _, tt := range tests {
		got, err := NormalizeName(tt.in)
		if tt.err {
			if !errors.Is(err, ErrBadName) {
				t.Errorf("NormalizeName(%q) = %q, %v; want ErrBadName", tt.in, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestWildcardOf(t *testing.T) {
	tests := map[string]string{
		"a.b.example.com": "*.b.example.com",
		"www.example.com": "*.example.com",
		"example.com":     "", // never *.com
		"localhost":       "",
		"*.example.com":   "",
	}
	for in, want := range tests {
		if got := WildcardOf(in); got != want {
			t.Errorf("WildcardOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzNormalizeName checks that whatever a client sends as SNI, a name
// that passes is safe as a storage key and normalising is idempotent.
func FuzzNormalizeName(f *testing.F) {
	for _, s := range []string{"example.com", "*.example.com", "../x", "a\x00b", "BÜCHER.example.", "a..b", "xn--"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := NormalizeName(in)
		if err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("error %v does not wrap ErrBadName", err)
			}
			return
		}
		if len(got) > maxNameLen || strings.Contains(got, "..") || strings.ContainsAny(got, "/\\\x00:") || strings.HasPrefix(got, ".") {
			t.Fatalf("NormalizeName(%q) = %q, unsafe", in, got)
		}
		if again, err := NormalizeName(got); err != nil || again != got {
			t.Fatalf("not idempotent: %q → %q → %q, %v", in, got, again, err)
		}
	})
}
