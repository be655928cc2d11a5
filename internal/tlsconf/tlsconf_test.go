package tlsconf

import (
	"crypto/tls"
	"slices"
	"testing"
)

func TestParseAndNameCurves(t *testing.T) {
	names := []string{"X25519MLKEM768", "X25519", "P-256", "P-384", "P-521"}
	ids, err := ParseCurves(names)
	want := []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256, tls.CurveP384, tls.CurveP521}
	if err != nil || !slices.Equal(ids, want) {
		t.Fatalf("ParseCurves(%q) = %v, %v; want %v", names, ids, err, want)
	}
	for i, id := range ids {
		if got := CurveName(id); got != names[i] {
			t.Errorf("CurveName(%v) = %q, want %q", id, got, names[i])
		}
	}
	if got := CurveName(tls.CurveID(0x1234)); got != tls.CurveID(0x1234).String() {
		t.Errorf("CurveName of an unknown group = %q", got)
	}
	if ids, err := ParseCurves(nil); ids != nil || err != nil {
		t.Errorf("ParseCurves(nil) = %v, %v", ids, err)
	}
	for _, bad := range []string{"X448", "p-256", " X25519", ""} {
		if _, err := ParseCurves([]string{"X25519", bad}); err == nil {
			t.Errorf("ParseCurves accepted %q", bad)
		}
	}
}

// Every caller gets its own slice: one that changes its copy (or a
// tls.Config it went into) changes no other.
func TestDefaultCurvesIsACopy(t *testing.T) {
	a := DefaultCurves()
	want := []tls.CurveID{tls.X25519MLKEM768, tls.X25519, tls.CurveP256}
	if !slices.Equal(a, want) {
		t.Fatalf("DefaultCurves() = %v, want %v", a, want)
	}
	a[0] = tls.CurveP521
	if b := DefaultCurves(); !slices.Equal(b, want) {
		t.Errorf("after changing one copy, DefaultCurves() = %v", b)
	}
}
