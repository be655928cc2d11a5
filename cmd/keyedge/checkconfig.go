package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/keyedge/keyedge/internal/config"
)

// checkConfig runs `keyedge check-config --config FILE`: it checks the
// file as serve does at start and on SIGHUP (config.CheckEdge), lists
// every problem and exits 1 if there are any, like nginx -t.
func checkConfig(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("keyedge check-config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "edge.yaml", "config file to check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if _, err := config.CheckEdge(*path); err != nil {
		fmt.Fprintf(stderr, "keyedge check-config: %v\n", err)
		return 1
	}
	fmt.Fprintf(stdout, "keyedge: %s: configuration OK\n", *path)
	return 0
}
