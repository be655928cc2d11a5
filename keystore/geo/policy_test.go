package geo

import (
	"errors"
	"strings"
	"testing"
)

func TestParsePolicy(t *testing.T) {
	tests := []struct {
		in, canonical string
	}{
		{"region: eu", "region: eu"},
		{"Region:EU", "region: eu"},
		{"region: eu and not country: ru", "region: eu and not country: ru"},
		{"  dc:fra1   or dc:ams1 ", "dc: fra1 or dc: ams1"},
		{"(region: eu or region: uk) and security: high", "(region: eu or region: uk) and security: high"},
		{"not (country: us or country: cn)", "not (country: us or country: cn)"},
		{"not not region: eu", "not not region: eu"},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.in)
		if err != nil {
			t.Errorf("ParsePolicy(%q): %v", tt.in, err)
			continue
		}
		if p.String() != tt.canonical {
			t.Errorf("ParsePolicy(%q) = %q, want %q", tt.in, p, tt.canonical)
		}
		again, err := ParsePolicy(p.String())
		if err != nil || again.ID() != p.ID() {
			t.Errorf("canonical form %q does not parse back to the same policy: %v", p, err)
		}
	}
}

func TestParsePolicyErrors(t *testing.T) {
	tests := []struct {
		in     string
		column int
		msg    string
	}{
		{"", 1, "found end of input"},
		{"region", 7, `expected ":" after attribute name "region"`},
		{"region: eu && country: de", 12, `unexpected character '&'`},
		{"region: eu country: de", 12, `unexpected "country" after a complete policy`},
		{"region: eu) or x: y", 11, `unexpected ")"`},
		{"(region: eu", 12, `expected ")" to close the "(" at column 1`},
		{"region: and", 9, `expected a value for attribute "region", found "and"`},
		{"region: eu and", 15, "found end of input"},
		{"region: eu-west", 11, `unexpected character '-'`},
		{"and: eu", 1, `found "and"`},
		{strings.Repeat("(", 70) + "a: b" + strings.Repeat(")", 70), 66, "nested more than 64 deep"},
		{strings.Repeat("not ", 70) + "a: b", 261, "nested more than 64 deep"},
		{strings.Repeat("a: b or ", 200) + "a: b", maxInput + 1, "longer than"},
	}
	for _, tt := range tests {
		_, err := ParsePolicy(tt.in)
		var se *SyntaxError
		if !errors.As(err, &se) || !errors.Is(err, ErrSyntax) {
			t.Errorf("ParsePolicy(%.30q) = %v, want a *SyntaxError", tt.in, err)
			continue
		}
		if se.Column != tt.column || !strings.Contains(se.Msg, tt.msg) {
			t.Errorf("ParsePolicy(%.30q): column %d %q, want column %d containing %q", tt.in, se.Column, se.Msg, tt.column, tt.msg)
		}
	}
}

func TestAdmits(t *testing.T) {
	de := mustAttrs(t, "region: eu, country: de, dc: fra1")
	us := mustAttrs(t, "region: us, country: us, dc: iad1")
	bare := mustAttrs(t, "region: eu")
	tests := []struct {
		policy         string
		de, us, noCtry bool
	}{
		{"region: eu", true, false, true},
		{"not country: us", true, false, false}, // a negation needs the attribute declared
		{"region: eu and not country: ru", true, false, false},
		{"dc: fra1 or dc: iad1", true, true, false},
		{"not (region: eu or region: us)", false, false, false},
		{"REGION: EU", true, false, true},
	}
	for _, tt := range tests {
		p, err := ParsePolicy(tt.policy)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			a    Attributes
			want bool
		}{{de, tt.de}, {us, tt.us}, {bare, tt.noCtry}} {
			if got := p.Admits(c.a); got != c.want {
				t.Errorf("%q admits %q = %v, want %v", p, c.a, got, c.want)
			}
		}
	}
}

func TestParseAttributes(t *testing.T) {
	a, err := ParseAttributes(" Region: EU,country:de ,dc: fra1")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.String(), "country: de, dc: fra1, region: eu"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if b, err := ParseAttributes(a.String()); err != nil || !b.Equal(a) {
		t.Errorf("canonical form does not parse back: %v", err)
	}
	for _, bad := range []struct {
		in     string
		column int
	}{
		{"region", 7},
		{"region: eu country: de", 12},
		{"region: eu, region: us", 13},
		{"region: eu,", 12},
		{"region: eu; dc: x", 11},
		{"not: x", 1},
	} {
		_, err := ParseAttributes(bad.in)
		var se *SyntaxError
		if !errors.As(err, &se) || se.Column != bad.column {
			t.Errorf("ParseAttributes(%q) = %v, want a syntax error at column %d", bad.in, err, bad.column)
		}
	}
}

func mustAttrs(t testing.TB, s string) Attributes {
	t.Helper()
	a, err := ParseAttributes(s)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func mustPolicy(t testing.TB, s string) *Policy {
	t.Helper()
	p, err := ParsePolicy(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// FuzzParsePolicy checks that no input panics, that errors carry a
// column inside the input, and that the canonical form is a fixed point.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{"region: eu", "a: b and not (c: d or e: f)", "x: y)", "((", "not"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePolicy(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) || se.Column < 1 || se.Column > len(s)+1 {
				t.Fatalf("ParsePolicy(%q): bad error %v", s, err)
			}
			return
		}
		again, err := ParsePolicy(p.String())
		if err != nil || again.String() != p.String() {
			t.Fatalf("canonical %q of %q does not parse to itself: %v", p, s, err)
		}
	})
}

// FuzzParseAttributes checks that no input panics and that the
// canonical form is a fixed point.
func FuzzParseAttributes(f *testing.F) {
	for _, s := range []string{"region: eu, dc: fra1", "a:b,", ",", "a: b, a: c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAttributes(s)
		if err != nil {
			return
		}
		b, err := ParseAttributes(a.String())
		if err != nil || !b.Equal(a) {
			t.Fatalf("canonical %q of %q does not parse to itself: %v", a, s, err)
		}
	})
}

// The length limit applies to the canonical form a policy or attribute
// set is stored in, not only to the text given: an input within the
// limit whose canonical form is longer ("name:value" gains a space) is
// refused, so what is stored always parses again.
func TestCanonicalFormWithinLimit(t *testing.T) {
	over := strings.Repeat("0", 465) + ":" + strings.Repeat("0", 558) // 1024 bytes; canonical 1025
	at := strings.Repeat("0", 465) + ":" + strings.Repeat("0", 557)   // canonical 1024
	for _, tt := range []struct {
		what  string
		parse func(string) (string, error)
	}{
		{"policy", func(s string) (string, error) {
			p, err := ParsePolicy(s)
			if err != nil {
				return "", err
			}
			return p.String(), nil
		}},
		{"attributes", func(s string) (string, error) { a, err := ParseAttributes(s); return a.String(), err }},
	} {
		if _, err := tt.parse(over); !errors.Is(err, ErrSyntax) {
			t.Errorf("%s of 1024 bytes with a 1025-byte canonical form: %v, want ErrSyntax", tt.what, err)
		}
		c, err := tt.parse(at)
		if err != nil || len(c) != 1024 {
			t.Errorf("%s with a 1024-byte canonical form: %d bytes, %v", tt.what, len(c), err)
		}
	}
}
