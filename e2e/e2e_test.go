package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
)

// stack is a real Envoy in front of partroute (in-process) and identity backends, all on
// loopback ports chosen for the test.
type stack struct {
	t        *testing.T
	cfg      *config.Config
	view     *resolver.View
	backends *loadtest.Backends
	envoy    string // Envoy's listener, host:port
	client   *http.Client

	partroute *partrouteProcess
}

// e2eConfig is the test configuration. %[1]s is partroute's ext_proc address, %[2]s its
// admin address, %[3]s the unmatched policy and %[4]s headers.setBy.
const e2eConfig = `
listen: {extproc: "%[1]s", admin: "%[2]s"}
naming: {source: file, file: naming.yaml}
unmatched: %[3]s
headers: {setBy: %[4]s}
maxBodyBytes: 256
services:
  - name: orders
    match: {authority: "*.example.com", pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 299, count: 3}
    key: {sources: [{path: "/api/orders/{id}"}, {header: x-order-id}], transform: int64}
    replicas: {reads: any}
  - name: carts
    match: {pathPrefix: /api/carts}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 299, count: 3}
    key: {sources: [{header: x-cart-id}, {query: cart}], transform: int64}
    replicas: {reads: secondary}
  - name: profiles
    match: {pathPrefix: /api/profiles}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 299, count: 3}
    key: {sources: [{cookie: uid}], transform: hash}
  - name: regions
    match: {pathPrefix: /api/regions}
    partitioning: {scheme: named, names: [eu, us]}
    key: {sources: [{path: "/api/regions/{region}"}], transform: name}
  - name: settings
    match: {pathPrefix: /api/settings}
    partitioning: {scheme: singleton}
  - name: events
    match: {pathPrefix: /api/events}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 299, count: 3}
    key: {sources: [{jsonBody: /user/id}], transform: int64}
`

// startStack writes the configuration and a naming view with one backend per replica and
// brings everything up. Three partitions of three replicas per int64 service; in carts'
// last partition both secondaries are unhealthy, and profiles' last partition has no healthy
// replica at all. setBy is the shape of partroute's answer, and so of Envoy's routes.
func startStack(t *testing.T, unmatched string, setBy config.SetBy) *stack {
	t.Helper()
	dir := t.TempDir()
	ports := testkit.FreePorts(t, 4+5*9+3)
	extprocAddr, adminAddr, envoyAddr, envoyAdmin := ports[0], ports[1], ports[2], ports[3]
	next := ports[4:]
	take := func() string { a := next[0]; next = next[1:]; return a }

	var naming strings.Builder
	naming.WriteString("services:\n")
	for _, svc := range []string{"orders", "carts", "profiles", "events"} {
		fmt.Fprintf(&naming, "  %s:\n    partitions:\n", svc)
		for p, bounds := range [][2]int{{0, 99}, {100, 199}, {200, 299}} {
			fmt.Fprintf(&naming, "      - {lowKey: %d, highKey: %d, id: %s-%d, replicas: [", bounds[0], bounds[1], svc, p)
			secHealthy, priHealthy := "true", "true"
			if svc == "carts" && p == 2 {
				secHealthy = "false"
			}
			if svc == "profiles" && p == 2 {
				secHealthy, priHealthy = "false", "false"
			}
			fmt.Fprintf(&naming, "{address: %q, role: primary, healthy: %s}, {address: %q, role: secondary, healthy: %s}, {address: %q, role: secondary, healthy: %s}]}\n",
				take(), priHealthy, take(), secHealthy, take(), secHealthy)
		}
	}
	fmt.Fprintf(&naming, "  regions:\n    partitions:\n      - {name: eu, replicas: [{address: %q, role: primary}]}\n      - {name: us, replicas: [{address: %q, role: primary}]}\n", take(), take())
	fmt.Fprintf(&naming, "  settings:\n    partitions:\n      - {replicas: [{address: %q, role: primary}]}\n", take())

	cfgPath := filepath.Join(dir, "partroute.yaml")
	write(t, cfgPath, fmt.Sprintf(e2eConfig, extprocAddr, adminAddr, unmatched, setBy))
	write(t, filepath.Join(dir, "naming.yaml"), naming.String())
	cfg, view, err := resolver.LoadConfigAndView(cfgPath, "")
	if err != nil {
		t.Fatal(err)
	}

	s := &stack{t: t, cfg: cfg, view: view, envoy: envoyAddr, client: &http.Client{Timeout: 10 * time.Second}}
	var addrs []string
	for _, sv := range view.Services {
		for _, p := range sv.Partitions {
			for _, r := range p.Replicas {
				addrs = append(addrs, r.Address)
			}
		}
	}
	if s.backends, err = loadtest.StartBackends(addrs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.backends.Close)

	s.partroute = runPartroute(t, cfgPath, adminAddr, time.Hour)
	runEnvoy(t, dir, cfg, view, envoyconfig.Options{ListenAddress: envoyAddr, AdminAddress: envoyAdmin}, envoyconfig.ExtProcCluster)
	return s
}

