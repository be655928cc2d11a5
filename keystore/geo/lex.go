package geo

import (
	"errors"
	"fmt"
	"strings"
)

// ErrSyntax is wrapped by every error ParsePolicy and ParseAttributes
// return for malformed input.
var ErrSyntax = errors.New("geo: syntax error")

// SyntaxError reports malformed policy or attribute text and the column
// (1-based, in bytes) of the offending token.
type SyntaxError struct {
	What   string // "policy" or "attributes"
	Input  string
	Column int
	Msg    string
}

func (e *SyntaxError) Error() string {
	return fmt.Sprintf("geo: %s %q: column %d: %s", e.What, e.Input, e.Column, e.Msg)
}

func (e *SyntaxError) Unwrap() error { return ErrSyntax }

type tokenKind int

const (
	tokEOF tokenKind = iota
	tokIdent
	tokColon
	tokComma
	tokLParen
	tokRParen
	tokAnd
	tokOr
	tokNot
)

// token is one lexeme of policy or attribute text. text is lower-cased.
type token struct {
	kind tokenKind
	text string
	pos  int // byte offset in the input
}

func (t token) describe() string {
	if t.kind == tokEOF {
		return "end of input"
	}
	return fmt.Sprintf("%q", t.text)
}

var (
	keywords    = map[string]tokenKind{"and": tokAnd, "or": tokOr, "not": tokNot}
	punctuation = map[byte]tokenKind{':': tokColon, ',': tokComma, '(': tokLParen, ')': tokRParen}
)

// maxInput bounds policy and attribute text, both as given and in the
// canonical form that is stored (which can be longer: "a:b" becomes
// "a: b"), so whatever is stored parses again; real policies are short.
const maxInput = 1024

// checkCanonical refuses input whose canonical form exceeds maxInput.
func checkCanonical(what, input, canonical string) error {
	if len(canonical) > maxInput {
		return &SyntaxError{what, input, 1, fmt.Sprintf("canonical form is %d bytes, longer than %d", len(canonical), maxInput)}
	}
	return nil
}

// lex splits s into tokens. Identifiers are runs of ASCII letters,
// digits and underscores, as tkn20 reads them, folded to lower case.
func lex(what, s string) ([]token, error) {
	if len(s) > maxInput {
		return nil, &SyntaxError{what, s, maxInput + 1, fmt.Sprintf("longer than %d bytes", maxInput)}
	}
	var toks []token
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			i++
			continue
		case isIdentByte(c):
			j := i
			for j < len(s) && isIdentByte(s[j]) {
				j++
			}
			word := strings.ToLower(s[i:j])
			kind, ok := keywords[word]
			if !ok {
				kind = tokIdent
			}
			toks = append(toks, token{kind, word, i})
			i = j
			continue
		}
		kind, ok := punctuation[c]
		if !ok {
			return nil, &SyntaxError{what, s, i + 1, fmt.Sprintf("unexpected character %q; names and values are letters, digits and _", rune(c))}
		}
		toks = append(toks, token{kind, string(c), i})
		i++
	}
	return append(toks, token{tokEOF, "", len(s)}), nil
}

func isIdentByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}
