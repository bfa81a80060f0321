package servicefabric

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The partition ids of the fixtures in testdata.
const (
	users0   = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
	users1   = "6f0c0a4e-2b71-4a8f-9d38-6b0d3c1e7a01"
	users2   = "9a6d4a8e-5c4f-4d2b-8f0e-2a7e3b9c1d02"
	users3   = "c4ad0e4a-5b3c-4b69-9a8f-1f5b0b5d2c03"
	regionEU = "0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a10"
	regionUS = "0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a11"
	regionAP = "0e1f2a3b-4c5d-4e6f-8a9b-0c1d2e3f4a12"
	settings = "5d6e7f80-9a1b-4c2d-8e3f-4a5b6c7d8e20"
	catalog  = "7e8f9a0b-1c2d-4e3f-9a4b-5c6d7e8f9a30"
)

// reply is one scripted gateway answer.
type reply struct {
	status int
	// file is served from testdata; body is served when file is empty.
	file string
	body string
	// hang holds the request until the client gives up on it, to make it time out.
	hang bool
}

func ok(file string) reply { return reply{status: http.StatusOK, file: file} }

// fakeGateway plays the Service Fabric HTTP gateway: it answers each route with its scripted
// replies in turn, repeating the last, and records every request.
type fakeGateway struct {
	t      testing.TB
	mu     sync.Mutex
	routes map[string][]reply
	served map[string]int
	log    []*http.Request
	// inflight and maxInflight count requests being answered, for the concurrency limit.
	inflight, maxInflight int
	// gate, when set, holds every request until it is closed; arrived, when set, receives a
	// value as each request arrives.
	gate, arrived chan struct{}
}

func newGateway(t testing.TB) (*fakeGateway, *httptest.Server) {
	g := &fakeGateway{t: t, routes: map[string][]reply{}, served: map[string]int{}}
	srv := httptest.NewServer(g)
	t.Cleanup(srv.Close)
	return g, srv
}

// on scripts the replies of a route: the path, with the query parameters that select the
// answer (PartitionKeyType, PartitionKeyValue, ContinuationToken) in that order.
func (g *fakeGateway) on(route string, replies ...reply) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.routes[route] = replies
	g.served[route] = 0
}

// standard scripts every fixture of testdata on its route.
func (g *fakeGateway) standard() {
	g.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0", ok("resolve-users-0-v1.json"))
	g.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=9", ok("resolve-users-1-one-bad-address.json"))
	g.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=18", ok("resolve-users-2-all-bad-addresses.json"))
	g.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=26", ok("resolve-users-3-other-range.json"))
	g.on("/Services/shop~regions/$/ResolvePartition?PartitionKeyType=3&PartitionKeyValue=eu", ok("resolve-regions-eu.json"))
	g.on("/Services/shop~settings/$/ResolvePartition?PartitionKeyType=1", ok("resolve-settings.json"))
	g.on("/Services/shop~catalog/$/ResolvePartition?PartitionKeyType=1", ok("resolve-catalog.json"))

	g.on("/Services/shop~users/$/GetPartitions", ok("partitions-users-page1.json"))
	g.on("/Services/shop~users/$/GetPartitions?ContinuationToken="+users1, ok("partitions-users-page2.json"))
	g.on("/Services/shop~regions/$/GetPartitions", ok("partitions-regions.json"))
	g.on("/Services/shop~settings/$/GetPartitions", ok("partitions-settings.json"))
	g.on("/Services/shop~catalog/$/GetPartitions", ok("partitions-catalog.json"))

	g.on("/Partitions/"+users0+"/$/GetReplicas", ok("replicas-users-0-page1.json"))
	g.on("/Partitions/"+users0+"/$/GetReplicas?ContinuationToken=131462720131239152", ok("replicas-users-0-page2.json"))
	g.on("/Partitions/"+users1+"/$/GetReplicas", ok("replicas-users-1.json"))
	g.on("/Partitions/"+users2+"/$/GetReplicas", ok("replicas-users-2.json"))
	g.on("/Partitions/"+users3+"/$/GetReplicas", ok("replicas-users-3.json"))
	g.on("/Partitions/"+regionEU+"/$/GetReplicas", ok("replicas-regions-eu.json"))
	g.on("/Partitions/"+regionUS+"/$/GetReplicas", ok("replicas-regions-us.json"))
	g.on("/Partitions/"+regionAP+"/$/GetReplicas", ok("replicas-regions-apac.json"))
	g.on("/Partitions/"+settings+"/$/GetReplicas", ok("replicas-settings.json"))
	g.on("/Partitions/"+catalog+"/$/GetReplicas", ok("replicas-catalog.json"))
}

