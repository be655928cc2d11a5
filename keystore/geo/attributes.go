package geo

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/cloudflare/circl/abe/cpabe/tkn20"
)

// Attributes describe where a node runs, such as region, country, data
// centre and security level. The zero value declares nothing and
// satisfies no policy.
type Attributes struct {
	m   map[string]string
	abe tkn20.Attributes
}

// ParseAttributes parses "name: value" pairs separated by commas, such
// as "region: eu, country: de, dc: fra1". Names and values are folded to
// lower case; a name may appear once. Empty text is no attributes.
func ParseAttributes(s string) (Attributes, error) {
	toks, err := lex("attributes", s)
	if err != nil {
		return Attributes{}, err
	}
	fail := func(t token, format string, args ...any) (Attributes, error) {
		return Attributes{}, &SyntaxError{"attributes", s, t.pos + 1, fmt.Sprintf(format, args...)}
	}
	m := map[string]string{}
	for i := 0; toks[i].kind != tokEOF; {
		if i > 0 {
			if toks[i].kind != tokComma {
				return fail(toks[i], "expected \",\" between attributes, found %s", toks[i].describe())
			}
			i++
		}
		name, colon, value := toks[i], toks[min(i+1, len(toks)-1)], toks[min(i+2, len(toks)-1)]
		switch {
		case name.kind != tokIdent:
			return fail(name, "expected an attribute name, found %s", name.describe())
		case colon.kind != tokColon:
			return fail(colon, "expected \":\" after attribute name %q, found %s", name.text, colon.describe())
		case value.kind != tokIdent:
			return fail(value, "expected a value for attribute %q, found %s", name.text, value.describe())
		}
		if _, dup := m[name.text]; dup {
			return fail(name, "attribute %q given twice", name.text)
		}
		m[name.text] = value.text
		i += 3
	}
	a := attributesOf(m)
	if err := checkCanonical("attributes", s, a.String()); err != nil {
		return Attributes{}, err
	}
	return a, nil
}

func attributesOf(m map[string]string) Attributes {
	a := Attributes{m: m}
	a.abe.FromMap(m)
	return a
}

// String returns the attributes in canonical form: sorted by name,
// "name: value" joined by ", ". ParseAttributes reads it back.
func (a Attributes) String() string {
	parts := make([]string, 0, len(a.m))
	for _, k := range slices.Sorted(maps.Keys(a.m)) {
		parts = append(parts, k+": "+a.m[k])
	}
	return strings.Join(parts, ", ")
}

// Equal reports whether a and b declare the same attributes.
func (a Attributes) Equal(b Attributes) bool { return maps.Equal(a.m, b.m) }
