package e2e

import (
	"strings"
	"testing"

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