func routeOf(r *http.Request) string {
	q := r.URL.Query()
	var parts []string
	for _, name := range []string{"PartitionKeyType", "PartitionKeyValue", "ContinuationToken"} {
		if v := q.Get(name); v != "" {
			parts = append(parts, name+"="+v)
		}
	}
	route := r.URL.EscapedPath()
	if len(parts) > 0 {
		route += "?" + strings.Join(parts, "&")
	}
	return route
}

func (g *fakeGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := routeOf(r)
	g.mu.Lock()
	g.log = append(g.log, r.Clone(context.Background()))
	g.inflight++
	if g.inflight > g.maxInflight {
		g.maxInflight = g.inflight
	}
	replies, known := g.routes[route]
	var rep reply
	if known && len(replies) > 0 {
		n := g.served[route]
		rep = replies[min(n, len(replies)-1)]
		g.served[route] = n + 1
	}
	gate, arrived := g.gate, g.arrived
	g.mu.Unlock()
	if arrived != nil {
		arrived <- struct{}{}
	}
	defer func() {
		g.mu.Lock()
		g.inflight--
		g.mu.Unlock()
	}()

	if q := r.URL.Query(); q.Get("api-version") == "" || q.Get("timeout") == "" {
		g.t.Errorf("request %s lacks api-version or timeout", r.URL)
	}
	if gate != nil {
		select {
		case <-gate:
		case <-r.Context().Done():
			return
		}
	}
	if !known {
		g.t.Errorf("unexpected gateway request %s (route %s)", r.URL, route)
		w.WriteHeader(http.StatusNotFound)
		return
	}
	if rep.hang {
		<-r.Context().Done()
		return
	}
	body := []byte(rep.body)
	if rep.file != "" {
		var err error
		if body, err = os.ReadFile(filepath.Join("testdata", rep.file)); err != nil {
			g.t.Errorf("fixture: %v", err)
		}
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(rep.status)
	_, _ = w.Write(body)
}

// requests returns the recorded requests whose route starts with prefix.
func (g *fakeGateway) requests(prefix string) []*http.Request {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*http.Request
	for _, r := range g.log {
		if strings.HasPrefix(routeOf(r), prefix) {
			out = append(out, r)
		}
	}
	return out
}

// waits records the backoff waits a client asked for, without waiting.
type waits struct {
	mu sync.Mutex
	d  []time.Duration
}

func (w *waits) wait(ctx context.Context, d time.Duration) error {
	w.mu.Lock()
	w.d = append(w.d, d)
	w.mu.Unlock()
	return ctx.Err()
}

func (w *waits) list() []time.Duration {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]time.Duration(nil), w.d...)
}

// testClient builds a client of srv that records its waits instead of waiting.
func testClient(t testing.TB, endpoint string, reg prometheus.Registerer, edit func(*ClientOptions)) (*Client, *waits) {
	t.Helper()
	w := &waits{}
	opts := ClientOptions{Endpoint: endpoint, Retries: 2, Timeout: 5 * time.Second, Wait: w.wait, Metrics: reg}
	if edit != nil {
		edit(&opts)
	}
	c, err := NewClient(opts)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	return c, w
}

// counter reads the value of a counter series from the registry, 0 when it is absent.
func counter(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}
