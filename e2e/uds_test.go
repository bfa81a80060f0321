package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
)

// A colocated Envoy reaches partroute over a unix domain socket (an Envoy pipe address, from
// listen.extproc: unix:/path), health checks it there, and routes writes to primaries and
// reads to secondaries as over TCP.
func TestExtProcOverAUnixSocket(t *testing.T) {
	// The socket path must stay under 108 bytes: a test's temporary directory can be longer.
	dir, err := os.MkdirTemp("", "pr-uds-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "extproc.sock")
	ports := testkit.FreePorts(t, 6)
	admin, envoyAddr, envoyAdmin, a, b, c := ports[0], ports[1], ports[2], ports[3], ports[4], ports[5]
	cfgPath := filepath.Join(dir, "partroute.yaml")
	write(t, cfgPath, fmt.Sprintf(`
listen: {extproc: "unix:%s", admin: "%s"}
naming: {source: file, file: naming.yaml}
services:
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 2}
    key: {sources: [{path: "/api/orders/{id}"}], transform: int64}
    replicas: {reads: secondary}
`, sock, admin))
	write(t, filepath.Join(dir, "naming.yaml"), fmt.Sprintf(`services:
  orders:
    partitions:
      - {lowKey: 0, highKey: 49, id: orders-0, replicas: [{address: %q, role: primary}, {address: %q, role: secondary}]}
      - {lowKey: 50, highKey: 99, id: orders-1, replicas: [{address: %q, role: primary}]}
`, a, b, c))
	cfg, view, err := resolver.LoadConfigAndView(cfgPath, "")
	if err != nil {
		t.Fatal(err)
	}
	backends, err := loadtest.StartBackends([]string{a, b, c})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backends.Close)
	runPartroute(t, cfgPath, admin, time.Hour)
	fi, err := os.Stat(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode()&os.ModeSocket == 0 || fi.Mode().Perm() != 0o660 {
		t.Errorf("%s: mode %v, want a socket of mode 0660", sock, fi.Mode())
	}
	runEnvoy(t, dir, cfg, view, envoyconfig.Options{ListenAddress: envoyAddr, AdminAddress: envoyAdmin}, envoyconfig.ExtProcCluster)

	client := &http.Client{Timeout: 10 * time.Second}
	for _, c := range []struct {
		method string
		key    int
		want   string
	}{{"PUT", 7, a}, {"GET", 7, b}, {"PUT", 70, c}} {
		req, _ := http.NewRequest(c.method, fmt.Sprintf("http://%s/api/orders/%d", envoyAddr, c.key), http.NoBody)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || resp.Header.Get(loadtest.BackendHeader) != c.want {
			t.Errorf("%s key %d: %d from %q, want 200 from %s", c.method, c.key, resp.StatusCode, resp.Header.Get(loadtest.BackendHeader), c.want)
		}
	}
}