func write(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// result is what one request through Envoy came back with.
type result struct {
	status    int
	echo      loadtest.Echo
	errorCode string
	header    http.Header
	body      string
}

// do sends one request through Envoy. headers alternate names and values.
func (s *stack) do(method, host, target, body string, headers ...string) result {
	s.t.Helper()
	req, err := http.NewRequest(method, "http://"+s.envoy+target, strings.NewReader(body))
	if err != nil {
		s.t.Fatal(err)
	}
	req.Host = host
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	r := result{status: resp.StatusCode, header: resp.Header, body: string(raw), errorCode: resp.Header.Get("x-partroute-error")}
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(raw, &r.echo); err != nil {
			s.t.Fatalf("%s %s: backend answer %q: %v", method, target, raw, err)
		}
	}
	return r
}

// replicas returns the addresses of partition i of svc with the given role.
func (s *stack) replicas(svc string, i int, role resolver.Role) []string {
	var out []string
	for _, r := range s.view.Services[svc].Partitions[i].Replicas {
		if r.Role == role {
			out = append(out, r.Address)
		}
	}
	return out
}

func (s *stack) primary(svc string, i int) string { return s.replicas(svc, i, resolver.RolePrimary)[0] }

func TestEndToEndThroughEnvoy(t *testing.T) {
	s := startStack(t, "reject", config.DefaultSetBy)
	orders := s.cfg.Service("orders").Scheme()

	t.Run("writes land on the primary of the partition the maths gives", func(t *testing.T) {
		for k := 0; k < 300; k += 3 { // 100 keys, each written twice below
			for _, method := range []string{"PUT", "POST"} {
				r := s.do(method, "api.example.com", "/api/orders/"+strconv.Itoa(k), "")
				idx, _ := orders.PartitionOfInt64(int64(k))
				if r.status != 200 || r.echo.Backend != s.primary("orders", idx) {
					t.Fatalf("%s key %d: status %d backend %q, want the primary of orders-%d %s", method, k, r.status, r.echo.Backend, idx, s.primary("orders", idx))
				}
				if r.echo.Partition != "orders-"+strconv.Itoa(idx) || r.echo.Role != "primary" || r.echo.Key != strconv.Itoa(k) {
					t.Fatalf("key %d: upstream headers partition=%q role=%q key=%q", k, r.echo.Partition, r.echo.Role, r.echo.Key)
				}
			}
		}
	})

	t.Run("reads under any reach every replica of the partition", func(t *testing.T) {
		seen := map[string]bool{}
		for i := 0; i < 60; i++ {
			r := s.do("GET", "api.example.com", "/api/orders/150", "")
			if r.status != 200 {
				t.Fatalf("status %d", r.status)
			}
			seen[r.echo.Backend] = true
		}
		want := append(s.replicas("orders", 1, resolver.RolePrimary), s.replicas("orders", 1, resolver.RoleSecondary)...)
		for _, a := range want {
			if !seen[a] {
				t.Errorf("replica %s of orders-1 never served a read; saw %v", a, seen)
			}
		}
		if len(seen) != len(want) {
			t.Errorf("reads reached %v, want exactly %v", seen, want)
		}
	})

	t.Run("reads under secondary reach only secondaries", func(t *testing.T) {
		secondaries := map[string]bool{}
		for _, a := range s.replicas("carts", 0, resolver.RoleSecondary) {
			secondaries[a] = true
		}
		seen := map[string]bool{}
		for i := 0; i < 40; i++ {
			r := s.do("GET", "x", "/api/carts", "", "x-cart-id", "42")
			if r.status != 200 || !secondaries[r.echo.Backend] || r.echo.Role != "secondary" {
				t.Fatalf("read went to %q (role %q, status %d), want a secondary of carts-0", r.echo.Backend, r.echo.Role, r.status)
			}
			seen[r.echo.Backend] = true
		}
		if len(seen) != 2 {
			t.Errorf("reads reached %v, want both secondaries", seen)
		}
	})

	t.Run("reads fall back to the primary when no secondary is healthy", func(t *testing.T) {
		for i := 0; i < 10; i++ {
			r := s.do("GET", "x", "/api/carts?cart=250", "")
			if r.status != 200 || r.echo.Backend != s.primary("carts", 2) {
				t.Fatalf("read went to %q (status %d), want the primary of carts-2", r.echo.Backend, r.status)
			}
		}
	})

	t.Run("a strong read goes to the primary", func(t *testing.T) {
		for i := 0; i < 10; i++ {
			r := s.do("GET", "api.example.com", "/api/orders/7", "", "x-partroute-consistency", "strong")
			if r.status != 200 || r.echo.Backend != s.primary("orders", 0) {
				t.Fatalf("strong read went to %q (status %d), want the primary of orders-0", r.echo.Backend, r.status)
			}
		}
	})

	t.Run("client-sent partition headers change nothing", func(t *testing.T) {
		for i := 0; i < 10; i++ {
			r := s.do("GET", "x", "/api/carts", "", "x-cart-id", "5", "x-partition-role", "primary", "x-partition-id", "carts-2")
			if r.status != 200 || r.echo.Role != "secondary" || r.echo.Partition != "carts-0" {
				t.Fatalf("read with forged headers: status %d, partition %q role %q backend %q", r.status, r.echo.Partition, r.echo.Role, r.echo.Backend)
			}
		}
		r := s.do("PUT", "api.example.com", "/api/orders/5", "", "x-partition-id", "orders-2", "x-partition-key", "250")
		if r.echo.Backend != s.primary("orders", 0) || r.echo.Partition != "orders-0" || r.echo.Key != "5" {
			t.Fatalf("write with forged headers reached %q with partition %q key %q", r.echo.Backend, r.echo.Partition, r.echo.Key)
		}
	})

	t.Run("named, singleton, hash and body-keyed services", func(t *testing.T) {
		for _, name := range []string{"eu", "us"} {
			r := s.do("PUT", "x", "/api/regions/"+name, "")
			if r.status != 200 || r.echo.Backend != s.view.Services["regions"].Partitions[map[string]int{"eu": 0, "us": 1}[name]].Replicas[0].Address {
				t.Fatalf("region %s: status %d backend %q", name, r.status, r.echo.Backend)
			}
		}
		r := s.do("POST", "x", "/api/settings/theme", "")
		if r.status != 200 || r.echo.Backend != s.primary("settings", 0) || r.echo.Key != "" {
			t.Fatalf("singleton: status %d backend %q key %q", r.status, r.echo.Backend, r.echo.Key)
		}
		profiles := s.cfg.Service("profiles").Keyer
		for _, uid := range []string{"alice", "bob", "carol", "dave"} {
			key, fail := profiles.Partition(requestWithCookie("uid=" + uid))
			if fail != nil {
				t.Fatal(fail)
			}
			r := s.do("PUT", "x", "/api/profiles", "", "cookie", "uid="+uid)
			if key.Index == 2 {
				if r.status != 503 || r.errorCode != "partition_unavailable" {
					t.Fatalf("uid %s hashes to the partition with no healthy replica: status %d code %q", uid, r.status, r.errorCode)
				}
				continue
			}
			if r.status != 200 || r.echo.Backend != s.primary("profiles", key.Index) || r.echo.Key != strconv.FormatInt(key.Int, 10) {
				t.Fatalf("uid %s: status %d backend %q key %q, want %s key %d", uid, r.status, r.echo.Backend, r.echo.Key, s.primary("profiles", key.Index), key.Int)
			}
		}
		r = s.do("POST", "x", "/api/events", `{"user": {"id": 123}, "kind": "click"}`, "content-type", "application/json")
		if r.status != 200 || r.echo.Backend != s.primary("events", 1) || r.echo.Key != "123" {
			t.Fatalf("body-keyed write: status %d backend %q key %q body %q", r.status, r.echo.Backend, r.echo.Key, r.body)
		}
	})

	t.Run("every row of the error table comes back through Envoy", func(t *testing.T) {
		cases := []struct {
			name, method, target, body string
			headers                    []string
			status                     int
			code                       string
		}{
			{"missing key", "GET", "/api/carts", "", nil, 400, "missing_partition_key"},
			{"invalid key with plus", "GET", "/api/carts", "", []string{"x-cart-id", "+1"}, 400, "invalid_partition_key"},
			{"invalid key with exponent", "GET", "/api/carts?cart=1e3", "", nil, 400, "invalid_partition_key"},
			{"key overflows int64", "GET", "/api/carts", "", []string{"x-cart-id", "9223372036854775808"}, 400, "invalid_partition_key"},
			{"key out of range", "GET", "/api/carts", "", []string{"x-cart-id", "300"}, 400, "partition_key_out_of_range"},
			{"unknown partition name", "GET", "/api/regions/apac", "", nil, 400, "partition_key_out_of_range"},
			{"no healthy replica", "PUT", "/api/profiles", "", []string{"cookie", "uid=" + hashingTo(t, s, 2)}, 503, "partition_unavailable"},
			{"no service matches", "GET", "/elsewhere", "", nil, 404, "no_service"},
			{"body over the limit", "POST", "/api/events", `{"user": {"id": 1}, "pad": "` + strings.Repeat("x", 300) + `"}`, nil, 413, "request_body_too_large"},
			{"body without the key", "POST", "/api/events", `{"user": {}}`, nil, 400, "missing_partition_key"},
		}
		for _, c := range cases {
			before := totalServed(s)
			r := s.do(c.method, "x", c.target, c.body, c.headers...)
			if r.status != c.status || r.errorCode != c.code {
				t.Errorf("%s: status %d code %q body %q, want %d %s", c.name, r.status, r.errorCode, r.body, c.status, c.code)
				continue
			}
			var body struct {
				Error struct{ Code, Message string }
			}
			if err := json.Unmarshal([]byte(r.body), &body); err != nil || body.Error.Code != c.code || body.Error.Message == "" {
				t.Errorf("%s: body %q is not the error JSON with code %s", c.name, r.body, c.code)
			}
			if (c.status == 503) != (r.header.Get("retry-after") != "") {
				t.Errorf("%s: retry-after %q", c.name, r.header.Get("retry-after"))
			}
			if after := totalServed(s); after != before {
				t.Errorf("%s: a rejected request reached a backend", c.name)
			}
		}
	})

	t.Run("with partroute stopped requests fail and reach no backend", func(t *testing.T) {
		s.partroute.Stop()
		before := totalServed(s)
		for i := 0; i < 20; i++ {
			r := s.do("PUT", "api.example.com", "/api/orders/"+strconv.Itoa(i*10), "")
			if r.status < 500 {
				t.Fatalf("request %d with partroute stopped: status %d, want 5xx", i, r.status)
			}
		}
		if after := totalServed(s); after != before {
			t.Fatalf("%d requests reached backends while partroute was stopped", after-before)
		}
	})
}

func totalServed(s *stack) int64 {
	var n int64
	for _, b := range s.backends.All() {
		n += b.Served()
	}
	return n
}

// hashingTo returns a profiles uid whose hash lands in partition idx.
func hashingTo(t *testing.T, s *stack, idx int) string {
	k := s.cfg.Service("profiles").Keyer
	for i := 0; i < 10000; i++ {
		uid := "user" + strconv.Itoa(i)
		if key, fail := k.Partition(requestWithCookie("uid=" + uid)); fail == nil && key.Index == idx {
			return uid
		}
	}
	t.Fatalf("no uid hashes to partition %d", idx)
	return ""
}

func requestWithCookie(cookie string) *keying.Request {
	return &keying.Request{Headers: keying.HeaderList{{Name: "cookie", Value: cookie}}}
}
