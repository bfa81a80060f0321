package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/partroute/partroute/internal/testkit"
)

// partrouteBin is the partroute binary the tests run commands with, built once by TestMain
// from this checkout, so that the tests see exactly what a user's `make build` gives.
var partrouteBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "partroute-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	partrouteBin = filepath.Join(dir, "partroute")
	build := exec.Command("go", "build", "-o", partrouteBin, "github.com/partroute/partroute/cmd/partroute")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building partroute for the end-to-end tests: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cliResult is what one run of the partroute binary printed and returned.
type cliResult struct {
	code           int
	stdout, stderr string
}

// cli runs the partroute binary with args, from the repository root, and returns what it did.
func cli(tb testing.TB, args ...string) cliResult {
	tb.Helper()
	cmd := exec.Command(partrouteBin, args...)
	cmd.Dir = testkit.RepoRoot(tb)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if err != nil {
		var exit *exec.ExitError
		if !errors.As(err, &exit) {
			tb.Fatalf("running partroute %q: %v", args, err)
		}
		code = exit.ExitCode()
	}
	return cliResult{code, stdout.String(), stderr.String()}
}
