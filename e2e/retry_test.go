package e2e

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
)

// retryConfig is one service whose reads may go to any replica. %[1]s and %[2]s are
// partroute's ext_proc and admin addresses.
const retryConfig = `
listen: {extproc: "%[1]s", admin: "%[2]s"}
naming: {source: file, file: naming.yaml}
services:
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 2}
    key: {sources: [{path: "/api/orders/{id}"}], transform: int64}
    replicas: {reads: any}
`

// TestRetryPolicyRetriesAReplicas503 runs Envoy with the generator's retry policy in front of
// partroute and three replicas of one partition, one of which answers 503: every read must
// reach a replica that answers, through a retry. partroute's own 503 (a partition with no
// healthy replica) is an ext_proc immediate response, which Envoy's router never sees, so it
// reaches the client unretried.
func TestRetryPolicyRetriesAReplicas503(t *testing.T) {
	dir := t.TempDir()
	ports := testkit.FreePorts(t, 8)
	extproc, admin, envoyAddr, envoyAdmin := ports[0], ports[1], ports[2], ports[3]
	a, b, c, d := ports[4], ports[5], ports[6], ports[7]
	cfgPath := filepath.Join(dir, "partroute.yaml")
	write(t, cfgPath, fmt.Sprintf(retryConfig, extproc, admin))
	write(t, filepath.Join(dir, "naming.yaml"), fmt.Sprintf(`services:
  orders:
    partitions:
      - {lowKey: 0, highKey: 49, id: orders-0, replicas: [{address: %q, role: primary}, {address: %q, role: secondary}, {address: %q, role: secondary}]}
      - {lowKey: 50, highKey: 99, id: orders-1, replicas: [{address: %q, role: primary, healthy: false}]}
`, a, b, c, d))
	cfg, view, err := resolver.LoadConfigAndView(cfgPath, "")
	if err != nil {
		t.Fatal(err)
	}
	backends, err := loadtest.StartBackends([]string{a, b, c, d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backends.Close)
	backends.Get(a).FailWith(http.StatusServiceUnavailable)

	runPartroute(t, cfgPath, admin, time.Hour)
	runEnvoy(t, dir, cfg, view, envoyconfig.Options{ListenAddress: envoyAddr, AdminAddress: envoyAdmin, Retry: &envoyconfig.Retry{NumRetries: 2}},
		envoyconfig.ExtProcCluster)
	client := &http.Client{Timeout: 10 * time.Second}
	get := func(key int) (int, string, string) {
		t.Helper()
		resp, err := client.Get(fmt.Sprintf("http://%s/api/orders/%d", envoyAddr, key))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get(loadtest.BackendHeader), resp.Header.Get("x-partroute-error")
	}

	// Round robin over three replicas sends a third of first attempts to the failing one.
	for key := 0; key < 30; key++ {
		status, backend, _ := get(key)
		if status != http.StatusOK || backend == a {
			t.Errorf("GET /api/orders/%d answered %d from %q; a replica's 503 must be retried on another replica", key, status, backend)
		}
	}
	retries := envoyStat(t, envoyAdmin, "cluster.orders.upstream_rq_retry")
	if retries == 0 {
		t.Error("Envoy counted no retry, so no read reached the failing replica; the test proves nothing")
	}

	status, _, code := get(60)
	if status != http.StatusServiceUnavailable || code != "partition_unavailable" {
		t.Errorf("GET to a partition with no healthy replica answered %d %q, want partroute's 503 partition_unavailable", status, code)
	}
	if after := envoyStat(t, envoyAdmin, "cluster.orders.upstream_rq_retry"); after != retries {
		t.Errorf("Envoy retried partroute's own 503: upstream_rq_retry went from %d to %d", retries, after)
	}
}

// envoyStat reads one counter from Envoy's admin /stats.
func envoyStat(t *testing.T, admin, name string) int64 {
	t.Helper()
	resp, err := http.Get("http://" + admin + "/stats?filter=" + url.QueryEscape("^"+regexp.QuoteMeta(name)+"$"))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				t.Fatalf("stat %s: %q", name, line)
			}
			return n
		}
	}
	t.Fatalf("Envoy has no stat %s:\n%s", name, body)
	return 0
}
