package etcdsource_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/etcdsource/etcdtest"
)

// The example files that the demo and the docs use.
const (
	exampleConfig = "../../envoy-config/examples/partroute.yaml"
	exampleNaming = "../../envoy-config/examples/naming.yaml"
)

// ctx returns a context that ends with the test, bounded so that a hung etcd fails the test
// rather than the whole run.
func ctx(t testing.TB) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return c
}

// harness is a Source under test with its registry, log and the views it handed out.
type harness struct {
	src   *etcdsource.Source
	reg   *prometheus.Registry
	log   *testkit.LogBuffer
	views chan *resolver.View
	cfg   *config.Config
}

// fastOptions make outages show within a fraction of a second, so that the tests finish fast
// while exercising the same paths as the defaults.
func fastOptions(c *clientv3.Client) etcdsource.Options {
	return etcdsource.Options{
		Client:         c,
		RequestTimeout: 300 * time.Millisecond,
		ProbeInterval:  100 * time.Millisecond,
		BackoffMin:     20 * time.Millisecond,
		BackoffMax:     200 * time.Millisecond,
	}
}

func newHarness(t testing.TB, opts etcdsource.Options, cfg *config.Config) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), log: &testkit.LogBuffer{}, views: make(chan *resolver.View, 16), cfg: cfg}
	opts.Metrics = resolver.NewSourceMetrics(h.reg)
	opts.Registerer = h.reg
	opts.Log = slog.New(slog.NewTextHandler(h.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	src, err := etcdsource.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { src.Close() })
	h.src = src
	return h
}

