package edge

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/keyedge/keyedge/internal/testclock"
)

var (
	secretA = bytes.Repeat([]byte{0xa1}, 32)
	secretB = bytes.Repeat([]byte{0xb2}, 32)
)

func TestTicketKeysRotate(t *testing.T) {
	tk := &TicketKeys{Secret: secretA, Period: time.Hour, Accept: 2}
	t0 := time.Date(2026, 11, 28, 10, 30, 0, 0, time.UTC)
	now := tk.Keys(t0)
	if len(now) != 4 {
		t.Fatalf("%d keys, want current, next and 2 previous", len(now))
	}
	// Pinned: nodes of a fleet running different builds must derive the
	// same keys, or sessions stop resuming across them mid-upgrade.
	if got, want := hex.EncodeToString(now[0][:]), "b69e9a2196c5f46bf75391688445c1991ba9bcf3290dd2c8d56536be7b11ae24"; got != want {
		t.Errorf("current key %s, want %s (the derivation changed)", got, want)
	}
	if !slices.Equal(now, tk.Keys(t0.Add(29*time.Minute))) {
		t.Error("keys changed within an epoch")
	}
	if got := tk.next(t0); !got.Equal(time.Date(2026, 11, 28, 11, 0, 0, 0, time.UTC)) {
		t.Errorf("next epoch at %v, want 11:00", got)
	}
	// The key encrypting now decrypts for Accept more epochs, then not.
	for h, want := range []bool{true, true, true, false} {
		later := tk.Keys(t0.Add(time.Duration(h) * time.Hour))
		if slices.Contains(later, now[0]) != want {
			t.Errorf("%dh later: current key accepted = %v, want %v", h, !want, want)
		}
		if h > 0 && later[0] == now[0] {
			t.Errorf("%dh later: still encrypting with the old key", h)
		}
	}
	// A node whose clock is ahead encrypts with the next epoch's key,
	// which this node already accepts.
	if ahead := tk.Keys(t0.Add(time.Hour)); !slices.Contains(now, ahead[0]) {
		t.Error("a ticket from a node one epoch ahead is not accepted")
	}
	// Another secret shares nothing; as Previous it decrypts, never encrypts.
	other := (&TicketKeys{Secret: secretB}).Keys(t0)
	for _, k := range other {
		if slices.Contains(now, k) {
			t.Fatal("two secrets derived a common key")
		}
	}
	rotating := (&TicketKeys{Secret: secretB, Previous: secretA}).Keys(t0)
	if rotating[0] != other[0] || !slices.Contains(rotating, now[0]) {
		t.Error("during a secret rotation: want the new secret to encrypt and the old one to decrypt")
	}
	for _, bad := range []*TicketKeys{{Secret: secretA[:31]}, {Secret: secretA, Previous: []byte("short")}, {Secret: secretA, Period: time.Millisecond}} {
		if bad.check() == nil {
			t.Errorf("check accepted %+v", bad)
		}
	}
}

// TestFleetSessionResumption: three edge nodes with one fleet secret
// resume each other's sessions; a node with another secret, or one
// rotating to a new secret without the old, does a full handshake; a
// node rotating with the old secret as Previous resumes; and once the
// epochs accepted have passed, a ticket no longer resumes anywhere. The
// nodes share a clock the test steps through epochs.
func TestFleetSessionResumption(t *testing.T) {
	clock := testclock.New(time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC))
	fleet := &TicketKeys{Secret: secretA, Period: time.Hour, Accept: 1, Now: clock.Now}
	w := newWorld(t, 1, Options{Tickets: fleet})
	servers := []*Server{w.srv}
	node := func(tk *TicketKeys) string {
		srv, err := NewServer(Options{Store: w.store, Tickets: tk})
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, srv)
		return serve(t, srv)
	}
	b, c := node(fleet), node(fleet)
	rotating := node(&TicketKeys{Secret: secretB, Previous: secretA, Period: time.Hour, Now: clock.Now})
	stranger := node(&TicketKeys{Secret: secretB, Period: time.Hour, Now: clock.Now})
	// advance moves the fleet's clock and has every node take the keys
	// of the new time at once, as its rotation would at the epoch's start.
	advance := func(d time.Duration) {
		clock.Advance(d)
		for _, srv := range servers {
			srv.installTicketKeys()
		}
	}

	cache := tls.NewLRUClientSessionCache(4)
	dial := func(addr string) bool {
		t.Helper()
		cfg := w.tlsConfig("t0.keyedge.test")
		cfg.ClientSessionCache = cache
		cfg.NextProtos = []string{"http/1.1"}
		conn, err := w.handshakeTo(addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// TLS 1.3 tickets arrive after the handshake, ahead of any
		// response: reading a response is sure to have received them.
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: t0.keyedge.test\r\nConnection: close\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("reading a response from %s: %v", addr, err)
		}
		resp.Body.Close()
		return conn.ConnectionState().DidResume
	}
	if dial(w.addr) {
		t.Fatal("the first connection resumed")
	}
	for _, tc := range []struct {
		name, addr string
		want       bool
	}{
		{"node B", b, true},
		{"node C", c, true},
		{"a node rotating to a new secret, old one kept", rotating, true},
		{"a node with another secret", stranger, false},
	} {
		// Each full handshake replaces the cached session: start again
		// from a ticket of the first node.
		cache.Put("t0.keyedge.test", nil)
		dial(w.addr)
		if got := dial(tc.addr); got != tc.want {
			t.Errorf("%s: resumed = %v, want %v", tc.name, got, tc.want)
		}
	}

	// A ticket of this epoch still resumes in the next (accept: 1), and
	// no longer in the one after.
	for _, step := range []struct {
		epochs int
		want   bool
	}{{1, true}, {2, false}} {
		cache.Put("t0.keyedge.test", nil)
		dial(w.addr)
		advance(time.Duration(step.epochs) * fleet.Period)
		if got := dial(b); got != step.want {
			t.Errorf("a ticket %d epoch(s) old: resumed = %v, want %v", step.epochs, got, step.want)
		}
	}
}

func TestReadTicketSecret(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", strings.Repeat("ab", 32)+"\n", 0o600)
	secret, err := ReadTicketSecret(good)
	if err != nil || len(secret) != 32 || secret[0] != 0xab {
		t.Fatalf("ReadTicketSecret = %x, %v", secret, err)
	}
	for name, tc := range map[string]struct {
		text string
		mode os.FileMode
	}{
		"short":     {strings.Repeat("ab", 31), 0o600},
		"not hex":   {strings.Repeat("zz", 32), 0o600},
		"exposed":   {strings.Repeat("ab", 32), 0o644},
		"empty":     {"", 0o600},
		"two lines": {strings.Repeat("ab", 32) + "\n" + strings.Repeat("cd", 32), 0o600},
	} {
		if _, err := ReadTicketSecret(write(name, tc.text, tc.mode)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
