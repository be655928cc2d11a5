// Package excerpt shortens text quoted in error messages and logs
// (a malformed line, a response body, a process's output), so one bad
// input cannot flood them.
package excerpt

// Of returns s if it is at most n bytes long, or else its first n bytes
// followed by "…".
func Of(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
