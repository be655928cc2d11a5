package main

import (
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/keyedge/keyedge/internal/config"
)

// TestClientKeepAlive checks the TCP keep-alive of a client connection
// accepted on the socket keyedge serves on, as the kernel has it
// (getsockopt): off unless limits.tcp_keepalive is set, on a new socket
// and on one handed over by a previous process (net.FileListener, as
// tableflip opens it).
func TestClientKeepAlive(t *testing.T) {
	for _, tt := range []struct {
		name, limits string
		on           bool
		idle         int // TCP_KEEPIDLE, seconds, when on
	}{
		{"default", "", false, 0},
		{"set", "limits:\n  tcp_keepalive: 45s\n", true, 45},
	} {
		path := filepath.Join(t.TempDir(), "edge.yaml")
		if err := os.WriteFile(path, []byte("keystore: keystore\nfleet_key_file: fleet.key\n"+tt.limits), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.LoadEdge(path)
		if err != nil {
			t.Fatal(err)
		}
		lc := cfg.ClientListenConfig()
		fresh, err := sockets{}.Listen(lc, "tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { fresh.Close() })
		handedOver := keepAliveListener{fileListener(t, fresh), keepAliveOf(lc)}
		for kind, ln := range map[string]net.Listener{"new socket": fresh, "handed-over socket": handedOver} {
			on, idle := acceptedKeepAlive(t, ln)
			if on != tt.on || (on && idle != tt.idle) {
				t.Errorf("%s, %s: accepted connection has SO_KEEPALIVE %v, TCP_KEEPIDLE %ds; want %v, %ds",
					tt.name, kind, on, idle, tt.on, tt.idle)
			}
		}
	}
}

// fileListener is a second listener on ln's socket, opened from its file
// descriptor as a process that inherits it opens it.
func fileListener(t *testing.T, ln net.Listener) net.Listener {
	t.Helper()
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fl, err := net.FileListener(f)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fl.Close() })
	return fl
}

// acceptedKeepAlive connects to ln and reads SO_KEEPALIVE and
// TCP_KEEPIDLE of the connection ln accepts.
func acceptedKeepAlive(t *testing.T, ln net.Listener) (on bool, idleSeconds int) {
	t.Helper()
	client, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var keepAlive int
	var errs [2]error
	if err := raw.Control(func(fd uintptr) {
		keepAlive, errs[0] = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_KEEPALIVE)
		idleSeconds, errs[1] = syscall.GetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_KEEPIDLE)
	}); err != nil {
		t.Fatal(err)
	}
	if errs[0] != nil || errs[1] != nil {
		t.Fatalf("getsockopt: %v, %v", errs[0], errs[1])
	}
	return keepAlive != 0, idleSeconds
}
