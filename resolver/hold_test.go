package resolver_test

import (
	"context"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// holdConfig is one service of two partitions that waits out failovers for wait, with the
// given limits of held requests.
func holdConfig(t *testing.T, wait string, maxHeld, perPartition int) *config.Config {
	t.Helper()
	doc := fmt.Sprintf(`naming: {file: naming.yaml}
limits: {failover: {maxHeld: %d, maxHeldPerPartition: %d}}
services:
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 2}
    key: {sources: [{path: "/api/orders/{id}"}], transform: int64}
    replicas: {reads: secondary, failoverWait: %s}
`, maxHeld, perPartition, wait)
	cfg, err := config.Parse([]byte(doc), "/etc/partroute/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// holdView is the naming view of holdConfig: partition 0 has primary0 ("" for none, "down"
// for an unhealthy one) and a secondary; partition 1 has no primary.
func holdView(t *testing.T, cfg *config.Config, primary0 string) *resolver.View {
	t.Helper()
	p0 := "{address: 10.0.0.2:80, role: secondary}"
	switch primary0 {
	case "":
	case "down":
		p0 = "{address: 10.0.0.1:80, role: primary, healthy: false}, " + p0
	default:
		p0 = "{address: " + primary0 + ", role: primary}, " + p0
	}
	doc := `services:
  orders:
    partitions:
      - {lowKey: 0, highKey: 49, id: orders-0, replicas: [` + p0 + `]}
      - {lowKey: 50, highKey: 99, id: orders-1, replicas: [{address: 10.0.0.9:80, role: secondary}]}
`
	v, err := resolver.ParseView([]byte(doc), "naming.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// holdFixture is a resolver over holdConfig, its hold metrics in a registry of their own.
type holdFixture struct {
	cfg *config.Config
	r   *resolver.Resolver
	reg *prometheus.Registry
}

func newHoldFixture(t *testing.T, wait string, maxHeld, perPartition int, primary0 string) *holdFixture {
	t.Helper()
	cfg := holdConfig(t, wait, maxHeld, perPartition)
	f := &holdFixture{cfg: cfg, reg: prometheus.NewRegistry()}
	f.r = resolver.New(&resolver.State{Config: cfg, Naming: holdView(t, cfg, primary0)})
	f.r.SetHoldMetrics(resolver.NewHoldMetrics(f.reg))
	return f
}

// state is a state of the fixture's configuration whose partition 0 has primary0.
func (f *holdFixture) state(t *testing.T, primary0 string) *resolver.State {
	return &resolver.State{Config: f.cfg, Naming: holdView(t, f.cfg, primary0)}
}

// held is one request given to Await on a goroutine of its own.
type held struct {
	done  chan resolver.Decision
	holds atomic.Int32
}

// await resolves req and, as the ext_proc handler does, hands a decision with Wait to Await on
// a goroutine of its own.
func (f *holdFixture) await(ctx context.Context, t *testing.T, req *keying.Request) *held {
	t.Helper()
	d := f.r.Resolve(ctx, req)
	if d.Wait == 0 {
		t.Fatalf("decision %+v has no Wait: the request would not be held", d.Err)
	}
	h := &held{done: make(chan resolver.Decision, 1)}
	go func() { h.done <- f.r.Await(ctx, req, d, func() { h.holds.Add(1) }) }()
	return h
}

func (h *held) result(t *testing.T) resolver.Decision {
	t.Helper()
	select {
	case d := <-h.done:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("a held request was never answered")
		return resolver.Decision{}
	}
}

// metric is the value of a gauge or counter, or the sample count of a histogram, of the
// fixture's registry with the given label value ("" for none).
func (f *holdFixture) metric(t *testing.T, name, label string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if label != "" && (len(m.GetLabel()) != 1 || m.GetLabel()[0].GetValue() != label) {
				continue
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Fatalf("no series %s{%s}", name, label)
	return 0
}

func TestResolveSetsWait(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		wait     string
		primary0 string
		req      *keying.Request
		want     time.Duration
		code     resolver.Code
	}{
		{"write, no primary", "2s", "", request("PUT", "h", "/api/orders/3"), 2 * time.Second, resolver.PartitionUnavailable},
		{"write, primary unhealthy", "2s", "down", request("PUT", "h", "/api/orders/3"), 2 * time.Second, resolver.PartitionUnavailable},
		{"strong read, no primary", "2s", "", request("GET", "h", "/api/orders/3", "x-partroute-consistency", "strong"), 2 * time.Second, resolver.PartitionUnavailable},
		{"write, wait off", "0s", "", request("PUT", "h", "/api/orders/3"), 0, resolver.PartitionUnavailable},
		{"read served by a secondary", "2s", "", request("GET", "h", "/api/orders/3"), 0, resolver.OK},
		{"write, primary there", "2s", "10.0.0.1:80", request("PUT", "h", "/api/orders/3"), 0, resolver.OK},
		{"bad key", "2s", "", request("PUT", "h", "/api/orders/x"), 0, resolver.InvalidPartitionKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newHoldFixture(t, tc.wait, 10, 10, tc.primary0)
			d := f.r.Resolve(ctx, tc.req)
			code := resolver.OK
			if d.Err != nil {
				code = d.Err.Code
			}
			if d.Wait != tc.want || code != tc.code {
				t.Errorf("Wait %v, code %s; want %v, %s", d.Wait, code, tc.want, tc.code)
			}
		})
	}
}

// A held write is released the moment a state with a primary is published, and routed there.
func TestAwaitReleasedByPublish(t *testing.T) {
	f := newHoldFixture(t, "10s", 10, 10, "")
	h := f.await(context.Background(), t, request("PUT", "h", "/api/orders/3"))
	testkit.WaitFor(t, "the write to be held", 5*time.Second, func() bool { return f.r.Held() == 1 })
	if got := f.metric(t, "partroute_failover_held_requests", ""); got != 1 {
		t.Errorf("partroute_failover_held_requests = %v, want 1", got)
	}
	began := time.Now()
	f.r.Swap(f.state(t, "10.0.0.7:80"))
	d := h.result(t)
	if d.Err != nil || d.Partition == nil || d.Role != resolver.RolePrimary || d.Wait != 0 {
		t.Fatalf("released decision %+v (error %v), want routed to the primary without Wait", d, d.Err)
	}
	if got := resolver.Candidates(d.Partition, d.Role); len(got) != 1 || got[0].Address != "10.0.0.7:80" {
		t.Errorf("routed to %+v, want the new primary", got)
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("released %v after the swap; it must be at once, not at the end of the wait", took)
	}
	if n := h.holds.Load(); n != 1 {
		t.Errorf("hold called %d times, want once", n)
	}
	if f.r.Held() != 0 || f.metric(t, "partroute_failover_held_requests", "") != 0 {
		t.Error("the request is still counted as held")
	}
	if got := f.metric(t, "partroute_failover_hold_duration_seconds", "published"); got != 1 {
		t.Errorf("hold_duration_seconds{end=published} count = %v, want 1", got)
	}
}

// A state staged but not published (Envoy has not acknowledged it) decides new requests but
// releases no held one; a write decided with it waits for its publication.
func TestAwaitWaitsForPublication(t *testing.T) {
	f := newHoldFixture(t, "10s", 10, 10, "")
	h := f.await(context.Background(), t, request("PUT", "h", "/api/orders/3"))
	testkit.WaitFor(t, "the write to be held", 5*time.Second, func() bool { return f.r.Held() == 1 })
	next := f.state(t, "10.0.0.7:80")
	f.r.Stage(next)
	// A new write, decided with the staged state: routable, but held until it is published.
	h2 := f.await(context.Background(), t, request("PUT", "h", "/api/orders/4"))
	if d := f.r.Resolve(context.Background(), request("PUT", "h", "/api/orders/4")); d.Err != nil {
		t.Fatalf("decided with the staged state: %v, want routable", d.Err)
	}
	testkit.WaitFor(t, "both writes to be held", 5*time.Second, func() bool { return f.r.Held() == 2 })
	select {
	case d := <-h.done:
		t.Fatalf("released before the publication: %+v", d)
	default:
	}
	f.r.Publish(next)
	for _, w := range []*held{h, h2} {
		if d := w.result(t); d.Err != nil || d.Role != resolver.RolePrimary {
			t.Fatalf("after the publication: %+v, want routed to the primary", d.Err)
		}
	}
	if got := f.metric(t, "partroute_failover_hold_duration_seconds", "published"); got != 2 {
		t.Errorf("hold_duration_seconds{end=published} count = %v, want 2", got)
	}
}

// With no primary by the end of the wait, the request gets 503, saying why, about the wait's
// time after it was held.
func TestAwaitTimesOut(t *testing.T) {
	f := newHoldFixture(t, "150ms", 10, 10, "")
	began := time.Now()
	h := f.await(context.Background(), t, request("PUT", "h", "/api/orders/3"))
	d := h.result(t)
	took := time.Since(began)
	if d.Err == nil || d.Err.Code != resolver.PartitionUnavailable || !strings.Contains(d.Err.Message, "no primary appeared within the failover wait of 150ms") {
		t.Fatalf("after the wait: %+v, want partition_unavailable naming the wait", d.Err)
	}
	if took < 150*time.Millisecond {
		t.Errorf("answered after %v, before the wait of 150ms", took)
	}
	if got := f.metric(t, "partroute_failover_hold_duration_seconds", "timeout"); got != 1 {
		t.Errorf("hold_duration_seconds{end=timeout} count = %v, want 1", got)
	}
	// A state staged and never published does not release the request: it waits to the end,
	// then is decided with the state served, which now routes it.
	f = newHoldFixture(t, "150ms", 10, 10, "")
	h = f.await(context.Background(), t, request("PUT", "h", "/api/orders/3"))
	testkit.WaitFor(t, "the write to be held", 5*time.Second, func() bool { return f.r.Held() == 1 })
	f.r.Stage(f.state(t, "10.0.0.7:80"))
	if d := h.result(t); d.Err != nil || d.Role != resolver.RolePrimary {
		t.Fatalf("at the end of the wait: %v, want routed with the state served", d.Err)
	}
	if got := f.metric(t, "partroute_failover_hold_duration_seconds", "timeout"); got != 1 {
		t.Errorf("hold_duration_seconds{end=timeout} count = %v, want 1: a staged state released the request", got)
	}
}

// Over either limit of held requests a request is answered at once, 503 naming the limit, and
// never held.
func TestAwaitLimits(t *testing.T) {
	f := newHoldFixture(t, "10s", 3, 2, "")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var waiting []*held
	refusedAtOnce := func(path, limit string) {
		t.Helper()
		req := request("PUT", "h", path)
		d := f.r.Resolve(ctx, req)
		called := false
		d = f.r.Await(ctx, req, d, func() { called = true })
		if d.Err == nil || d.Err.Code != resolver.PartitionUnavailable || !strings.Contains(d.Err.Message, limit) || called {
			t.Errorf("%s: %+v (held: %v), want partition_unavailable at once naming %s", path, d.Err, called, limit)
		}
		if got := f.metric(t, "partroute_failover_refused_requests_total", limit); got != 1 {
			t.Errorf("refused_requests_total{limit=%s} = %v, want 1", limit, got)
		}
	}
	// Partition 0 holds its 2, of 3 in all.
	for _, path := range []string{"/api/orders/1", "/api/orders/2"} {
		waiting = append(waiting, f.await(ctx, t, request("PUT", "h", path)))
	}
	testkit.WaitFor(t, "two writes to be held", 5*time.Second, func() bool { return f.r.Held() == 2 })
	refusedAtOnce("/api/orders/3", "limits.failover.maxHeldPerPartition")
	// Partition 1 may hold, up to the 3 in all.
	waiting = append(waiting, f.await(ctx, t, request("PUT", "h", "/api/orders/60")))
	testkit.WaitFor(t, "three writes to be held", 5*time.Second, func() bool { return f.r.Held() == 3 })
	refusedAtOnce("/api/orders/61", "limits.failover.maxHeld")
	// A request that goes away ends its wait and frees its place.
	cancel()
	for _, w := range waiting {
		w.result(t)
	}
	if f.r.Held() != 0 {
		t.Errorf("%d requests still held after their context ended", f.r.Held())
	}
	if got := f.metric(t, "partroute_failover_hold_duration_seconds", "canceled"); got != 3 {
		t.Errorf("hold_duration_seconds{end=canceled} count = %v, want 3", got)
	}
}

// Draining answers every held request at once and holds none after it.
func TestAwaitDrain(t *testing.T) {
	f := newHoldFixture(t, "10s", 10, 10, "")
	var waiting []*held
	for _, path := range []string{"/api/orders/1", "/api/orders/2"} {
		waiting = append(waiting, f.await(context.Background(), t, request("PUT", "h", path)))
	}
	testkit.WaitFor(t, "two writes to be held", 5*time.Second, func() bool { return f.r.Held() == 2 })
	began := time.Now()
	f.r.Drain()
	for _, w := range waiting {
		d := w.result(t)
		if d.Err == nil || d.Err.Code != resolver.PartitionUnavailable || !strings.Contains(d.Err.Message, "shutting down") {
			t.Errorf("at the drain: %+v, want partition_unavailable saying partroute is shutting down", d.Err)
		}
	}
	if took := time.Since(began); took > 2*time.Second {
		t.Errorf("the drain answered after %v, want at once", took)
	}
	req := request("PUT", "h", "/api/orders/3")
	called := false
	if d := f.r.Await(context.Background(), req, f.r.Resolve(context.Background(), req), func() { called = true }); d.Err == nil || called {
		t.Errorf("after the drain: %+v, held %v; want 503 at once", d.Err, called)
	}
	if got := f.metric(t, "partroute_failover_hold_duration_seconds", "drain"); got != 2 {
		t.Errorf("hold_duration_seconds{end=drain} count = %v, want 2", got)
	}
}

// With the wait on, a routed write decided with a published state costs nothing more.
func TestResolveWithWaitDoesNotAllocate(t *testing.T) {
	f := newHoldFixture(t, "2s", 10, 10, "10.0.0.1:80")
	ctx := context.Background()
	req := request("PUT", "h", "/api/orders/3")
	if d := f.r.Resolve(ctx, req); d.Err != nil || d.Wait != 0 {
		t.Fatalf("%+v", d)
	}
	if allocs := testing.AllocsPerRun(100, func() { _ = f.r.Resolve(ctx, req) }); allocs != 0 {
		t.Errorf("Resolve allocates %v times per request, want 0", allocs)
	}
}
