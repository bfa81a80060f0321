package servicefabric

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/cache"
	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// testConfig is the configuration the fixtures describe (see testdata/README.md).
const testConfig = `
naming: {source: file, file: naming.yaml}
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 33, count: 4}
    key: {sources: [{path: "/api/users/{id}"}], transform: int64}
    replicas: {reads: any}
  - name: regions
    match: {pathPrefix: /api/regions}
    partitioning: {scheme: named, names: [eu, us, apac]}
    key: {sources: [{path: "/api/regions/{region}"}], transform: name}
  - name: settings
    match: {pathPrefix: /api/settings}
    partitioning: {scheme: singleton}
  - name: catalog
    match: {pathPrefix: /api/catalog}
    partitioning: {scheme: singleton}
`

func loadConfig(t testing.TB, text string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(text), filepath.Join(t.TempDir(), "partroute.yaml"))
	if err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	return cfg
}

// testMappings maps the test configuration's services to the fixtures' Service Fabric services.
func testMappings() map[string]ServiceMapping {
	return map[string]ServiceMapping{
		"users":    {FabricName: "fabric:/shop/users"},
		"regions":  {FabricName: "fabric:/shop/regions", ListenerName: "Zed"},
		"settings": {FabricName: "fabric:/shop/settings"},
		"catalog":  {FabricName: "fabric:/shop/catalog"},
	}
}

// testSource builds a source over a fake gateway scripted with the standard fixtures.
type testEnv struct {
	gw    *fakeGateway
	src   *Source
	cfg   *config.Config
	clock *testkit.Clock
	reg   *prometheus.Registry
	waits *waits
}

func newEnv(t testing.TB, editClient func(*ClientOptions), editSource func(*SourceOptions)) *testEnv {
	t.Helper()
	gw, srv := newGateway(t)
	gw.standard()
	env := &testEnv{gw: gw, cfg: loadConfig(t, testConfig), clock: testkit.NewClock(), reg: prometheus.NewRegistry()}
	var c *Client
	c, env.waits = testClient(t, srv.URL, env.reg, editClient)
	opts := SourceOptions{
		Client:               c,
		Services:             testMappings(),
		Size:                 100,
		TTL:                  30 * time.Second,
		StaleIfError:         5 * time.Minute,
		ResolveTimeout:       10 * time.Second,
		ReresolveMinInterval: time.Second,
		Metrics:              env.reg,
		Now:                  env.clock.Now,
	}
	if editSource != nil {
		editSource(&opts)
	}
	src, err := NewSource(opts)
	if err != nil {
		t.Fatalf("NewSource: %v", err)
	}
	env.src = src
	return env
}

// replicaList renders replicas as "role address", with " unhealthy" where they are not, in
// the order the partition keeps them.
func replicaList(rs []resolver.Replica) []string {
	out := make([]string, 0, len(rs))
	for _, r := range rs {
		s := r.Role.String() + " " + r.Address
		if !r.Healthy {
			s += " unhealthy"
		}
		out = append(out, s)
	}
	return out
}