// run starts the source's Run and stops it when the test ends.
func (h *harness) run(t testing.TB) {
	c, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		h.src.Run(c, func() *config.Config { return h.cfg }, func(v *resolver.View) { h.views <- v })
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// nextView waits for the next view handed to onView.
func (h *harness) nextView(t testing.TB, limit time.Duration) *resolver.View {
	t.Helper()
	select {
	case v := <-h.views:
		return v
	case <-time.After(limit):
		t.Fatalf("no new view within %v; log:\n%s", limit, h.log.String())
		return nil
	}
}

// noView checks that onView was not called.
func (h *harness) noView(t testing.TB) {
	t.Helper()
	select {
	case v := <-h.views:
		t.Fatalf("unexpected view %s handed out", v.Version)
	default:
	}
}

// metric returns the value of a gauge or counter series, matching labels given as name=value.
func (h *harness) metric(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	families, err := h.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			match := true
			for _, l := range labels {
				name, value, _ := strings.Cut(l, "=")
				match = match && have[name] == value
			}
			if match {
				if m.GetCounter() != nil {
					return m.GetCounter().GetValue()
				}
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no series %s%v", name, labels)
	return 0
}

// put writes one partition entry at its key.
func put(t testing.TB, c *clientv3.Client, key string, e any) int64 {
	t.Helper()
	var value string
	switch v := e.(type) {
	case string:
		value = v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		value = string(b)
	}
	resp, err := c.Put(ctx(t), config.DefaultEtcdPrefix+key, value)
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// getEntry reads one partition entry.
func getEntry(t testing.TB, c *clientv3.Client, key string) resolver.PartitionEntry {
	t.Helper()
	resp, err := c.Get(ctx(t), config.DefaultEtcdPrefix+key)
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 {
		t.Fatalf("%s: %d keys", key, len(resp.Kvs))
	}
	e, err := etcdsource.DecodeEntry(resp.Kvs[0].Value)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// writeExample stores the example view and returns the configuration and the file's view.
func writeExample(t testing.TB, c *clientv3.Client) (*config.Config, *resolver.View) {
	t.Helper()
	cfg, view := example.Load(t)
	res, err := etcdsource.Write(ctx(t), c, "", view)
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != 10 || res.Deleted != 0 || res.Unchanged != 0 {
		t.Fatalf("first write = %+v, want 10 keys written", res)
	}
	return cfg, view
}

func TestWriteThenLoadIsTheFileView(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, file := writeExample(t, c)

	h := newHarness(t, fastOptions(c), cfg)
	view, rev, err := h.src.Load(ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if rev <= 0 {
		t.Errorf("revision %d", rev)
	}
	if !reflect.DeepEqual(view.Services, file.Services) {
		t.Errorf("view from etcd differs from the file's:\n got %+v\nwant %+v", view.Services, file.Services)
	}
	if len(view.Version) != 16 {
		t.Errorf("version %q is not 16 hex digits", view.Version)
	}
	if !h.src.Healthy() || h.src.Stale() {
		t.Errorf("after a load: Healthy %v Stale %v", h.src.Healthy(), h.src.Stale())
	}
	// The served-view series are partroute serve's to set, once the view is served: the
	// source sets none of them.
	if got := h.metric(t, "partroute_naming_reloads_total", "result=ok"); got != 0 {
		t.Errorf("reloads ok = %v, want 0: the source does not count what it has not served", got)
	}
	if got := h.metric(t, "partroute_naming_source_up"); got != 1 {
		t.Errorf("source_up = %v", got)
	}

	// Writing the same view again changes nothing, so no watcher sees an event.
	res, err := etcdsource.Write(ctx(t), c, "", file)
	if err != nil {
		t.Fatal(err)
	}
	if res.Written != 0 || res.Deleted != 0 || res.Unchanged != 10 || res.Revision != rev {
		t.Errorf("second write = %+v, want all 10 unchanged at revision %d", res, rev)
	}
}

// TestKeyLayout pins the documented layout: operators and other tools write these keys.
func TestKeyLayout(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	writeExample(t, c)
	resp, err := c.Get(ctx(t), config.DefaultEtcdPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range resp.Kvs {
		got[string(kv.Key)] = string(kv.Value)
	}
	want := map[string]string{
		"/partroute/naming/services/users/partitions/0:8":                        `{"id":"users-0","lowKey":0,"highKey":8,"replicas":[{"address":"127.0.0.1:8081","role":"primary"},{"address":"127.0.0.1:8082","role":"secondary"},{"address":"127.0.0.1:8083","role":"secondary","healthy":false}]}`,
		"/partroute/naming/services/sessions/partitions/-9223372036854775808:-1": `{"lowKey":-9223372036854775808,"highKey":-1,"replicas":[{"address":"127.0.0.1:8071","role":"primary"},{"address":"127.0.0.1:8072","role":"secondary"}]}`,
		"/partroute/naming/services/regions/partitions/eu":                       `{"name":"eu","replicas":[{"address":"127.0.0.1:8091","role":"primary"},{"address":"127.0.0.1:8092","role":"secondary"}]}`,
		"/partroute/naming/services/settings/partitions/singleton":               `{"replicas":[{"address":"127.0.0.1:8099","role":"primary"}]}`,
		"/partroute/naming/services/sessions/partitions/0:9223372036854775807":   `{"lowKey":0,"highKey":9223372036854775807,"replicas":[{"address":"127.0.0.1:8073","role":"primary"},{"address":"127.0.0.1:8074","role":"secondary"}]}`,
		"/partroute/naming/services/users/partitions/26:33":                      `{"id":"users-3","lowKey":26,"highKey":33,"replicas":[{"address":"127.0.0.1:8088","role":"primary"}]}`,
		"/partroute/naming/services/regions/partitions/apac":                     `{"name":"apac","replicas":[{"address":"127.0.0.1:8094","role":"primary"}]}`,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s:\n got %s\nwant %s", k, got[k], v)
		}
	}
	if len(got) != 10 {
		t.Errorf("%d keys, want one per partition (10): %v", len(got), got)
	}
}

func TestWatchAppliesAChange(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)
	h := newHarness(t, fastOptions(c), cfg)
	first, _, err := h.src.Load(ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.run(t)

	e := getEntry(t, c, "services/users/partitions/0:8")
	f := false
	e.Replicas[1].Healthy = &f
	rev := put(t, c, "services/users/partitions/0:8", e)
	v := h.nextView(t, 10*time.Second)
	if v.Version == first.Version {
		t.Fatalf("new view has the old version %s", v.Version)
	}
	if r := v.Services["users"].Partitions[0].Replicas[1]; r.Healthy {
		t.Errorf("replica %s still healthy in the new view", r.Address)
	}
	if h.src.View() != v || h.src.Revision() < rev {
		t.Errorf("source serves %v at revision %d, want the new view at %d", h.src.View().Version, h.src.Revision(), rev)
	}

	// The same content written again is an event but no new version: onView is not called.
	rev = put(t, c, "services/users/partitions/0:8", e)
	testkit.WaitFor(t, "source reads the rewrite", 10*time.Second, func() bool { return h.src.Revision() >= rev })
	h.noView(t)
	if h.src.View() != v {
		t.Errorf("after the rewrite the source serves %s, want %s", h.src.View().Version, v.Version)
	}
}

// A view that is invalid from the start is rejected without a word of a previous view: there is
// none.
func TestInvalidFirstView(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)
	e := getEntry(t, c, "services/regions/partitions/eu")
	e.Replicas[1].Role = "primary"
	put(t, c, "services/regions/partitions/eu", e)
	h := newHarness(t, fastOptions(c), cfg)
	if _, _, err := h.src.Load(ctx(t), cfg); err == nil {
		t.Fatal("Load accepted a view with two primaries in a partition")
	}
	log := h.log.String()
	if !strings.Contains(log, "naming view in etcd rejected; waiting for a valid one") || strings.Contains(log, "previous") {
		t.Errorf("the first rejection is not logged as such:\n%s", log)
	}
}

func TestInvalidChangeKeepsTheView(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)
	h := newHarness(t, fastOptions(c), cfg)
	first, _, err := h.src.Load(ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.run(t)

	// Two primaries in one partition: the view is rejected.
	e := getEntry(t, c, "services/regions/partitions/eu")
	e.Replicas[1].Role = "primary"
	rev := put(t, c, "services/regions/partitions/eu", e)
	testkit.WaitFor(t, "the rejection is counted", 10*time.Second, func() bool {
		return h.src.Revision() >= rev && h.metric(t, "partroute_naming_reloads_total", "result=error") == 1
	})
	h.noView(t)
	if h.src.View() != first {
		t.Errorf("the served view changed to %s", h.src.View().Version)
	}
	log := h.log.String()
	if !strings.Contains(log, "services/regions/partitions/eu.replicas[1].role: a partition has at most one primary") {
		t.Errorf("log does not name the key and the problem:\n%s", log)
	}

	// A second invalid state counts again; a key that disagrees with its value is named.
	bad := getEntry(t, c, "services/users/partitions/9:17")
	rev = put(t, c, "services/users/partitions/0:8", bad)
	testkit.WaitFor(t, "the second rejection is counted", 10*time.Second, func() bool {
		return h.src.Revision() >= rev && h.metric(t, "partroute_naming_reloads_total", "result=error") == 2
	})
	if !strings.Contains(h.log.String(), `services/users/partitions/0:8: the key names partition \"0:8\" but its value describes partition \"9:17\"`) {
		t.Errorf("log does not report the disagreement:\n%s", h.log.String())
	}
	if n := strings.Count(h.log.String(), "naming view in etcd rejected; still serving the previous one"); n != 2 {
		t.Errorf("rejections logged %d times saying the previous view is kept, want once per distinct content (2)", n)
	}

	// Putting the first content back is no new view: it is the one still served.
	_, view := example.Load(t)
	res, err := etcdsource.Write(ctx(t), c, "", view)
	if err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "source reads the fix", 10*time.Second, func() bool { return h.src.Revision() >= res.Revision })
	h.noView(t)
	if h.src.View() != first {
		t.Errorf("the served view changed to %s", h.src.View().Version)
	}

	// A valid change after the fix is served.
	e = getEntry(t, c, "services/regions/partitions/us")
	e.ID = "regions-us"
	put(t, c, "services/regions/partitions/us", e)
	if v := h.nextView(t, 10*time.Second); v.Services["regions"].Partitions[1].ID != "regions-us" {
		t.Errorf("change after the fix not applied: %+v", v.Services["regions"].Partitions[1])
	}
	if got := h.metric(t, "partroute_naming_reloads_total", "result=error"); got != 2 {
		t.Errorf("reload errors = %v, want 2", got)
	}
}

func TestCompactionForcesAFullRead(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)
	h := newHarness(t, fastOptions(c), cfg)
	first, _, err := h.src.Load(ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}

	// Changes and a compaction past them happen before the watch starts, so the revision the
	// watch asks for is gone.
	e := getEntry(t, c, "services/settings/partitions/singleton")
	e.Replicas = append(e.Replicas, resolver.ReplicaEntry{Address: "127.0.0.1:8100", Role: "secondary"})
	put(t, c, "services/settings/partitions/singleton", e)
	e.Replicas = append(e.Replicas, resolver.ReplicaEntry{Address: "127.0.0.1:8101", Role: "secondary"})
	rev := put(t, c, "services/settings/partitions/singleton", e)
	if _, err := c.Compact(ctx(t), rev); err != nil {
		t.Fatal(err)
	}

	h.run(t)
	v := h.nextView(t, 10*time.Second)
	if v.Version == first.Version || len(v.Services["settings"].Partitions[0].Replicas) != 3 {
		t.Fatalf("view after the compaction: %+v", v.Services["settings"].Partitions[0])
	}
	if !strings.Contains(h.log.String(), "fell behind an etcd compaction") {
		t.Errorf("the full read is not logged:\n%s", h.log.String())
	}
	testkit.WaitFor(t, "back in sync", 10*time.Second, h.src.Healthy)

	// The watch that follows the full read sees later changes.
	e.Replicas = e.Replicas[:1]
	put(t, c, "services/settings/partitions/singleton", e)
	if v := h.nextView(t, 10*time.Second); len(v.Services["settings"].Partitions[0].Replicas) != 1 {
		t.Errorf("change after the full read not applied")
	}
}

func TestOutageKeepsTheViewAndRecovers(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)
	h := newHarness(t, fastOptions(c), cfg)
	first, _, err := h.src.Load(ctx(t), cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.run(t)
	testkit.WaitFor(t, "in sync", 10*time.Second, h.src.Healthy)

	srv.Stop()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("source log:\n%s", h.log.String())
		}
	})
	testkit.WaitFor(t, "source notices the outage", 10*time.Second, h.src.Stale)
	if h.src.Healthy() {
		t.Error("Healthy while etcd is down")
	}
	if h.src.View() != first {
		t.Error("the view changed during the outage")
	}
	if got := h.metric(t, "partroute_naming_source_up"); got != 0 {
		t.Errorf("source_up = %v during the outage", got)
	}
	testkit.WaitFor(t, "stale seconds grow", 10*time.Second, func() bool { return h.metric(t, "partroute_naming_stale_seconds") > 0 })

	srv.Start()
	e := getEntry(t, c, "services/users/partitions/26:33")
	e.Replicas = append(e.Replicas, resolver.ReplicaEntry{Address: "127.0.0.1:8089", Role: "secondary"})
	put(t, c, "services/users/partitions/26:33", e)
	v := h.nextView(t, 20*time.Second)
	if len(v.Services["users"].Partitions[3].Replicas) != 2 {
		t.Errorf("change after the outage not applied: %+v", v.Services["users"].Partitions[3])
	}
	testkit.WaitFor(t, "back in sync", 10*time.Second, func() bool { return h.src.Healthy() && !h.src.Stale() })
	if got := h.metric(t, "partroute_naming_stale_seconds"); got != 0 {
		t.Errorf("stale_seconds = %v after recovery", got)
	}
	if got := h.metric(t, "partroute_naming_source_up"); got != 1 {
		t.Errorf("source_up = %v after recovery", got)
	}
	log := h.log.String()
	if n := strings.Count(log, "out of sync"); n != 1 {
		t.Errorf("the outage is logged %d times, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "back in sync") {
		t.Errorf("the recovery is not logged:\n%s", log)
	}
}

