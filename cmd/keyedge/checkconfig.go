package main

import (
	"fmt"
	"io"

	"github.com/keyedge/keyedge/internal/config"
)

// checkConfig runs `keyedge check-config --config FILE`: it checks the
// file as serve does at start and on SIGHUP (config.CheckEdge), and
// returns every problem in one error (exit 1), like nginx -t.
func checkConfig(path string, stdout io.Writer) error {
	if _, err := config.CheckEdge(path); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "keyedge: %s: configuration OK\n", path)
	return nil
}
