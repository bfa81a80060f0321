package main

import (
	"strings"
	"testing"
)

// Help that was asked for goes to standard output and exits with 0, for the command list and
// for every command.
func TestCLIHelp(t *testing.T) {
	cases := []struct {
		args []string
		// head is how standard output begins.
		head string
		// has is more that standard output holds: a flag of the command.
		has string
	}{
		{[]string{"-h"}, "usage: partroute COMMAND", "envoy-bootstrap"},
		{[]string{"-help"}, "usage: partroute COMMAND", "envoy-bootstrap"},
		{[]string{"--help"}, "usage: partroute COMMAND", "envoy-bootstrap"},
		{[]string{"help"}, "usage: partroute COMMAND", "envoy-bootstrap"},
		{[]string{"help", "resolve"}, "usage: partroute resolve -config FILE", "-naming"},
		{[]string{"validate", "-h"}, "usage: partroute validate -config FILE [-naming FILE]\n\nflags:\n", "-naming"},
		{[]string{"resolve", "-h"}, "usage: " + resolveSynopsis + "\n\nflags:\n", "-H value"},
		{[]string{"demo", "-h"}, "usage: partroute demo [-config FILE] [-envoy-listen ADDR] [-envoy-admin ADDR] [-once]\n\nflags:\n", "-once"},
		{[]string{"resolve", "--help"}, "usage: partroute resolve", "-H value"},
		{[]string{"resolve", "-config", cliExampleConfig, "-h"}, "usage: partroute resolve", "-H value"},
		{[]string{"serve", "-h"}, "usage: partroute serve -config FILE [flags]", "-drain-delay"},
		{[]string{"envoy-bootstrap", "-h"}, "usage: partroute envoy-bootstrap -config FILE", "-retry"},
		{[]string{"version", "-h"}, "usage: partroute version", ""},
		{[]string{"naming", "-h"}, "usage:\n  partroute naming put", "partroute naming failover"},
		{[]string{"naming", "put", "-h"}, "usage: partroute naming put -config FILE", "-file"},
		{[]string{"naming", "get", "-h"}, "usage: partroute naming get -config FILE", "-prefix"},
		{[]string{"naming", "failover", "-h"}, "usage: partroute naming failover -config FILE", "-partition"},
		{[]string{"loadtest", "-h"}, "usage: partroute loadtest [run] [flags]", "-target"},
		{[]string{"loadtest", "run", "-h"}, "usage: partroute loadtest [run] [flags]", "-target"},
		{[]string{"loadtest", "compare", "-h"}, "usage: partroute loadtest compare [flags]", "-pairs"},
		{[]string{"loadtest", "noop", "-h"}, "usage: partroute loadtest noop", "-stream-workers"},
		{[]string{"loadtest", "report", "-h"}, "usage: partroute loadtest report", "-title"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := cliRun(tc.args...)
			if r.code != 0 || r.stderr != "" {
				t.Errorf("exit code %d, stderr %q; want 0 and nothing", r.code, r.stderr)
			}
			if !strings.HasPrefix(r.stdout, tc.head) || !strings.Contains(r.stdout, tc.has) {
				t.Errorf("stdout does not begin with %q and hold %q:\n%s", tc.head, tc.has, r.stdout)
			}
		})
	}
}