func TestPartitionOfEachKind(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	for _, tc := range []struct {
		service string
		index   int
		want    resolver.Partition
		// replicas as replicaList renders them
		replicas []string
		// query is what the gateway must have been asked
		query string
	}{
		{"users", 0, resolver.Partition{ID: users0, Index: 0, LowKey: 0, HighKey: 8},
			[]string{"primary 10.0.0.4:8080", "secondary 10.0.0.5:8080", "secondary 10.0.0.6:8080"},
			"PartitionKeyType=2&PartitionKeyValue=0"},
		// The regions mapping names the listener Zed, so the http listener is chosen over
		// the https one that comes first in name order.
		{"regions", 0, resolver.Partition{ID: regionEU, Index: 0, Name: "eu"},
			[]string{"primary 10.0.1.4:8080"},
			"PartitionKeyType=3&PartitionKeyValue=eu"},
		// A guest executable's plain addresses.
		{"settings", 0, resolver.Partition{ID: settings},
			[]string{"primary 10.0.2.4:7000", "secondary settings-node-2:7001"},
			"PartitionKeyType=1"},
		// Stateless instances are primaries; the Invalid endpoint is skipped.
		{"catalog", 0, resolver.Partition{ID: catalog},
			[]string{"primary 10.0.3.4:80", "primary 10.0.3.5:80", "primary [fd00::6]:443"},
			"PartitionKeyType=1"},
	} {
		t.Run(tc.service, func(t *testing.T) {
			p, err := env.src.Partition(ctx, env.cfg.Service(tc.service), keying.Key{Index: tc.index})
			if err != nil {
				t.Fatal(err)
			}
			got := *p
			got.Replicas = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("partition %+v, want %+v", got, tc.want)
			}
			if r := replicaList(p.Replicas); !reflect.DeepEqual(r, tc.replicas) {
				t.Errorf("replicas %q, want %q", r, tc.replicas)
			}
			reqs := env.gw.requests("/Services/shop~" + tc.service + "/$/ResolvePartition")
			if len(reqs) != 1 || !strings.Contains(reqs[0].URL.RawQuery, tc.query) || reqs[0].URL.Query().Has("PreviousRspVersion") {
				t.Errorf("requests %v, want one with %s and no PreviousRspVersion", reqs, tc.query)
			}
		})
	}
}

// Every key of a partition resolves through the partition's LowKey and shares one entry.
func TestOneEntryPerPartition(t *testing.T) {
	env := newEnv(t, nil, nil)
	users := env.cfg.Service("users")
	for _, key := range []int64{0, 3, 8} {
		p, err := env.src.Partition(context.Background(), users, keying.Key{Index: 0, Int: key})
		if err != nil || p.ID != users0 {
			t.Fatalf("key %d: %v, %v", key, p, err)
		}
	}
	if n := len(env.gw.requests("/Services/shop~users/")); n != 1 {
		t.Errorf("%d gateway requests for three keys of one partition, want 1", n)
	}
	if n := counter(t, env.reg, "partroute_cache_lookups_total", map[string]string{"source": "servicefabric", "result": "hit"}); n != 2 {
		t.Errorf("cache hits %v (the cache's metrics must carry source=servicefabric)", n)
	}
}

