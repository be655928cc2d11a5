package excerpt

import "testing"

func TestOf(t *testing.T) {
	for _, c := range []struct {
		s    string
		n    int
		want string
	}{
		{"", 3, ""},
		{"abc", 3, "abc"},
		{"abcd", 3, "abc…"},
		{"abcd", 0, "…"},
	} {
		if got := Of(c.s, c.n); got != c.want {
			t.Errorf("Of(%q, %d) = %q, want %q", c.s, c.n, got, c.want)
		}
	}
}
