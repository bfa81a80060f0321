package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// cmdFlags is a subcommand's flag set together with the form of its command line, so that every
// subcommand answers -h and a wrong command line the same way.
type cmdFlags struct {
	*flag.FlagSet
	// synopsis is the command line's form, as the usage line shows it.
	synopsis string
	// args names the positional arguments in messages ("METHOD and URL"); empty when the
	// command takes none.
	args string
	// minArgs and maxArgs bound the number of positional arguments; maxArgs < 0 sets no bound.
	minArgs, maxArgs int
}

// newCmdFlags returns the flag set of `partroute NAME`, which takes flags only.
func newCmdFlags(name, synopsis string) *cmdFlags {
	c := &cmdFlags{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), synopsis: synopsis}
	c.Usage = func() {
		fmt.Fprintf(c.Output(), "usage: %s\n\nflags:\n", c.synopsis)
		c.PrintDefaults()
	}
	return c
}

// positional sets the positional arguments the command takes: names for messages, and how many
// (maxArgs < 0: any number from minArgs).
func (c *cmdFlags) positional(names string, minArgs, maxArgs int) *cmdFlags {
	c.args, c.minArgs, c.maxArgs = names, minArgs, maxArgs
	return c
}

// parse reads args. It returns ok = false, with the exit code, when the command is to stop
// there: help was asked for (printed on stdout, exit code 0), or the command line is wrong
// (said on stderr, exit code 1).
//
// The flag package stops reading flags at the first argument that is not one, so a flag written
// after the positional arguments would be taken for one of them, or make the count wrong with
// no word of why: such a flag is named instead. After "--" every argument is positional.
func (c *cmdFlags) parse(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	// The flag package prints an error and the whole flag list; only help is printed that way,
	// and an error is told in one line.
	c.SetOutput(io.Discard)
	err := c.Parse(args)
	c.SetOutput(stderr)
	if errors.Is(err, flag.ErrHelp) {
		c.SetOutput(stdout)
		c.Usage()
		c.SetOutput(stderr)
		return 0, false
	}
	if err != nil {
		return c.fail(stderr, "%v", err), false
	}
	rest := c.Args()
	terminated := len(rest) < len(args) && args[len(args)-len(rest)-1] == "--"
	if c.args == "" && len(rest) > 0 {
		return c.fail(stderr, "unexpected argument %q; the command takes flags only", rest[0]), false
	}
	if !terminated {
		for _, a := range rest {
			if looksLikeFlag(a) {
				return c.fail(stderr, "flags go before %s: %q came after them", c.args, a), false
			}
		}
	}
	if len(rest) < c.minArgs || (c.maxArgs >= 0 && len(rest) > c.maxArgs) {
		got := "nothing"
		if len(rest) > 0 {
			quoted := make([]string, len(rest))
			for i, a := range rest {
				quoted[i] = strconv.Quote(a)
			}
			got = strings.Join(quoted, " ")
		}
		return c.fail(stderr, "expected %s, got %s", c.args, got), false
	}
	return 0, true
}

// fail tells what is wrong with the command line, then its usage line, on stderr, and returns
// the exit code of a usage error.
func (c *cmdFlags) fail(stderr io.Writer, format string, args ...any) int {
	fmt.Fprintf(stderr, "partroute %s: %s\n", c.Name(), fmt.Sprintf(format, args...))
	fmt.Fprintf(stderr, "usage: %s\n", c.synopsis)
	return 1
}

// looksLikeFlag reports whether a positional argument was meant as a flag. A lone "-" is an
// argument (standard input, by convention).
func looksLikeFlag(arg string) bool {
	return len(arg) > 1 && arg[0] == '-'
}

// addressList is a flag that takes host:port addresses, comma-separated, repeated, or both;
// each use adds to the list.
type addressList []string

func (l *addressList) String() string { return strings.Join(*l, ",") }

func (l *addressList) Set(s string) error {
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			return fmt.Errorf("empty address in %q", s)
		}
		*l = append(*l, a)
	}
	return nil
}
