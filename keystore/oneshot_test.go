package keystore_test

import (
	"context"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/keystore"
)

// TestOneShot: a Store opened for one command (keyctl) reads the journal
// head at Open and nothing more in the background: no journal polls, no
// name filter, no policy key warm-up, where a serving Store over the
// same keystore does all three. It still reads and writes as any Store:
// it finds a tenant written after it opened, and a serving Store follows
// its write.
func TestOneShot(t *testing.T) {
	f, w := geoFixture(t)
	b := f.bundle(t, "", "restricted.example.com")
	b.Meta.Policy = "region: eu"
	put(t, w, b)
	put(t, w, f.bundle(t, "", "before.example.com"))

	const poll = 10 * time.Millisecond
	node := nodeKey(t, "region: eu")
	servingStorage := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
	serving := f.open(t, keystore.Options{Storage: servingStorage, NodeKey: node, PollInterval: poll})
	oneShotStorage := &countingStorage{Storage: &certmagic.FileStorage{Path: f.dir}}
	oneShot := f.open(t, keystore.Options{Storage: oneShotStorage, NodeKey: node, PollInterval: poll, OneShot: true})

	eventually(t, 10*time.Second, "the serving Store polls the journal and warms its policy key up", func() bool {
		return servingStorage.count("changes") > 5 && servingStorage.count("policies") > 0
	})
	if n := servingStorage.count(filterFile); n == 0 {
		t.Errorf("serving Store read the name filter %d times, want at least once", n)
	}
	time.Sleep(10 * poll)
	for kind, want := range map[string]int{"changes": 1, filterFile: 0, "policies": 0} {
		if n := oneShotStorage.count(kind); n != want {
			t.Errorf("one-shot Store read %s %d times while idle, want %d", kind, n, want)
		}
	}

	put(t, w, f.bundle(t, "", "after.example.com"))
	for _, name := range []string{"before.example.com", "after.example.com"} {
		if _, err := oneShot.Lookup(context.Background(), name); err != nil {
			t.Errorf("one-shot Lookup(%s): %v", name, err)
		}
	}
	if err := openKey(oneShot, "restricted.example.com"); err != nil {
		t.Errorf("one-shot Store opening a restricted key on demand: %v", err)
	}

	put(t, oneShot, f.bundle(t, "", "written.example.com"))
	eventually(t, 10*time.Second, "the serving Store follows the one-shot Store's write", func() bool {
		_, err := serving.Lookup(context.Background(), "written.example.com")
		return err == nil
	})
	if err := oneShot.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
}