// TestStartsWhileEtcdIsDown checks that a source started before etcd serves once etcd comes up.
func TestStartsWhileEtcdIsDown(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, file := writeExample(t, c)
	srv.Stop()
	h := newHarness(t, fastOptions(c), cfg)
	if _, _, err := h.src.Load(ctx(t), cfg); err == nil {
		t.Fatal("Load succeeded with etcd down")
	}
	if h.src.Healthy() || h.src.Stale() || h.src.View() != nil {
		t.Errorf("before any view: Healthy %v Stale %v View %v", h.src.Healthy(), h.src.Stale(), h.src.View())
	}
	h.run(t)
	srv.Start()
	v := h.nextView(t, 20*time.Second)
	if !reflect.DeepEqual(v.Services, file.Services) {
		t.Error("view read after etcd came up differs from the file's")
	}
}

func TestTwoSourcesConverge(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	writer := srv.Client()
	cfg, _ := writeExample(t, writer)
	var hs []*harness
	for i := 0; i < 2; i++ {
		// Each source has its own client, as two partroute processes would.
		h := newHarness(t, fastOptions(srv.Client()), cfg)
		if _, _, err := h.src.Load(ctx(t), cfg); err != nil {
			t.Fatal(err)
		}
		h.run(t)
		hs = append(hs, h)
	}
	start := time.Now()
	res, err := etcdsource.Failover(ctx(t), writer, "", cfg, "users", "users-1", "127.0.0.1:8085")
	if err != nil {
		t.Fatal(err)
	}
	var versions []string
	for i, h := range hs {
		v := h.nextView(t, 10*time.Second)
		t.Logf("source %d has the failover at revision %d after %v", i, res.Revision, time.Since(start))
		p := v.Services["users"].Partitions[1]
		if p.Replicas[0].Role != resolver.RoleSecondary || p.Replicas[1].Role != resolver.RolePrimary {
			t.Errorf("source %d: roles after the failover: %+v", i, p.Replicas)
		}
		versions = append(versions, v.Version)
	}
	if versions[0] != versions[1] {
		t.Errorf("sources disagree on the version: %v", versions)
	}
}

