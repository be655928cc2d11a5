package main

import (
	"bufio"
	"errors"
	"fmt"
	"strings"

	"github.com/keyedge/keyedge/internal/cli"
	"golang.org/x/term"
)

// errNotConfirmed is returned when the operator answers no.
var errNotConfirmed = errors.New("not confirmed: nothing changed")

// confirm asks whether to do action ("remove x") on stderr and reads
// y/N from stdin when stdin is a terminal. When it is not (a script, a
// pipe), it refuses with a usage error naming --yes rather than
// guessing: a script must say so.
func (e *env) confirm(action string) error {
	if e.stdin == nil || !term.IsTerminal(int(e.stdin.Fd())) {
		return cli.Usagef("cannot ask for confirmation (standard input is not a terminal); pass --yes to %s", action)
	}
	fmt.Fprintf(e.stderr, "%s? [y/N] ", action)
	answer, _ := bufio.NewReader(e.stdin).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return nil
	}
	return errNotConfirmed
}
