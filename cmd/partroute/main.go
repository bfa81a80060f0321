package main

import (
	"fmt"
	"io"
	"os"
)

// version is stamped at build time by the Makefile (-ldflags "-X main.version=...").
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// command is one subcommand: it gets its arguments and output streams and returns the exit
// code, so that tests run it in-process.
type command struct {
	name, summary string
	run           func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"validate", "check a configuration (and naming view) and summarise each service", runValidate},
		{"resolve", "print where a request would go, as JSON, without Envoy", runResolve},
		{"serve", "serve Envoy's ext_proc calls, with an admin listener for metrics and health", runServe},
		{"envoy-bootstrap", "write the Envoy bootstrap for a configuration and its naming view", runEnvoyBootstrap},
		{"naming", "put, get or fail over the naming view stored in etcd", runNaming},
		{"demo", "run demo backends, partroute and Envoy on the example files and show where requests land", runDemo},
		{"loadtest", "generate ext_proc or HTTP load and compare partroute with no-op baselines (run, compare, noop, report)", runLoadtest},
		{"version", "print the version", runVersion},
	}
}

func runVersion(args []string, stdout, stderr io.Writer) int {
	if code, ok := newCmdFlags("version", "partroute version").parse(args, stdout, stderr); !ok {
		return code
	}
	fmt.Fprintln(stdout, "partroute", version)
	return 0
}

// run runs the command line. Help that was asked for goes to stdout and exits with 0; a command
// line that is wrong is said on stderr and exits with 1.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 1
	}
	switch args[0] {
	case "-h", "-help", "--help":
		usage(stdout)
		return 0
	case "help":
		if len(args) == 1 {
			usage(stdout)
			return 0
		}
		if len(args) > 2 {
			fmt.Fprintf(stderr, "partroute help: expected one COMMAND, got %q\n", args[1:])
			return 1
		}
		// `partroute help COMMAND` is `partroute COMMAND -h`.
		args = []string{args[1], "-h"}
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "partroute: unknown command %q\n", args[0])
	usage(stderr)
	return 1
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: partroute COMMAND [flags]\n\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-16s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'partroute COMMAND -h' or 'partroute help COMMAND' for a command's flags.")
}