func TestFailover(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)

	res, err := etcdsource.Failover(ctx(t), c, "", cfg, "regions", "eu", "127.0.0.1:8092")
	if err != nil {
		t.Fatal(err)
	}
	if res.From != "127.0.0.1:8091" || res.To != "127.0.0.1:8092" || res.PartitionID != "regions/eu" || res.Key != "services/regions/partitions/eu" || res.Unchanged {
		t.Errorf("result %+v", res)
	}
	e := getEntry(t, c, "services/regions/partitions/eu")
	if e.Replicas[0].Role != "secondary" || e.Replicas[1].Role != "primary" {
		t.Errorf("roles after the failover: %+v", e.Replicas)
	}

	// Promoting the primary again writes nothing.
	res, err = etcdsource.Failover(ctx(t), c, "", cfg, "regions", "regions/eu", "127.0.0.1:8092")
	if err != nil || !res.Unchanged {
		t.Errorf("second failover: %+v, %v", res, err)
	}

	// The unhealthy replica can be promoted, and the result says so.
	res, err = etcdsource.Failover(ctx(t), c, "", cfg, "users", "0:8", "127.0.0.1:8083")
	if err != nil || !res.ToUnhealthy {
		t.Errorf("failover to an unhealthy replica: %+v, %v", res, err)
	}

	for _, tc := range []struct {
		service, partition, address, want string
	}{
		{"orders", "0", "127.0.0.1:1", `no service "orders" in the configuration`},
		{"users", "users-9", "127.0.0.1:8081", `service users has no partition "users-9" under /partroute/naming/; its partitions: users-0, users-1, users-2, users-3`},
		{"users", "users-1", "127.0.0.1:9999", "partition users-1 of service users has no replica at 127.0.0.1:9999; its replicas: 127.0.0.1:8084 (primary), 127.0.0.1:8085 (secondary)"},
	} {
		if _, err := etcdsource.Failover(ctx(t), c, "", cfg, tc.service, tc.partition, tc.address); err == nil || err.Error() != tc.want {
			t.Errorf("failover %s %s %s: error %v, want %s", tc.service, tc.partition, tc.address, err, tc.want)
		}
	}
}

