package edge

// The loop's goroutines start with Go's 2 KiB of stack: waiting for a
// request in tls.Conn.Read needs 4 KiB, serving one about 8 KiB. Left
// alone, the stack doubles on the way each time, deep in TLS and parsing
// frames, and each doubling walks every frame on the stack to copy it:
// about 5% of the loop's CPU per proxied request in a profile, for a new
// goroutine per request (h1Conn.serve). Growing the stack up front, while
// only the loop's own frames are on it, costs a shallow copy instead. An
// idle connection's goroutine keeps 4 KiB either way.

// reserveStack4K grows the calling goroutine's stack, while it is
// shallow, to the 4 KiB a wait in tls.Conn.Read takes.
//
//go:noinline
func reserveStack4K() byte {
	var reserve [2 << 10]byte
	return touch(reserve[:])
}

// reserveStack8K grows the calling goroutine's stack, while it is
// shallow, to the 8 KiB serving a request takes.
//
//go:noinline
func reserveStack8K() byte {
	var reserve [5 << 10]byte
	return touch(reserve[:])
}

// touch reads b, so that the compiler keeps the caller's frame.
//
//go:noinline
func touch(b []byte) byte { return b[len(b)-1] }
