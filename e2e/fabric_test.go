package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver/servicefabric"
	"github.com/partroute/partroute/xds"
)

// fakeGateway answers the three Service Fabric HTTP gateway calls partroute makes
// (ResolvePartition, GetPartitions, GetReplicas) in the JSON shapes of Microsoft's REST
// reference, for one Int64Range service of two partitions. Service Fabric cannot run here;
// its source's own tests cover the shapes in detail, this one drives partroute and Envoy.
type fakeGateway struct {
	mu sync.Mutex
	// replicas per partition index: the first is the primary.
	replicas [2][]string
	version  int
	// previous records every PreviousRspVersion partroute sent.
	previous []string
}

var fabricPartitions = [2]struct{ id, low, high string }{
	{"6a2f0c3e-6f2b-4b8e-9d4e-000000000000", "0", "49"},
	{"6a2f0c3e-6f2b-4b8e-9d4e-000000000001", "50", "99"},
}

func fabricAddress(hostport string) string {
	b, _ := json.Marshal(map[string]any{"Endpoints": map[string]string{"": "http://" + hostport}})
	return string(b)
}

func (g *fakeGateway) failover(replicas ...string) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.replicas[0] = replicas
	g.version++
}

func (g *fakeGateway) previousVersions() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.previous...)
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g.mu.Lock()
	defer g.mu.Unlock()
	info := func(i int) map[string]any {
		p := fabricPartitions[i]
		return map[string]any{"ServicePartitionKind": "Int64Range", "Id": p.id, "LowKey": p.low, "HighKey": p.high}
	}
	w.Header().Set("content-type", "application/json")
	switch {
	case r.URL.Path == "/Services/app~orders/$/ResolvePartition":
		q := r.URL.Query()
		if q.Get("PreviousRspVersion") != "" {
			g.previous = append(g.previous, q.Get("PreviousRspVersion"))
		}
		key, _ := strconv.Atoi(q.Get("PartitionKeyValue"))
		i := 0
		if key >= 50 {
			i = 1
		}
		var eps []map[string]string
		for j, a := range g.replicas[i] {
			kind := "StatefulSecondary"
			if j == 0 {
				kind = "StatefulPrimary"
			}
			eps = append(eps, map[string]string{"Kind": kind, "Address": fabricAddress(a)})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"Name": "fabric:/app/orders", "PartitionInformation": info(i), "Endpoints": eps,
			"Version": fmt.Sprintf("v%d-%d", i, g.version)})
	case r.URL.Path == "/Services/app~orders/$/GetPartitions":
		items := []map[string]any{}
		for i := range fabricPartitions {
			items = append(items, map[string]any{"ServiceKind": "Stateful", "PartitionInformation": info(i), "PartitionStatus": "Ready", "HealthState": "Ok"})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ContinuationToken": "", "Items": items})
	case strings.HasPrefix(r.URL.Path, "/Partitions/") && strings.HasSuffix(r.URL.Path, "/$/GetReplicas"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/Partitions/"), "/$/GetReplicas")
		i := 0
		if id == fabricPartitions[1].id {
			i = 1
		}
		items := []map[string]any{}
		for j, a := range g.replicas[i] {
			role := "ActiveSecondary"
			if j == 0 {
				role = "Primary"
			}
			items = append(items, map[string]any{"ServiceKind": "Stateful", "ReplicaId": strconv.Itoa(100*i + j), "ReplicaRole": role,
				"ReplicaStatus": "Ready", "HealthState": "Ok", "NodeName": "node" + strconv.Itoa(j), "Address": fabricAddress(a)})
		}
		_ = json.NewEncoder(w).Encode(map[string]any{"ContinuationToken": "", "Items": items})
	default:
		w.WriteHeader(http.StatusNotFound)
		_ = json.NewEncoder(w).Encode(map[string]any{"Error": map[string]string{"Code": "FABRIC_E_SERVICE_DOES_NOT_EXIST", "Message": r.URL.Path}})
	}
}

// fabricConfig keys on the reverse proxy's PartitionKey query parameter, so that requests
// shaped for Service Fabric's reverse proxy route unchanged.
const fabricConfig = `
listen: {extproc: "%[1]s", admin: "%[2]s", xds: "%[3]s"}
naming:
  source: servicefabric
  servicefabric: {endpoint: "%[4]s", enumerateInterval: 1h, reresolveMinInterval: 50ms}
services:
  - name: orders
    match: {pathPrefix: /app/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 2}
    key: {sources: [{query: PartitionKey}], transform: int64}
    replicas: {reads: secondary}
    fabric: {name: "fabric:/app/orders"}
`

