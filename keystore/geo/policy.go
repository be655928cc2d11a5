package geo

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/cloudflare/circl/abe/cpabe/tkn20"
)

// Policy is a parsed key policy, such as "region: eu and not country: ru".
type Policy struct {
	canonical string
	abe       tkn20.Policy
}

// maxDepth bounds the nesting of parentheses and not, as tkn20 does.
const maxDepth = 64

// ParsePolicy parses and checks a policy. A malformed policy fails with
// a *SyntaxError naming the column of the bad token.
//
// The text is checked here, not only by tkn20, because tkn20's parser
// ignores whatever follows a complete expression ("region: eu) or x"
// would quietly mean "region: eu") and reports no positions.
func ParsePolicy(s string) (*Policy, error) {
	toks, err := lex("policy", s)
	if err != nil {
		return nil, err
	}
	p := &policyParser{input: s, toks: toks}
	var b strings.Builder
	if err := p.expression(&b, 0); err != nil {
		return nil, err
	}
	if t := p.peek(); t.kind != tokEOF {
		return nil, p.errorf(t, "unexpected %s after a complete policy; join terms with and/or", t.describe())
	}
	if err := checkCanonical("policy", s, b.String()); err != nil {
		return nil, err
	}
	pol := &Policy{canonical: b.String()}
	if err := pol.abe.FromString(pol.canonical); err != nil {
		return nil, &SyntaxError{"policy", s, 1, err.Error()}
	}
	return pol, nil
}

// String returns the policy in canonical form: lower case, one space
// between terms. Policies with the same canonical form are the same policy.
func (p *Policy) String() string { return p.canonical }

// ID names the policy in storage: PolicyID of its canonical form.
func (p *Policy) ID() string { return PolicyID(p.canonical) }

// PolicyID is the storage name of the policy whose canonical form is
// canonical: hex of the first 16 bytes of its SHA-256. It takes text,
// not a Policy, so that stored text can be checked against its name
// without being parsed.
func PolicyID(canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	return hex.EncodeToString(sum[:16])
}

// Admits reports whether a node with attributes a satisfies the policy,
// that is, whether a NodeKey for a opens secrets sealed under it.
func (p *Policy) Admits(a Attributes) bool {
	return p.abe.Satisfaction(a.abe)
}

// policyParser is a recursive-descent recogniser for tkn20's grammar:
//
//	expression = term { "or" term }
//	term       = factor { "and" factor }
//	factor     = "not" factor | "(" expression ")" | name ":" value
//
// It writes the canonical form of what it reads to a strings.Builder.
type policyParser struct {
	input string
	toks  []token
	next  int
}

func (p *policyParser) peek() token { return p.toks[p.next] }

func (p *policyParser) take() token {
	t := p.toks[p.next]
	if t.kind != tokEOF {
		p.next++
	}
	return t
}

func (p *policyParser) errorf(t token, format string, args ...any) error {
	return &SyntaxError{"policy", p.input, t.pos + 1, fmt.Sprintf(format, args...)}
}

func (p *policyParser) expression(b *strings.Builder, depth int) error {
	if depth > maxDepth {
		return p.errorf(p.peek(), "nested more than %d deep", maxDepth)
	}
	if err := p.term(b, depth); err != nil {
		return err
	}
	for p.peek().kind == tokOr {
		p.take()
		b.WriteString(" or ")
		if err := p.term(b, depth); err != nil {
			return err
		}
	}
	return nil
}

func (p *policyParser) term(b *strings.Builder, depth int) error {
	if err := p.factor(b, depth); err != nil {
		return err
	}
	for p.peek().kind == tokAnd {
		p.take()
		b.WriteString(" and ")
		if err := p.factor(b, depth); err != nil {
			return err
		}
	}
	return nil
}

func (p *policyParser) factor(b *strings.Builder, depth int) error {
	if depth > maxDepth {
		return p.errorf(p.peek(), "nested more than %d deep", maxDepth)
	}
	t := p.take()
	switch t.kind {
	case tokNot:
		b.WriteString("not ")
		return p.factor(b, depth+1)
	case tokLParen:
		b.WriteByte('(')
		if err := p.expression(b, depth+1); err != nil {
			return err
		}
		if c := p.take(); c.kind != tokRParen {
			return p.errorf(c, "expected \")\" to close the \"(\" at column %d, found %s", t.pos+1, c.describe())
		}
		b.WriteByte(')')
		return nil
	case tokIdent:
		if c := p.take(); c.kind != tokColon {
			return p.errorf(c, "expected \":\" after attribute name %q, found %s", t.text, c.describe())
		}
		v := p.take()
		if v.kind != tokIdent {
			return p.errorf(v, "expected a value for attribute %q, found %s", t.text, v.describe())
		}
		b.WriteString(t.text + ": " + v.text)
		return nil
	}
	return p.errorf(t, "expected \"attribute: value\", \"not\" or \"(\", found %s", t.describe())
}