func TestFailoverRefusesAnInvalidResult(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)
	put(t, c, "services/orders/partitions/singleton", `{"replicas":[]}`)
	_, err := etcdsource.Failover(ctx(t), c, "", cfg, "regions", "eu", "127.0.0.1:8092")
	if err == nil || !strings.Contains(err.Error(), "would not be valid after the failover") || !strings.Contains(err.Error(), "services.orders: no service of that name in the configuration") {
		t.Errorf("error %v", err)
	}
	if e := getEntry(t, c, "services/regions/partitions/eu"); e.Replicas[0].Role != "primary" {
		t.Errorf("the failover was written: %+v", e.Replicas)
	}
}

// The errors of the package keep their cause, for a caller to tell with errors.Is and
// errors.As what went wrong beneath the message.
func TestErrorsKeepTheirCause(t *testing.T) {
	if _, err := etcdsource.Dial(nil, time.Second); !errors.Is(err, clientv3.ErrNoAvailableEndpoints) {
		t.Errorf("Dial with no endpoints: %v, want clientv3.ErrNoAvailableEndpoints", err)
	}

	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)

	// A second source on the registry of the first cannot register its metrics.
	h := newHarness(t, fastOptions(c), cfg)
	opts := fastOptions(c)
	opts.Registerer = h.reg
	var dup prometheus.AlreadyRegisteredError
	if _, err := etcdsource.New(opts); !errors.As(err, &dup) {
		t.Errorf("New on a registry that has the metrics: %v, want a prometheus.AlreadyRegisteredError", err)
	}

	// A failover of a partition whose value is not JSON says what the decoder found.
	put(t, c, "services/settings/partitions/singleton", `replicas: []`)
	var syntax *json.SyntaxError
	if _, err := etcdsource.Failover(ctx(t), c, "", cfg, "settings", "singleton", "127.0.0.1:8099"); !errors.As(err, &syntax) {
		t.Errorf("failover of a partition that is not JSON: %v, want a *json.SyntaxError", err)
	}

	// Initial given up waits for a valid view: the error is the context's, and the last
	// reason the view was refused. The backoff is long, so that the cancellation comes while
	// Initial waits rather than in the middle of a read.
	opts = fastOptions(c)
	opts.BackoffMin, opts.BackoffMax = time.Minute, time.Minute
	h = newHarness(t, opts, cfg)
	initialCtx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := h.src.Initial(initialCtx, cfg)
		done <- err
	}()
	testkit.WaitFor(t, "Initial waits for a valid view", 10*time.Second, func() bool {
		return strings.Contains(h.log.String(), "waiting for the etcd naming view")
	})
	cancel()
	err := <-done
	var invalid *config.Errors
	if !errors.Is(err, context.Canceled) || !errors.As(err, &invalid) {
		t.Errorf("Initial cancelled: %v, want context.Canceled and the *config.Errors of the view", err)
	}
}

