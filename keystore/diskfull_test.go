package keystore_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/keyedge/keyedge/internal/proctest"
	"github.com/keyedge/keyedge/internal/testpki"
	"github.com/keyedge/keyedge/keystore"
)

// diskPage is the allocation unit of tmpfs: a write needs whole pages.
const diskPage = 4096

// TestPutOnFullDisk runs Put on a real tmpfs filled so that only n pages
// are free, for every n from none to more than an import needs, so that
// each write of an import (lock file, sealed key, record, name filter,
// name file, trash mark, journal entry, journal head) fails in turn. After
// each, with the space freed again: Put's error says truthfully whether
// the certificate is served (a fresh Store finds it exactly when Put
// returned nil, and a Store that was already following the journal finds
// it too); no certificate file is left without a name referring to it,
// no temporary or lock file is left; and the same Put then succeeds.
func TestPutOnFullDisk(t *testing.T) {
	root := proctest.Tmpfs(t, 1<<20)
	f := newFixture(t)
	f.dir = filepath.Join(root, "keystore")
	if err := os.Mkdir(f.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := keystore.Init(ctx, &certmagic.FileStorage{Path: f.dir}); err != nil {
		t.Fatal(err)
	}
	writer := f.open(t, keystore.Options{})
	follower := f.open(t, keystore.Options{PollInterval: 20 * time.Millisecond, NegativeTTL: 20 * time.Millisecond})
	put(t, writer, f.bundle(t, testpki.ECDSAP256, "renewed.example"))

	const maxPages = 14
	successes := 0
	for _, tc := range []struct {
		kind string
		name func(pages int) string
	}{
		{"new", func(pages int) string { return fmt.Sprintf("new%d.example", pages) }},
		{"renewal", func(int) string { return "renewed.example" }},
	} {
		for pages := range maxPages + 1 {
			t.Run(fmt.Sprintf("%s/%d-pages-free", tc.kind, pages), func(t *testing.T) {
				name := tc.name(pages)
				before := lookupIDs(t, follower, name)
				b := f.bundle(t, testpki.ECDSAP256, name)
				free := proctest.Fill(t, root, int64(pages)*diskPage)
				ids, err := writer.Put(ctx, b)
				free()
				checkKeystoreFiles(t, f.dir)

				fresh := lookupIDs(t, f.open(t, keystore.Options{}), name)
				if err == nil {
					successes++
					if !slices.Contains(fresh, ids[0]) {
						t.Fatalf("Put succeeded but a fresh Store serves %v for %s, not %s", fresh, name, ids[0])
					}
					proctest.Eventually(t, 10*time.Second, "the following Store serves the new certificate", func() bool {
						return slices.Contains(lookupIDs(t, follower, name), ids[0])
					})
					return
				}
				t.Logf("Put with %d pages free: %v", pages, err)
				if !slices.Equal(fresh, before) {
					t.Fatalf("Put failed (%v) but a fresh Store serves %v for %s, not %v as before", err, fresh, name, before)
				}
				if got := lookupIDs(t, follower, name); !slices.Equal(got, before) {
					t.Fatalf("Put failed (%v) but the following Store serves %v for %s, not %v as before", err, got, name, before)
				}
				ids = put(t, writer, b) // with the space back, no lock or leftover is in the way
				proctest.Eventually(t, 10*time.Second, "the following Store serves the certificate imported again", func() bool {
					return slices.Contains(lookupIDs(t, follower, name), ids[0])
				})
				checkKeystoreFiles(t, f.dir)
			})
		}
	}
	if successes < 2 {
		t.Errorf("only %d imports succeeded with up to %d pages free: the sizes tested no longer span an import", successes, maxPages)
	}
}

// lookupIDs returns the IDs of the certificates s serves for name, none
// when it has none.
func lookupIDs(t *testing.T, s *keystore.Store, name string) []string {
	t.Helper()
	e, err := s.Lookup(context.Background(), name)
	if err != nil {
		if !errors.Is(err, keystore.ErrNotFound) {
			t.Fatalf("Lookup(%s): %v", name, err)
		}
		return nil
	}
	var ids []string
	for _, c := range e.Certs {
		ids = append(ids, c.ID)
	}
	slices.Sort(ids)
	return ids
}

// keystoreFile matches every file a keystore directory may hold when no
// writer is running; its groups are the certificate ID of a cert file,
// and of a trash mark.
var keystoreFile = regexp.MustCompile(`^(?:namefilter|changes/(?:head|\d{20})|names/[0-9a-f]{2}/[a-z0-9.*-]+|certs/[0-9a-f]{2}/([0-9a-f]{64})/(?:record|key\.sealed)|trash/([0-9a-f]{64}))$`)

// checkKeystoreFiles fails t if the keystore directory holds a file no
// writer should leave behind (a temporary file, a lock file) or a
// certificate no name file refers to and none is retiring.
func checkKeystoreFiles(t *testing.T, dir string) {
	t.Helper()
	referenced := map[string]bool{}
	var certFiles []string
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		m := keystoreFile.FindStringSubmatch(filepath.ToSlash(rel))
		switch {
		case m == nil:
			t.Errorf("left behind: %s", rel)
		case m[1] != "":
			certFiles = append(certFiles, rel)
		case m[2] != "":
			referenced[m[2]] = true
		case strings.HasPrefix(rel, "names"):
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for line := range strings.Lines(string(data)) {
				id, _, _ := strings.Cut(line, " ")
				referenced[id] = true
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range certFiles {
		if id := filepath.Base(filepath.Dir(file)); !referenced[id] {
			t.Errorf("orphan: %s (no name refers to certificate %s)", file, id)
		}
	}
}

// fillingStorage is a real FileStorage on a disk that fills the first
// time a key under prefix is stored, and stays full until full is
// cleared: every Store fails with ENOSPC meanwhile, deletes succeed.
type fillingStorage struct {
	keystore.Storage
	prefix string
	filled atomic.Bool // the disk has filled once
	full   atomic.Bool
}

func (f *fillingStorage) Store(ctx context.Context, key string, value []byte) error {
	if strings.HasPrefix(key, f.prefix) && f.filled.CompareAndSwap(false, true) {
		f.full.Store(true)
	}
	if f.full.Load() {
		return &fs.PathError{Op: "write", Path: key, Err: syscall.ENOSPC}
	}
	return f.Storage.Store(ctx, key, value)
}

// TestPutNotUndone: a renewal whose journal entry cannot be written on a
// disk that stays full cannot put its name file back either. Put says
// so with ErrIncomplete, keeps the new certificate the name refers to
// (never a name without its certificate), and completes when run again.
func TestPutNotUndone(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	old := put(t, f.open(t, keystore.Options{}), f.bundle(t, testpki.ECDSAP256, "renewed.example"))
	st := &fillingStorage{Storage: &certmagic.FileStorage{Path: f.dir}, prefix: "changes/"}
	writer := f.open(t, keystore.Options{Storage: st})

	b := f.bundle(t, testpki.ECDSAP256, "renewed.example")
	_, err := writer.Put(ctx, b)
	if !errors.Is(err, keystore.ErrIncomplete) {
		t.Fatalf("Put on a disk that stays full = %v, want ErrIncomplete", err)
	}
	t.Logf("Put: %v", err)
	checkKeystoreFiles(t, f.dir)
	if got := lookupIDs(t, f.open(t, keystore.Options{}), "renewed.example"); len(got) != 1 {
		t.Fatalf("after an incomplete renewal a fresh Store serves %v, want one certificate", got)
	}

	st.full.Store(false)
	ids := put(t, writer, b)
	if got := lookupIDs(t, f.open(t, keystore.Options{}), "renewed.example"); !slices.Equal(got, ids) || slices.Equal(got, old) {
		t.Fatalf("after the renewal ran again a fresh Store serves %v, want %v", got, ids)
	}
	checkKeystoreFiles(t, f.dir)
}