func TestServiceFabricThroughEnvoy(t *testing.T) {
	ports := testkit.FreePorts(t, 10)
	a, b, c, d := ports[5], ports[6], ports[7], ports[8]
	backends, err := loadtest.StartBackends([]string{a, b, c, d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backends.Close)
	gw := &fakeGateway{replicas: [2][]string{{a, b, c}, {d}}}
	gateway := httptest.NewServer(gw)
	t.Cleanup(gateway.Close)

	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "partroute.yaml")
	write(t, cfgPath, fmt.Sprintf(fabricConfig, ports[0], ports[1], ports[2], gateway.URL))
	runPartroute(t, cfgPath, ports[1], time.Hour)

	// The bootstrap needs a configuration and a view only for its static parts: the service
	// cluster comes over xDS from the enumeration.
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	runEnvoy(t, dir, cfg, nil, envoyconfig.Options{ListenAddress: ports[3], AdminAddress: ports[4], XDSAddress: ports[2], NodeID: "envoy-fabric", ResponseHeaders: true},
		envoyconfig.ExtProcCluster, "orders")
	readyCtx, done := context.WithTimeout(context.Background(), 30*time.Second)
	defer done()
	f := &failoverStack{t: t, admin: ports[1], node: "envoy-fabric", client: &http.Client{Timeout: 10 * time.Second}}
	if _, err := f.waitAcked(readyCtx, xds.Versions{}); err != nil {
		t.Fatal(err)
	}

	send := func(method, query string) (int, string) {
		req, _ := http.NewRequest(method, "http://"+ports[3]+"/app/orders/items?"+query, http.NoBody)
		resp, err := f.client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get(loadtest.BackendHeader)
	}

	// A request shaped for the reverse proxy: its PartitionKey picks the partition, and the
	// configured read policy plays TargetReplicaSelector=RandomSecondaryReplica.
	seen := map[string]bool{}
	for i := 0; i < 20; i++ {
		status, backend := send("GET", "PartitionKey=42&PartitionKind=Int64Range&TargetReplicaSelector=RandomSecondaryReplica")
		if status != 200 || (backend != b && backend != c) {
			t.Fatalf("reverse-proxy-shaped read: status %d from %q, want a secondary of partition 0 (%s or %s)", status, backend, b, c)
		}
		seen[backend] = true
	}
	if len(seen) != 2 {
		t.Errorf("reads reached %v, want both secondaries", seen)
	}
	if status, backend := send("PUT", "PartitionKey=77&PartitionKind=Int64Range"); status != 200 || backend != d {
		t.Fatalf("write to partition 1: status %d from %q, want %s", status, backend, d)
	}
	if status, backend := send("PUT", "PartitionKey=7"); status != 200 || backend != a {
		t.Fatalf("write to partition 0: status %d from %q, want the primary %s", status, backend, a)
	}

	// Failover: the old primary starts answering 503, as a demoted replica does, and the
	// cluster moves the primary to b. The periodic enumeration is an hour away, so only the
	// failure signal can bring the change: partroute sees the 503 in the response headers,
	// re-resolves the partition with its previous version, and enumerates at once, which
	// brings Envoy the new endpoints.
	before := f.serving(f.admin)
	backends.Get(a).FailWith(http.StatusServiceUnavailable)
	gw.failover(b, a, c)
	changedAt := time.Now()
	if status, _ := send("PUT", "PartitionKey=7"); status != http.StatusServiceUnavailable {
		t.Logf("first write after the failover answered %d", status)
	}
	ackedAt, err := f.waitAcked(readyCtx, before)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if status, backend := send("PUT", "PartitionKey="+strconv.Itoa(i)); status != 200 || backend != b {
			t.Fatalf("write %d after Envoy acknowledged the failover: status %d from %q, want the new primary %s", i, status, backend, b)
		}
	}
	t.Logf("service fabric: Envoy acknowledged the new endpoints %v after the failover", ackedAt.Sub(changedAt).Round(time.Millisecond))
	prev := gw.previousVersions()
	found := false
	for _, v := range prev {
		found = found || v == "v0-0"
	}
	if !found {
		t.Errorf("partroute never re-resolved partition 0 passing its previous version v0-0; it sent %v", prev)
	}
}

// A configuration reload the Service Fabric source refuses leaves the service mappings of the
// configuration still served: requests keep resolving against the Service Fabric services
// they did before.
func TestFabricSourceRefusedReloadKeepsMappings(t *testing.T) {
	gw := &fakeGateway{replicas: [2][]string{{"127.0.0.1:1"}, {"127.0.0.1:2"}}}
	gateway := httptest.NewServer(gw)
	t.Cleanup(gateway.Close)
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "partroute.yaml")
	text := fmt.Sprintf(fabricConfig, "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", gateway.URL)
	write(t, cfgPath, text)
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	client, err := servicefabric.NewClient(servicefabric.ClientOptionsFromConfig(cfg.Naming.ServiceFabric))
	if err != nil {
		t.Fatal(err)
	}
	sopts := servicefabric.SourceOptionsFromConfig(cfg, client)
	sopts.Log = slog.New(slog.DiscardHandler)
	src, err := servicefabric.NewSource(sopts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := src.Initial(ctx, cfg); err != nil {
		t.Fatal(err)
	}

	write(t, cfgPath, strings.Replace(text, "fabric:/app/orders", "fabric:/app/missing", 1))
	moved, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.ForConfig(ctx, moved); err == nil || !strings.Contains(err.Error(), "app~missing") && !strings.Contains(err.Error(), "fabric:/app/missing") {
		t.Fatalf("forConfig of a configuration naming a missing Service Fabric service: %v, want an error naming it", err)
	}
	if got := src.Services()["orders"].FabricName; got != "fabric:/app/orders" {
		t.Errorf("after the refused reload, orders is mapped to %q, want fabric:/app/orders", got)
	}
	p, err := src.Partition(ctx, cfg.Service("orders"), keying.Key{Index: 1, Int: 77})
	if err != nil {
		t.Fatalf("resolving after the refused reload: %v", err)
	}
	if len(p.Replicas) != 1 || p.Replicas[0].Address != "127.0.0.1:2" {
		t.Errorf("partition of key 77 after the refused reload has replicas %+v, want 127.0.0.1:2", p.Replicas)
	}
}
