//go:build !unix

package proctest

import "os"

// continueProcess does nothing: processes are stopped (SIGSTOP) only on
// Unix (see signal_unix.go).
func continueProcess(*os.Process) {}
