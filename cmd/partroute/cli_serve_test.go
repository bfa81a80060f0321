package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/server"
)

// serveExampleCopy copies the example files into a temporary directory, listening on ports the
// kernel picks, and returns the directory.
func serveExampleCopy(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"partroute.yaml", "naming.yaml"} {
		data, err := os.ReadFile(filepath.Join(serveExamples, name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("127.0.0.1:50051", "127.0.0.1:0", "127.0.0.1:9901", "127.0.0.1:0").Replace(string(data))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// A configuration that is broken at start ends serve with every problem on a line of its own,
// in plain text, and no word of a previous configuration: there is none.
func TestRunServeBrokenConfigurationAtStart(t *testing.T) {
	dir := serveExampleCopy(t)
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

// A broken change while serving is refused, logged as such, and the state that was serving
// stays.
func TestServeBrokenReloadKeepsServing(t *testing.T) {
	dir := serveExampleCopy(t)
	logs := &serveLog{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	hup := make(chan struct{}, 1)
	opts := embeddedOptions(filepath.Join(dir, "partroute.yaml"), time.Hour, slog.New(slog.NewTextHandler(logs, nil)))
	opts.Reload = hup
	go func() { served <- server.Run(ctx, opts) }()
	serveWaitFor(t, "serve to start", 10*time.Second, func() bool {
		select {
		case err := <-served:
			t.Fatalf("serve returned %v before serving; log:\n%s", err, logs)
		default:
		}
		return serveAddrs.MatchString(logs.String())
	})
	namingPath := filepath.Join(dir, "naming.yaml")
	data, err := os.ReadFile(namingPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(namingPath, []byte(strings.Replace(string(data), "role: primary", "role: leader", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- struct{}{}
	serveWaitFor(t, "the broken naming view to be refused", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "still serving the previous one")
	})
	if !strings.Contains(logs.String(), `\"leader\" is not primary or secondary`) {
		t.Errorf("the refusal does not name the problem:\n%s", logs)
	}
	cancel()
	if err := <-served; err != nil {
		t.Errorf("serve returned %v, want nil", err)
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
