package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
)

// ErrUsage marks a command line that does not parse or misses something
// it needs: exit status 2, with the command's usage on standard error.
var ErrUsage = errors.New("usage")

// Usagef returns an error wrapping ErrUsage with the formatted message.
func Usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// Command is one subcommand, for a program's list of commands.
type Command struct {
	Name    string
	Args    string // synopsis of its arguments and flags
	Summary string // one line: what it does
}

// PrintCommands writes program's usage to w: its commands, and how to
// get one command's help.
func PrintCommands(w io.Writer, program string, cmds []Command) {
	fmt.Fprintf(w, "usage: %s COMMAND [flags]\n\ncommands:\n", program)
	width := 0
	for _, c := range cmds {
		width = max(width, len(c.Name))
	}
	for _, c := range cmds {
		fmt.Fprintf(w, "  %-*s  %s\n", width, c.Name, c.Summary)
	}
	fmt.Fprintf(w, "\nRun %s COMMAND -h (or %s help COMMAND) for a command's arguments and flags.\n", program, program)
}

// SetUsage makes fs's usage "usage: SYNOPSIS", then the description,
// then the flags fs defines (none: no flags section), written to
// fs.Output() so that Parse can send it to standard output or error.
func SetUsage(fs *flag.FlagSet, synopsis, description string) {
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "usage: %s\n", synopsis)
		if description != "" {
			fmt.Fprintf(w, "\n%s\n", description)
		}
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintln(w, "\nflags:")
			fs.PrintDefaults()
		}
	}
}

// Parse parses args into fs, allowing flags before, between and after
// the positional arguments, which it returns ("--" ends the flags).
//
// For -h, -help or --help it writes fs's usage to stdout and returns
// flag.ErrHelp: the caller exits 0. For a flag that does not parse it
// returns an error wrapping ErrUsage, having written nothing: Exit
// reports it. fs must use flag.ContinueOnError.
func Parse(fs *flag.FlagSet, args []string, stdout io.Writer) ([]string, error) {
	usage, out := fs.Usage, fs.Output()
	fs.Usage = func() {}
	fs.SetOutput(io.Discard)
	defer func() { fs.Usage = usage; fs.SetOutput(out) }()
	var positional []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			fs.Usage = usage
			fs.SetOutput(stdout)
			fs.Usage()
			return nil, flag.ErrHelp
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return positional, nil
		}
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			return append(positional, rest...), nil
		}
		positional = append(positional, rest[0])
		args = rest[1:]
	}
}

// Exit reports the error of command name (such as "keyctl show") on
// stderr and returns the exit status: 0 for nil and flag.ErrHelp (the
// usage was printed already), 2 for an error wrapping ErrUsage (after
// the message, fs's usage follows; fs may be nil), 1 for anything else.
func Exit(name string, fs *flag.FlagSet, stderr io.Writer, err error) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, ErrUsage):
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		if fs != nil && fs.Usage != nil {
			out := fs.Output()
			fs.SetOutput(stderr)
			fmt.Fprintln(stderr)
			fs.Usage()
			fs.SetOutput(out)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return 1
	}
}