func TestFailoverAfterInvalidate(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	users := env.cfg.Service("users")
	route := "/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0"

	p1, err := env.src.Partition(ctx, users, keying.Key{Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	if r := replicaList(p1.Replicas); r[0] != "primary 10.0.0.4:8080" {
		t.Fatalf("before the failover: %q", r)
	}

	// The primary moves. Until partroute hears of it, it keeps serving its entry.
	env.gw.on(route, ok("resolve-users-0-v2.json"))
	if p, _ := env.src.Partition(ctx, users, keying.Key{Index: 0}); p != p1 {
		t.Fatal("the entry was refreshed without a signal")
	}

	// An upstream 503 from the old primary: the extproc handler calls Invalidate.
	if !env.src.Invalidate("users", 0) {
		t.Fatal("first Invalidate was not accepted")
	}
	p2, err := env.src.Partition(ctx, users, keying.Key{Index: 0})
	if err != nil {
		t.Fatal(err)
	}
	if r := replicaList(p2.Replicas); !reflect.DeepEqual(r, []string{"primary 10.0.0.5:8080", "secondary 10.0.0.4:8080", "secondary 10.0.0.6:8080"}) {
		t.Errorf("after the failover: %q", r)
	}
	reqs := env.gw.requests("/Services/shop~users/")
	if got := reqs[len(reqs)-1].URL.Query().Get("PreviousRspVersion"); got != "132587449886596373" {
		t.Errorf("re-resolution sent PreviousRspVersion %q, want the first resolution's Version", got)
	}

	// More 503s from the same partition within ReresolveMinInterval do not reach the gateway.
	if env.src.Invalidate("users", 0) {
		t.Error("a second Invalidate within the interval was accepted")
	}
	env.clock.Advance(time.Second)
	if !env.src.Invalidate("users", 0) {
		t.Error("Invalidate after the interval was not accepted")
	}
	// The gateway has nothing newer: the same Version keeps the entry already held.
	p3, err := env.src.Partition(ctx, users, keying.Key{Index: 0})
	if err != nil || p3 != p2 {
		t.Errorf("same Version gave %p (%v), want the held %p", p3, err, p2)
	}
	reqs = env.gw.requests("/Services/shop~users/")
	if got := reqs[len(reqs)-1].URL.Query().Get("PreviousRspVersion"); got != "132587450105472811" {
		t.Errorf("PreviousRspVersion %q, want the second resolution's Version", got)
	}
	if n := counter(t, env.reg, "partroute_servicefabric_resolves_total", map[string]string{"result": "unchanged"}); n != 1 {
		t.Errorf("unchanged resolutions %v", n)
	}
	if a, l := counter(t, env.reg, "partroute_servicefabric_reresolves_total", map[string]string{"result": "accepted"}),
		counter(t, env.reg, "partroute_servicefabric_reresolves_total", map[string]string{"result": "limited"}); a != 2 || l != 1 {
		t.Errorf("reresolves accepted %v limited %v, want 2 and 1", a, l)
	}

	// Expiry refreshes too, also passing the Version held.
	env.clock.Advance(31 * time.Second)
	if _, err := env.src.Partition(ctx, users, keying.Key{Index: 0}); err != nil {
		t.Fatal(err)
	}
	if n := len(env.gw.requests("/Services/shop~users/")); n != 4 {
		t.Errorf("%d requests, want 4", n)
	}
}

func TestInvalidateRateLimit(t *testing.T) {
	env := newEnv(t, nil, func(o *SourceOptions) { o.ReresolveMinInterval = 5 * time.Second })
	ctx := context.Background()
	if env.src.Invalidate("users", 0) {
		t.Error("Invalidate of a partition never resolved was accepted")
	}
	if env.src.Invalidate("nosuch", 0) {
		t.Error("Invalidate of an unknown service was accepted")
	}
	for _, svc := range []string{"users", "regions"} {
		if _, err := env.src.Partition(ctx, env.cfg.Service(svc), keying.Key{Index: 0}); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		advance time.Duration
		service string
		want    bool
	}{
		{0, "users", true},
		{0, "users", false},
		{0, "regions", true}, // each partition has its own limit
		{4999 * time.Millisecond, "users", false},
		{time.Millisecond, "users", true},
		{0, "users", false},
		{0, "regions", true},
	}
	for i, s := range steps {
		env.clock.Advance(s.advance)
		if got := env.src.Invalidate(s.service, 0); got != s.want {
			t.Errorf("step %d: Invalidate(%s) = %v, want %v", i, s.service, got, s.want)
		}
	}
	if a, l := counter(t, env.reg, "partroute_servicefabric_reresolves_total", map[string]string{"result": "accepted"}),
		counter(t, env.reg, "partroute_servicefabric_reresolves_total", map[string]string{"result": "limited"}); a != 4 || l != 3 {
		t.Errorf("reresolves accepted %v limited %v, want 4 and 3", a, l)
	}
}

func TestGatewayFailuresServeStale(t *testing.T) {
	env := newEnv(t, func(o *ClientOptions) { o.Timeout = 250 * time.Millisecond }, nil)
	ctx := context.Background()
	users := env.cfg.Service("users")
	route := "/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0"
	p1, err := env.src.Partition(ctx, users, keying.Key{Index: 0})
	if err != nil {
		t.Fatal(err)
	}

	// The gateway answers 503 on every attempt: after the retries, the stale entry is served.
	env.gw.on(route, reply{status: 503, file: "error-service-offline.json"})
	env.clock.Advance(31 * time.Second)
	p, err := env.src.Partition(ctx, users, keying.Key{Index: 0})
	if err != nil || p != p1 {
		t.Fatalf("expired entry with the gateway failing: %v, %v; want the stale entry", p, err)
	}
	if n := len(env.gw.requests("/Services/shop~users/")); n != 1+3 {
		t.Errorf("%d requests, want the first and three attempts of the refill", n)
	}
	if n := counter(t, env.reg, "partroute_cache_lookups_total", map[string]string{"source": "servicefabric", "result": "stale"}); n != 1 {
		t.Errorf("stale lookups %v", n)
	}

	// Within ReresolveMinInterval of the failure the gateway is not asked again.
	env.clock.Advance(500 * time.Millisecond)
	if p, err := env.src.Partition(ctx, users, keying.Key{Index: 0}); err != nil || p != p1 {
		t.Fatalf("%v, %v", p, err)
	}
	if n := len(env.gw.requests("/Services/shop~users/")); n != 4 {
		t.Errorf("%d requests, want no new one within the interval", n)
	}
	if n := counter(t, env.reg, "partroute_servicefabric_resolves_total", map[string]string{"result": "suppressed"}); n != 1 {
		t.Errorf("suppressed resolutions %v", n)
	}

	// Timeouts count as failures too: each attempt runs out of the client's Timeout.
	env.gw.on(route, reply{hang: true})
	env.clock.Advance(time.Second)
	if p, err := env.src.Partition(ctx, users, keying.Key{Index: 0}); err != nil || p != p1 {
		t.Fatalf("with the gateway hanging: %v, %v", p, err)
	}

	// Past StaleIfError nothing usable is left: naming unavailable, with the cause.
	env.gw.on(route, reply{status: 503, file: "error-service-offline.json"})
	env.clock.Advance(5 * time.Minute)
	_, err = env.src.Partition(ctx, users, keying.Key{Index: 0})
	if !errors.Is(err, cache.ErrUnavailable) {
		t.Fatalf("error %v, want cache.ErrUnavailable", err)
	}
	for _, want := range []string{"service users (fabric:/shop/users) partition 0 [0, 8]", "FABRIC_E_SERVICE_OFFLINE", "after 3 attempts"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}

	// And the resolver turns that into 503 naming_unavailable.
	r := resolver.New(&resolver.State{Config: env.cfg, Naming: env.src})
	d := r.Resolve(ctx, &keying.Request{Method: "GET", Path: "/api/users/3"})
	if d.Err == nil || d.Err.Code != resolver.NamingUnavailable {
		t.Errorf("decision %+v, want naming_unavailable", d)
	}
}

func TestBadAddressesAndSchemeMismatch(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	users := env.cfg.Service("users")

	// One endpoint out of three is usable: the others are skipped, counted and logged.
	p, err := env.src.Partition(ctx, users, keying.Key{Index: 1})
	if err != nil {
		t.Fatal(err)
	}
	if r := replicaList(p.Replicas); !reflect.DeepEqual(r, []string{"primary 10.0.0.7:8080"}) {
		t.Errorf("replicas %q", r)
	}
	if n := counter(t, env.reg, "partroute_servicefabric_bad_addresses_total", nil); n != 2 {
		t.Errorf("bad addresses %v, want 2", n)
	}

	// None usable: the partition fails, naming the service, the partition and each address.
	_, err = env.src.Partition(ctx, users, keying.Key{Index: 2})
	for _, want := range []string{"service users (fabric:/shop/users) partition 2 [18, 25]", users2, "has no usable endpoint",
		`"not an address": is neither`, `port "99999"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}

	// Service Fabric partitions the service otherwise than partroute.yaml says.
	_, err = env.src.Partition(ctx, users, keying.Key{Index: 3})
	if err == nil || !strings.Contains(err.Error(), "partroute.yaml has [26, 33] but Service Fabric's partition "+users3+" holding key 26 covers [24, 33]") {
		t.Errorf("mismatch error %v", err)
	}

	// A malformed answer names the service too.
	env.gw.on("/Services/shop~settings/$/ResolvePartition?PartitionKeyType=1", reply{status: 200, body: `{"PartitionInformation":{"ServicePartitionKind":"Singleton"`})
	_, err = env.src.Partition(ctx, env.cfg.Service("settings"), keying.Key{Index: 0})
	var de *DecodeError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), "service settings (fabric:/shop/settings)") || !strings.Contains(err.Error(), "malformed answer") {
		t.Errorf("malformed answer: %v", err)
	}
}

func TestSchemeKindMismatch(t *testing.T) {
	env := newEnv(t, nil, nil)
	// regions is named in partroute.yaml; the gateway answers with an Int64Range partition.
	env.gw.on("/Services/shop~regions/$/ResolvePartition?PartitionKeyType=3&PartitionKeyValue=eu", ok("resolve-users-0-v1.json"))
	_, err := env.src.Partition(context.Background(), env.cfg.Service("regions"), keying.Key{Index: 0})
	if err == nil || !strings.Contains(err.Error(), "partroute.yaml says named but Service Fabric has a Int64Range partition") {
		t.Errorf("error %v", err)
	}
}

func TestResolverDecision(t *testing.T) {
	env := newEnv(t, nil, nil)
	r := resolver.New(&resolver.State{Config: env.cfg, Naming: env.src})
	d := r.Resolve(context.Background(), &keying.Request{Method: "PUT", Path: "/api/users/5"})
	if d.Err != nil || d.Partition == nil || d.Partition.ID != users0 || d.Role != resolver.RolePrimary {
		t.Fatalf("decision %+v", d)
	}
	d = r.Resolve(context.Background(), &keying.Request{Method: "GET", Path: "/api/catalog/items"})
	if d.Err != nil || d.Partition.ID != catalog || d.Role != resolver.RolePrimary {
		t.Fatalf("stateless decision %+v", d)
	}
}

// cancelOn is a log handler that cancels a context when a given message is logged, for a test
// to end a retry loop at a known point.
type cancelOn struct {
	msg    string
	cancel context.CancelFunc
}

func (h cancelOn) Enabled(context.Context, slog.Level) bool { return true }

func (h cancelOn) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.cancel()
	}
	return nil
}

func (h cancelOn) WithAttrs([]slog.Attr) slog.Handler { return h }

func (h cancelOn) WithGroup(string) slog.Handler { return h }

// Initial given up is the context's error, and the gateway's last answer.
func TestInitialGivenUpKeepsTheLastError(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	env := newEnv(t, nil, func(o *SourceOptions) {
		o.Log = slog.New(cancelOn{msg: "waiting for the Service Fabric gateway", cancel: cancel})
	})
	env.gw.on("/Services/shop~users/$/GetPartitions", reply{status: 503, file: "error-service-offline.json"})
	_, err := env.src.Initial(ctx, env.cfg)
	var ge *GatewayError
	if !errors.Is(err, context.Canceled) || !errors.As(err, &ge) || ge.StatusCode != 503 || ge.Code != "FABRIC_E_SERVICE_OFFLINE" {
		t.Fatalf("Initial cancelled: %v, want context.Canceled and the gateway's 503 FABRIC_E_SERVICE_OFFLINE", err)
	}
}

func TestNewSourceValidation(t *testing.T) {
	c, err := NewClient(ClientOptions{Endpoint: "http://gw:19080"})
	if err != nil {
		t.Fatal(err)
	}
	base := SourceOptions{Client: c, Size: 10, TTL: time.Second, Services: testMappings()}
	for _, tc := range []struct {
		name string
		edit func(*SourceOptions)
		want string
	}{
		{"no client", func(o *SourceOptions) { o.Client = nil }, "a Client is required"},
		{"bad fabric name", func(o *SourceOptions) { o.Services = map[string]ServiceMapping{"users": {FabricName: "shop/users"}} }, "service users: fabric.name"},
		{"negative interval", func(o *SourceOptions) { o.ReresolveMinInterval = -time.Second }, "reresolveMinInterval"},
		{"cache size", func(o *SourceOptions) { o.Size = 0 }, "cache.size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := base
			tc.edit(&o)
			if _, err := NewSource(o); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("NewSource: %v, want an error containing %q", err, tc.want)
			}
		})
	}

	// A failed NewSource leaves the registry as it was, so that a corrected one can register.
	reg := prometheus.NewRegistry()
	o := base
	o.Metrics, o.TTL = reg, 0
	if _, err := NewSource(o); err == nil {
		t.Fatal("NewSource with no TTL succeeded")
	}
	o.TTL = time.Second
	if _, err := NewSource(o); err != nil {
		t.Fatalf("NewSource after a failed one: %v", err)
	}

	src, err := NewSource(base)
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadConfig(t, testConfig)
	if err := src.Check(cfg); err != nil {
		t.Errorf("Check: %v", err)
	}
	o = base
	o.Services = map[string]ServiceMapping{"users": {FabricName: "fabric:/shop/users"}, "orders": {FabricName: "fabric:/shop/orders"}}
	src, err = NewSource(o)
	if err != nil {
		t.Fatal(err)
	}
	err = src.Check(cfg)
	for _, want := range []string{"service regions: has no fabric.name", "service orders: mapped to fabric:/shop/orders but not configured"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Check: %v lacks %q", err, want)
		}
	}
	if _, err := src.Partition(context.Background(), cfg.Service("regions"), keying.Key{}); err == nil || !strings.Contains(err.Error(), "not mapped") {
		t.Errorf("Partition of an unmapped service: %v", err)
	}
}

func TestShouldReresolve(t *testing.T) {
	h := func(kv ...string) http.Header {
		out := http.Header{}
		for i := 0; i < len(kv); i += 2 {
			out.Add(kv[i], kv[i+1])
		}
		return out
	}
	for _, tc := range []struct {
		status int
		header http.Header
		want   bool
	}{
		{503, nil, true},
		{503, h("X-ServiceFabric", "ResourceNotFound"), true},
		{410, nil, true},
		{404, nil, true},
		{404, h("X-ServiceFabric", "ResourceNotFound"), false},
		{404, h("x-servicefabric", "resourcenotfound"), false},
		{404, h("X-ServiceFabric", " ResourceNotFound "), false},
		{404, h("X-ServiceFabric", "Other"), true},
		{404, h("X-ServiceFabric", "Other", "X-ServiceFabric", "ResourceNotFound"), false},
		{404, h("X-Other", "ResourceNotFound"), true},
		{200, nil, false},
		{500, nil, false},
		{502, nil, false},
		{504, nil, false},
		{429, nil, false},
		{400, nil, false},
	} {
		if got := ShouldReresolve(tc.status, tc.header); got != tc.want {
			t.Errorf("ShouldReresolve(%d, %v) = %v, want %v", tc.status, tc.header, got, tc.want)
		}
	}
}

func TestObserveUpstream(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	r := resolver.New(&resolver.State{Config: env.cfg, Naming: env.src, Upstream: env.src})
	d := r.Resolve(ctx, &keying.Request{Method: "GET", Path: "/api/users/4"})
	if d.Err != nil {
		t.Fatal(d.Err)
	}
	notFound := keying.HeaderList{{Name: "x-servicefabric", Value: "ResourceNotFound"}}
	steps := []struct {
		status  int
		headers keying.Headers
		want    bool
	}{
		{200, nil, false},
		{500, nil, false},
		{404, notFound, false}, // the resource is missing, not the replica
		{503, keying.HeaderList{}, true},
		{410, nil, false}, // the rule holds, but the rate limit refuses it
		{404, keying.HeaderList{{Name: "x-servicefabric", Value: "Other"}}, false},
	}
	for i, s := range steps {
		if got := d.Upstream.Report(s.status, s.headers); got != s.want {
			t.Errorf("step %d: status %d gave %v, want %v", i, s.status, got, s.want)
		}
	}
	if a, l := counter(t, env.reg, "partroute_servicefabric_reresolves_total", map[string]string{"result": "accepted"}),
		counter(t, env.reg, "partroute_servicefabric_reresolves_total", map[string]string{"result": "limited"}); a != 1 || l != 2 {
		t.Errorf("reresolves accepted %v limited %v, want 1 and 2", a, l)
	}
	env.clock.Advance(time.Second)
	if !d.Upstream.Report(404, nil) {
		t.Error("a 404 without the header after the interval was not accepted")
	}
}
