package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
)

// TestLoadtestHTTPThroughEnvoy runs `partroute loadtest run -target http` through a real Envoy
// in front of partroute and the replicas' backends, over HTTP/1.1 and h2c.
func TestLoadtestHTTPThroughEnvoy(t *testing.T) {
	for _, proto := range []string{loadtest.HTTP1, loadtest.H2C} {
		r := cli(t, "loadtest", "run", "-target", "http", "-proto", proto, "-server", "partroute", "-servers", "inprocess",
			"-c", "8", "-d", "500ms", "-warmup", "200ms", "-quiet")
		if r.code != 0 {
			t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", proto, r.code, r.stdout, r.stderr)
		}
		lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
		if len(lines) != 2 || !strings.Contains(lines[1], "envoy+partroute") {
			t.Fatalf("%s: output\n%s", proto, r.stdout)
		}
		// The errors column is the fifth: none may fail.
		if f := strings.Fields(lines[1]); len(f) < 5 || f[4] != "0" {
			t.Errorf("%s: errors in\n%s", proto, r.stdout)
		}
	}
}

// TestLoadtestSetByThroughEnvoy runs `partroute loadtest compare -target http -set-by` in the
// shapes that leave the headers to Envoy's routes, with each server in a process of its own:
// partroute, and the decoding floor answering in the same shape (`partroute loadtest noop
// -set-by`), route every request through Envoy configurations generated for that shape, and
// no run of any arm fails.
func TestLoadtestSetByThroughEnvoy(t *testing.T) {
	for _, setBy := range []string{"envoy", "none"} {
		out := t.TempDir()
		r := cli(t, "loadtest", "compare", "-target", "http", "-set-by", setBy, "-servers", "process",
			"-c", "4", "-d", "300ms", "-warmup", "100ms", "-pairs", "1", "-quiet", "-out", out)
		if r.code != 0 {
			t.Fatalf("%s: exit %d\nstdout:\n%s\nstderr:\n%s", setBy, r.code, r.stdout, r.stderr)
		}
		f, err := os.Open(filepath.Join(out, "compare-http-closed-h1.json"))
		if err != nil {
			t.Fatal(err)
		}
		rep, err := loadtest.ReadJSON(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, run := range rep.Runs {
			names = append(names, run.Target)
			if run.Errors != 0 || run.Requests == 0 {
				t.Errorf("%s: run %s: %d requests, errors %v", setBy, run.Name, run.Requests, run.ErrorCodes)
			}
		}
		if want := []string{"envoy+partroute", "envoy+noop", "envoy+nofilter", "envoy+floor"}; !slices.Equal(names, want) {
			t.Errorf("%s: runs %v, want %v", setBy, names, want)
		}
		if !strings.Contains(rep.Title, "headers set by "+setBy) {
			t.Errorf("%s: title %q does not name the shape", setBy, rep.Title)
		}
	}
}

// TestEnvoyInstructionsScript runs loadtest/envoy-instructions.sh, which counts the
// instructions Envoy executes per request under valgrind, on a short run of the no-op server:
// it must print a count for the server, in the range one request through Envoy and its ext_proc
// filter can take (about 440,000 instructions on Envoy 1.40; far below when the difference of
// the two runs is wrong, far above when Envoy's start is not cancelled out).
func TestEnvoyInstructionsScript(t *testing.T) {
	cmd := exec.Command("bash", "loadtest/envoy-instructions.sh", "noop")
	cmd.Dir = testkit.RepoRoot(t)
	cmd.Env = append(os.Environ(), "PARTROUTE="+partrouteBin, "N1=20", "N2=60")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("envoy-instructions.sh: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`^noop: (\d+) instructions per request \(Envoy, 40 requests at 40/s; totals (\d+) and (\d+)\)\n$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("output:\n%s", out)
	}
	per, err := strconv.Atoi(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if per < 100_000 || per > 5_000_000 {
		t.Errorf("%d instructions per request, want between 100,000 and 5,000,000:\n%s", per, out)
	}
}
