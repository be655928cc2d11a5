package backend

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/keyedge/keyedge/internal/filestore"
	"github.com/keyedge/keyedge/internal/redistest"
	"github.com/keyedge/keyedge/keystore/redisstore"
)

func TestOpen(t *testing.T) {
	ctx := context.Background()
	st, release, err := Open(ctx, t.TempDir(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	release()
	if _, ok := st.(*filestore.Storage); !ok {
		t.Errorf("a directory opened as %T", st)
	}

	srv := redistest.Start(t)
	st, release, err = Open(ctx, "redis://"+srv.Addr+"/2?prefix=fleet1", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if _, ok := st.(*redisstore.Storage); !ok {
		t.Fatalf("a redis URL opened as %T", st)
	}
	if err := st.Store(ctx, "a/b", []byte("x")); err != nil {
		t.Fatal(err)
	}
	// The prefix and database keep it apart from another keystore.
	other, release2, err := Open(ctx, "redis://"+srv.Addr+"/2?prefix=fleet2", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if other.Exists(ctx, "a/b") {
		t.Error("two prefixes share a key")
	}

	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ location, pw, want string }{
		{"redis://:hunter2@" + srv.Addr, "", "not in the URL"},
		{"redis://127.0.0.1:1", "", "127.0.0.1:1"},
		{"redis://" + srv.Addr + "/x", "", "keystore URL"},
		{"redis://" + srv.Addr + "?op_timeout=-1s", "", "op_timeout"},
		{"redis://" + srv.Addr + "?op_timeout=soon", "", "op_timeout"},
		{t.TempDir(), pwFile, "goes with a redis:// keystore"},
	} {
		if _, _, err := Open(ctx, tc.location, tc.pw, nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q, %q) = %v, want an error containing %q", tc.location, tc.pw, err, tc.want)
		}
	}

	// A server with a password: the password file opens it, nothing else.
	locked := redistest.Start(t, "--requirepass", "s3cret")
	if _, _, err := Open(ctx, "redis://"+locked.Addr, "", nil); err == nil {
		t.Error("opened a password-protected Redis without the password")
	}
	st, release3, err := Open(ctx, "redis://"+locked.Addr, pwFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer release3()
	if err := st.Store(ctx, "k", []byte("v")); err != nil {
		t.Error(err)
	}
}