// A command line that is wrong is said on standard error, with what was wrong and the usage
// line, and exits with 1. A flag written after the positional arguments is named.
func TestCLIUsageMessages(t *testing.T) {
	cases := []struct {
		args []string
		// stderr is standard error exactly, or its beginning when it ends with "...".
		stderr string
	}{
		{nil, "usage: partroute COMMAND [flags]\n..."},
		{[]string{"help", "resolve", "validate"}, `partroute help: expected one COMMAND, got ["resolve" "validate"]` + "\n"},
		{[]string{"resolve", "-config", cliExampleConfig, "GET", "http://x/", "-H", "a: b"},
			`partroute resolve: flags go before METHOD and URL: "-H" came after them` + "\nusage: " + resolveSynopsis + "\n"},
		{[]string{"resolve", "-config", cliExampleConfig, "GET", "-H", "a: b", "http://x/"},
			`partroute resolve: flags go before METHOD and URL: "-H" came after them` + "\n..."},
		{[]string{"resolve", "GET", "http://x/", "-config", cliExampleConfig},
			`partroute resolve: flags go before METHOD and URL: "-config" came after them` + "\n..."},
		{[]string{"resolve", "-config", cliExampleConfig, "GET", "http://x/", "-h"},
			`partroute resolve: flags go before METHOD and URL: "-h" came after them` + "\n..."},
		{[]string{"resolve", "-nosuch", "GET", "http://x/"},
			"partroute resolve: flag provided but not defined: -nosuch\nusage: " + resolveSynopsis + "\n"},
		{[]string{"resolve", "-config"}, "partroute resolve: flag needs an argument: -config\n..."},
		{[]string{"validate", "-config", cliExampleConfig, "extra", "-naming", cliExampleNaming},
			`partroute validate: unexpected argument "extra"; the command takes flags only` + "\nusage: partroute validate -config FILE [-naming FILE]\n"},
		{[]string{"envoy-bootstrap", "-config", cliExampleConfig, "out.yaml"}, `partroute envoy-bootstrap: unexpected argument "out.yaml"; the command takes flags only` + "\n..."},
		{[]string{"serve", "-config", cliExampleConfig, "now"}, `partroute serve: unexpected argument "now"; the command takes flags only` + "\nusage: partroute serve -config FILE [flags]\n"},
		{[]string{"version", "--short"}, "partroute version: flag provided but not defined: -short\nusage: partroute version\n"},
		{[]string{"naming", "-config", cliExampleConfig, "get"},
			`partroute naming: the subcommand (put, get or failover) goes before the flags: "-config" came first` + "\nusage:\n..."},
		{[]string{"naming", "get", "x", "-config", cliExampleConfig},
			`partroute naming get: unexpected argument "x"; the command takes flags only` + "\nusage: partroute naming get -config FILE [-etcd ENDPOINTS] [-prefix P]\n"},
		{[]string{"naming", "failover", "-config", cliExampleConfig, "-service", "users"}, "partroute naming failover: -partition is required\n..."},
		{[]string{"naming", "put"}, "partroute naming put: -config is required\n..."},
		{[]string{"loadtest", "run", "extra"}, `partroute loadtest run: unexpected argument "extra"; the command takes flags only` + "\n..."},
		{[]string{"loadtest", "noop", "extra"}, `partroute loadtest noop: unexpected argument "extra"; the command takes flags only` + "\n..."},
		{[]string{"loadtest", "report", "a.json", "-out", "dir"},
			`partroute loadtest report: flags go before REPORT.json files: "-out" came after them` + "\n..."},
		{[]string{"loadtest", "report"}, "partroute loadtest report: expected REPORT.json files, got nothing\n..."},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			r := cliRun(tc.args...)
			if r.code != 1 || r.stdout != "" {
				t.Errorf("exit code %d, stdout %q; want 1 and nothing", r.code, r.stdout)
			}
			if head, ok := strings.CutSuffix(tc.stderr, "..."); ok {
				if !strings.HasPrefix(r.stderr, head) {
					t.Errorf("stderr\n%s\nwant it to begin with\n%s", r.stderr, head)
				}
			} else if r.stderr != tc.stderr {
				t.Errorf("stderr\n%s\nwant\n%s", r.stderr, tc.stderr)
			}
		})
	}
}

// After "--" every argument is positional, even one that begins with "-".
func TestCLIArgumentsAfterDoubleDash(t *testing.T) {
	r := cliRun("loadtest", "report", "--", "-absent.json")
	if r.code != 1 || !strings.Contains(r.stderr, "-absent.json: no such file") {
		t.Errorf("report -- -absent.json: %+v, want it read as a file name", r)
	}
}