func TestWriteDeletesWhatTheViewLacks(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	_, view := writeExample(t, c)
	put(t, c, "services/orders/partitions/singleton", `{"replicas":[]}`)
	put(t, c, "stray", `x`)
	res, err := etcdsource.Write(ctx(t), c, "", view)
	if err != nil {
		t.Fatal(err)
	}
	if res.Deleted != 2 || res.Written != 0 || res.Unchanged != 10 {
		t.Errorf("write = %+v, want 2 deleted and 10 unchanged", res)
	}
	resp, err := c.Get(ctx(t), config.DefaultEtcdPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	if resp.Count != 10 {
		t.Errorf("%d keys after the write, want 10", resp.Count)
	}
}

// Broken content read again (at every retry of the first load, or after a reconnection) is
// one rejection, counted and logged once; a configuration reload that the content does not fit
// is counted by the caller that refuses it, not here as well.
func TestBrokenContentIsCountedOnce(t *testing.T) {
	srv := etcdtest.StartTestServer(t)
	c := srv.Client()
	cfg, _ := writeExample(t, c)
	e := getEntry(t, c, "services/regions/partitions/eu")
	e.Replicas[1].Role = "primary"
	put(t, c, "services/regions/partitions/eu", e)

	h := newHarness(t, fastOptions(c), cfg)
	for range 3 {
		if _, _, err := h.src.Load(ctx(t), cfg); err == nil {
			t.Fatal("Load accepted two primaries in one partition")
		}
	}
	if got := h.metric(t, "partroute_naming_reloads_total", "result=error"); got != 1 {
		t.Errorf("reload errors = %v after three loads of one broken content, want 1", got)
	}
	if n := strings.Count(h.log.String(), "naming view in etcd rejected"); n != 1 {
		t.Errorf("rejection logged %d times, want once:\n%s", n, h.log.String())
	}

	// The content fixed, a configuration it does not fit is refused by Rebuild, uncounted.
	e.Replicas[1].Role = "secondary"
	put(t, c, "services/regions/partitions/eu", e)
	if _, _, err := h.src.Load(ctx(t), cfg); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	wider, err := config.Parse(bytes.Replace(data, []byte("highKey: 33, count: 4"), []byte("highKey: 33, count: 5"), 1), exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := h.src.Rebuild(wider); err == nil {
			t.Fatal("Rebuild accepted a configuration with a partition more than etcd holds")
		}
	}
	if got := h.metric(t, "partroute_naming_reloads_total", "result=error"); got != 1 {
		t.Errorf("reload errors = %v after Rebuild refused a configuration, want still 1", got)
	}
}
