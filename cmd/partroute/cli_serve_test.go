package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/partroute/partroute/internal/testkit"
)

// A configuration that is broken at start ends serve with every problem on a line of its own,
// in plain text, and no word of a previous configuration: there is none.
func TestRunServeBrokenConfigurationAtStart(t *testing.T) {
	dir := testkit.CopyExamples(t)
	cfgPath := filepath.Join(dir, "partroute.yaml")
	data, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "scheme: uniformInt64", "scheme: uniform", 1)
	text = strings.Replace(text, "reads: secondary", "reads: some", 1)
	if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, format := range []string{"text", "json"} {
		var stdout, stderr bytes.Buffer
		code := runServe([]string{"-config", cfgPath, "-log-format", format}, &stdout, &stderr)
		if code != 1 {
			t.Errorf("-log-format %s: exit code %d, want 1", format, code)
		}
		lines := strings.Split(strings.TrimSuffix(stderr.String(), "\n"), "\n")
		want := []string{"partroute serve: " + cfgPath + ": 2 error(s):", `  services[0].partitioning.scheme: "uniform"`, `  services[1].replicas.reads: "some"`}
		if len(lines) != len(want) {
			t.Fatalf("-log-format %s: stderr has %d lines, want %d:\n%s", format, len(lines), len(want), stderr.String())
		}
		for i, w := range want {
			if !strings.HasPrefix(lines[i], w) {
				t.Errorf("-log-format %s: stderr line %d is %q, want it to begin with %q", format, i+1, lines[i], w)
			}
		}
		if strings.Contains(stderr.String(), "previous") {
			t.Errorf("-log-format %s: the start speaks of a previous configuration:\n%s", format, stderr.String())
		}
		if stdout.Len() != 0 {
			t.Errorf("-log-format %s: stdout %q, want nothing", format, stdout.String())
		}
	}
}

func TestRunServeHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runServe([]string{"-h"}, &stdout, &stderr); code != 0 {
		t.Errorf("serve -h: exit code %d, want 0", code)
	}
	if !strings.HasPrefix(stdout.String(), "usage: partroute serve -config FILE") || !strings.Contains(stdout.String(), "-drain-delay") {
		t.Errorf("serve -h printed on stdout:\n%s", stdout.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("serve -h printed on stderr:\n%s", stderr.String())
	}
	stdout.Reset()
	if code := runServe([]string{"-nosuchflag"}, io.Discard, &stderr); code != 1 || !strings.Contains(stderr.String(), "partroute serve: flag provided but not defined: -nosuchflag") {
		t.Errorf("serve -nosuchflag: exit code %d, stderr:\n%s", code, stderr.String())
	}
}
