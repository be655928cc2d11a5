//go:build unix

package proctest

import (
	"os"
	"syscall"
)

// continueProcess continues p if it was stopped (SIGCONT).
func continueProcess(p *os.Process) { p.Signal(syscall.SIGCONT) }
