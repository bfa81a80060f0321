package main

import (
	"bytes"
	"strings"
	"testing"
)

// The example files, and the CLI fixtures next to this file.
const (
	cliExampleConfig = "../../envoy-config/examples/partroute.yaml"
	cliExampleNaming = "../../envoy-config/examples/naming.yaml"
	cliTestConfig    = "testdata/partroute.yaml"
)

// cliResult is what one in-process run of the command printed and returned.
type cliResult struct {
	code           int
	stdout, stderr string
}

// cliRun runs the command line in-process.
func cliRun(args ...string) cliResult {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return cliResult{code, stdout.String(), stderr.String()}
}

func TestCLIVersion(t *testing.T) {
	r := cliRun("version")
	if r.code != 0 || r.stdout != "partroute "+version+"\n" || r.stderr != "" {
		t.Errorf("version: %+v", r)
	}
}

func TestCLIUsageErrors(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{"no command", nil, 1, []string{"usage: partroute COMMAND", "validate", "resolve", "version"}},
		{"unknown command", []string{"frobnicate"}, 1, []string{`partroute: unknown command "frobnicate"`, "usage: partroute COMMAND"}},
		{"help for an unknown command", []string{"help", "frobnicate"}, 1, []string{`partroute: unknown command "frobnicate"`}},
		{"validate without -config", []string{"validate"}, 1, []string{"partroute validate: -config is required\nusage: partroute validate -config FILE [-naming FILE]"}},
		{"validate with an argument", []string{"validate", "-config", cliExampleConfig, "extra"}, 1, []string{`partroute validate: unexpected argument "extra"`, "usage: partroute validate"}},
		{"validate with an unknown flag", []string{"validate", "-verbose"}, 1, []string{"partroute validate: flag provided but not defined: -verbose"}},
		{"validate a missing file", []string{"validate", "-config", "testdata/absent.yaml"}, 1, []string{"testdata/absent.yaml", "no such file"}},
		{"validate a missing naming file", []string{"validate", "-config", cliExampleConfig, "-naming", "testdata/absent.yaml"}, 1, []string{"no such file"}},
		{"resolve without -config", []string{"resolve", "GET", "http://h/"}, 1, []string{"partroute resolve: -config is required", "usage: partroute resolve -config FILE"}},
		{"resolve without a URL", []string{"resolve", "-config", cliExampleConfig, "GET"}, 1, []string{`partroute resolve: expected METHOD and URL, got "GET"`, "usage: partroute resolve"}},
		{"resolve with too many arguments", []string{"resolve", "-config", cliExampleConfig, "GET", "http://h/", "x"}, 1, []string{`partroute resolve: expected METHOD and URL, got "GET" "http://h/" "x"`, "usage: partroute resolve"}},
		{"resolve with an unknown flag", []string{"resolve", "-X", "POST"}, 1, []string{"flag provided but not defined: -X"}},
		{"resolve with a bad URL", []string{"resolve", "-config", cliExampleConfig, "GET", "http://h/%zz"}, 1, []string{"partroute resolve: URL \"http://h/%zz\""}},
		{"resolve a URL without scheme", []string{"resolve", "-config", cliExampleConfig, "GET", "api.example.com/api/users/12"}, 1, []string{
			`partroute resolve: URL "api.example.com/api/users/12" has no scheme and host: write it as http://host/path (or as a path, /path, with a host header)` + "\n"}},
		{"resolve a URL with a port and no scheme", []string{"resolve", "-config", cliExampleConfig, "GET", "localhost:8080/api/users/12"}, 1, []string{`URL "localhost:8080/api/users/12" has no scheme and host`}},
		{"resolve a URL without host", []string{"resolve", "-config", cliExampleConfig, "GET", "http:///api/users/12"}, 1, []string{`URL "http:///api/users/12" has no scheme and host`}},
		{"resolve a URL without scheme, with //", []string{"resolve", "-config", cliExampleConfig, "GET", "//api.example.com/api/users/12"}, 1, []string{`URL "//api.example.com/api/users/12" has no scheme and host`}},
		{"resolve a URL of another scheme", []string{"resolve", "-config", cliExampleConfig, "GET", "ftp://api.example.com/api/users/12"}, 1, []string{`URL "ftp://api.example.com/api/users/12": the scheme is "ftp", not http or https`}},
		{"resolve with a bad header", []string{"resolve", "-config", cliExampleConfig, "-H", "x-user-id 7", "GET", "http://h/"}, 1, []string{`partroute resolve: header "x-user-id 7" is not 'name: value'`}},
		{"resolve with an empty header name", []string{"resolve", "-config", cliExampleConfig, "-H", ": 7", "GET", "http://h/"}, 1, []string{`header ": 7" is not 'name: value'`}},
		{"resolve with a missing body file", []string{"resolve", "-config", cliTestConfig, "-d", "@testdata/absent.json", "POST", "http://h/orders"}, 1, []string{"partroute resolve:", "testdata/absent.json"}},
		{"resolve with a broken configuration", []string{"resolve", "-config", "testdata/broken.yaml", "GET", "http://h/"}, 1, []string{"5 error(s)"}},
		{"resolve with a broken naming view", []string{"resolve", "-config", cliExampleConfig, "-naming", "testdata/broken-naming.yaml", "GET", "http://h/"}, 1, []string{"5 error(s)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := cliRun(tc.args...)
			if r.code != tc.code {
				t.Errorf("exit code %d, want %d\nstderr: %s", r.code, tc.code, r.stderr)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, r.stderr)
				}
			}
		})
	}
}
