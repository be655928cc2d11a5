package keystore

import (
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// ErrBadName is returned for a server name that can never be a tenant's
// name: empty, too long, not valid IDNA, or carrying bytes that could
// escape a storage path. Callers refuse the handshake without touching
// storage.
var ErrBadName = errors.New("keystore: invalid server name")

// maxNameLen is the longest DNS name in presentation form (RFC 1035).
const maxNameLen = 253

// lookupProfile converts an SNI to its ASCII (A-label) form the way a
// browser would have produced it, without rejecting the underscores and
// other bytes some real hosts use; the byte checks below are ours.
var lookupProfile = idna.New(
	idna.MapForLookup(),
	idna.Transitional(false),
	idna.StrictDomainName(false),
	idna.BidiRule(),
)

// NormalizeName returns the canonical form of a server name as stored in
// the keystore: lower case, no trailing dot, IDNA A-labels. A leading
// "*." label is kept so wildcard names can be normalised with the same
// rules. Anything that could act as a path (separators, "..", NUL,
// control bytes) or exceeds 253 bytes is rejected with ErrBadName, so a
// hostile SNI never reaches the storage layer.
func NormalizeName(name string) (string, error) {
	// Most SNIs are already canonical: no allocation for them.
	if plainASCII(name) && checkLabels(name) == nil {
		return name, nil
	}
	if len(name) == 0 || len(name) > 4*maxNameLen {
		return "", fmt.Errorf("%w: length %d", ErrBadName, len(name))
	}
	if !utf8.ValidString(name) {
		return "", fmt.Errorf("%w: not UTF-8", ErrBadName)
	}
	name = strings.TrimSuffix(name, ".")
	wildcard := strings.HasPrefix(name, "*.")
	if wildcard {
		name = name[2:]
	}
	for i := 0; i < len(name); i++ {
		switch c := name[i]; {
		case c < 0x20 || c == 0x7f:
			return "", fmt.Errorf("%w: control byte 0x%02x", ErrBadName, c)
		case c == '/' || c == '\\' || c == '*' || c == ':':
			return "", fmt.Errorf("%w: byte %q", ErrBadName, c)
		}
	}
	ascii, err := lookupProfile.ToASCII(name)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrBadName, err)
	}
	ascii = strings.ToLower(ascii)
	// Some names convert to A-labels that IDNA then refuses to read back
	// (a label that mixes scripts under the Bidi rule, say "➵ℵ" →
	// "xn--4db764o"). Such a name could never be stored: refuse it here,
	// so the handshake path and the import path agree.
	if ascii != name {
		if again, err := lookupProfile.ToASCII(ascii); err != nil || again != ascii {
			return "", fmt.Errorf("%w: %q does not read back as itself", ErrBadName, ascii)
		}
	}
	if wildcard {
		ascii = "*." + ascii
	}
	if err := checkLabels(ascii); err != nil {
		return "", err
	}
	return ascii, nil
}

// checkLabels enforces, on the final ASCII form, the rules that keep a
// name safe to use as a storage key: at most 253 bytes, no empty label
// (so no "..", no leading dot), and only letters, digits, '-', '_' and a
// single leading "*" label.
func checkLabels(name string) error {
	if len(name) == 0 || len(name) > maxNameLen {
		return fmt.Errorf("%w: length %d", ErrBadName, len(name))
	}
	for first := true; ; first = false {
		label, rest, more := strings.Cut(name, ".")
		switch {
		case label == "":
			return fmt.Errorf("%w: empty label", ErrBadName)
		case label == "*" && first:
		case len(label) > 63:
			return fmt.Errorf("%w: label longer than 63 bytes", ErrBadName)
		default:
			for j := 0; j < len(label); j++ {
				if c := label[j]; !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
					return fmt.Errorf("%w: byte %q", ErrBadName, c)
				}
			}
		}
		if !more {
			return nil
		}
		name = rest
	}
}

// plainASCII reports whether name can skip IDNA processing: lower-case
// ASCII without punycode labels, wildcard or trailing dot, whose
// validity checkLabels alone decides.
func plainASCII(name string) bool {
	if name == "" || name[0] == '*' || name[len(name)-1] == '.' || strings.Contains(name, "xn--") {
		return false
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 0x80 || 'A' <= c && c <= 'Z' {
			return false
		}
	}
	return true
}

// WildcardOf returns the one-label wildcard that covers a normalised
// name ("a.b.example.com" → "*.b.example.com"), or "" when there is
// none: for a wildcard itself, or a name directly under a TLD. Wildcards
// never match deeper than one label, and a bare TLD is never wildcarded
// ("example.com" → "" would make "*.com" match). Lookup and the key
// server's index match names by this one rule.
func WildcardOf(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || strings.HasPrefix(name, "*.") {
		return ""
	}
	parent := name[i+1:]
	if !strings.Contains(parent, ".") {
		return ""
	}
	return "*." + parent
}
