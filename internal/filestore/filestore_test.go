package filestore_test

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/internal/filestore"
)

// TestReadFile reads what os.ReadFile reads: empty, small and large
// files, a file the kernel gives no size for, and the same errors for a
// missing file and a directory.
func TestReadFile(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name    string
		content []byte
	}{
		{"empty", []byte{}},
		{"small", []byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef ecdsa\n")},
		{"large", bytes.Repeat([]byte("record "), 100_000)},
		// Around ReadFile's buffer size (8 KiB): a read that fills it is
		// not the end of the file.
		{"buffer less one", bytes.Repeat([]byte{'b'}, 8<<10-1)},
		{"buffer", bytes.Repeat([]byte{'b'}, 8<<10)},
		{"buffer and one", bytes.Repeat([]byte{'b'}, 8<<10+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if err := os.WriteFile(path, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := filestore.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.content) || got == nil {
				t.Fatalf("read %d bytes (nil: %v), want the %d written", len(got), got == nil, len(tc.content))
			}
			for _, size := range []int{0, 1, len(tc.content), len(tc.content) + 1} {
				buf := make([]byte, size)
				got, err := filestore.ReadInto(path, buf)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, tc.content) {
					t.Fatalf("ReadInto a buffer of %d read %d bytes, want the %d written", size, len(got), len(tc.content))
				}
				if inBuf := size > 0 && cap(got) > 0 && &got[:1][0] == &buf[0]; inBuf != (size > len(tc.content)) {
					t.Fatalf("ReadInto a buffer of %d bytes, file of %d: result in the buffer: %v", size, len(tc.content), inBuf)
				}
			}
		})
	}
	t.Run("no size", func(t *testing.T) {
		// /proc files report size 0 and have content: read to the end.
		const path = "/proc/self/status"
		want, err := os.ReadFile(path)
		if err != nil {
			t.Skip(err)
		}
		got, err := filestore.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(got), "Name:") || len(got) < len(want)/2 {
			t.Fatalf("read %q, want the whole of %s", got, path)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, err := filestore.ReadFile(filepath.Join(dir, "missing"))
		var pe *fs.PathError
		if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &pe) {
			t.Fatalf("got %v, want a *fs.PathError wrapping fs.ErrNotExist", err)
		}
	})
	t.Run("directory", func(t *testing.T) {
		if _, err := filestore.ReadFile(dir); err == nil {
			t.Fatal("read a directory without an error")
		}
	})
}

// TestStorage: Load reads what Store wrote under the same key, and a
// missing key is fs.ErrNotExist, as with certmagic.FileStorage.
func TestStorage(t *testing.T) {
	ctx := context.Background()
	st := filestore.New(t.TempDir())
	if err := st.Store(ctx, "certs/ab/record", []byte("KER1")); err != nil {
		t.Fatal(err)
	}
	got, err := st.Load(ctx, "certs/ab/record")
	if err != nil || string(got) != "KER1" {
		t.Fatalf("Load = %q, %v; want KER1", got, err)
	}
	if _, err := st.Load(ctx, "certs/ab/other"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing key: %v, want fs.ErrNotExist", err)
	}
	if got, err := st.LoadInto(ctx, "certs/ab/record", make([]byte, 16)); err != nil || string(got) != "KER1" {
		t.Fatalf("LoadInto = %q, %v; want KER1", got, err)
	}
}

// BenchmarkReadFile reads a record-sized file (2.3 KB, an ECDSA
// tenant's) with ReadFile and with os.ReadFile, in the page cache.
//
//	go test -run '^$' -bench ReadFile -cpu 1 ./internal/filestore
func BenchmarkReadFile(b *testing.B) {
	path := filepath.Join(b.TempDir(), "record")
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, 2331), 0o600); err != nil {
		b.Fatal(err)
	}
	for _, r := range []struct {
		name string
		read func(string) ([]byte, error)
	}{{"filestore", filestore.ReadFile}, {"os", os.ReadFile}} {
		b.Run(r.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := r.read(path); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
