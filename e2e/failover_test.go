package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/etcdsource/etcdtest"
	"github.com/partroute/partroute/xds"
)

// failoverConfig is one service of two partitions; the load goes to partition 0, whose
// primary moves. %[1]s, %[2]s, %[3]s are the ext_proc, admin and xDS addresses, %[4]s the
// naming block.
const failoverConfig = `
listen: {extproc: "%[1]s", admin: "%[2]s", xds: "%[3]s"}
naming: %[4]s
services:
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 2}
    key: {sources: [{path: "/api/orders/{id}"}], transform: int64}
`

// failoverStack is partroute serving xDS and ext_proc to a real Envoy, over backends a, b, c
// (partition 0) and d (partition 1). With etcd, a second partroute instance follows the same
// view; Envoy talks to the first.
type failoverStack struct {
	t          *testing.T
	namingPath string
	etcd       *etcdtest.TestServer
	cfg        *config.Config
	admin      string
	admins     []string
	// node is Envoy's xDS node id.
	node       string
	envoy      string
	backends   *loadtest.Backends
	a, b, c, d string
	client     *http.Client
	// procs are the partroute instances, the first the one Envoy talks to.
	procs []*partrouteProcess
}

func (f *failoverStack) writeNaming(primary string, secondaries ...string) {
	f.t.Helper()
	y := "services:\n  orders:\n    partitions:\n"
	// An empty primary leaves partition 0 without one, as in the middle of a failover.
	var replicas []string
	if primary != "" {
		replicas = append(replicas, fmt.Sprintf("{address: %q, role: primary}", primary))
	}
	for _, s := range secondaries {
		replicas = append(replicas, fmt.Sprintf("{address: %q, role: secondary}", s))
	}
	y += "      - {lowKey: 0, highKey: 49, id: orders-0, replicas: [" + strings.Join(replicas, ", ") + "]}\n"
	y += fmt.Sprintf("      - {lowKey: 50, highKey: 99, id: orders-1, replicas: [{address: %q, role: primary}]}\n", f.d)
	// Write and rename, as an operator's tooling should: the poller never reads half a file.
	tmp := f.namingPath + ".tmp"
	if err := os.WriteFile(tmp, []byte(y), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.namingPath); err != nil {
		f.t.Fatal(err)
	}
}

func startFailoverStack(t *testing.T, retry *envoyconfig.Retry, withEtcd bool) *failoverStack {
	t.Helper()
	return startFailoverStackWith(t, failoverConfig, retry, withEtcd)
}

// startFailoverStackWithReplicas is startFailoverStack with the orders service's replicas
// block set to replicas (YAML flow style), to run the stack with a replica-choice feature.
func startFailoverStackWithReplicas(t *testing.T, replicas string, retry *envoyconfig.Retry) *failoverStack {
	t.Helper()
	return startFailoverStackWith(t, failoverConfig+"    replicas: "+replicas+"\n", retry, false)
}

// startFailoverStackWith is startFailoverStack with a configuration of its own, a template
// with the arguments of failoverConfig.
func startFailoverStackWith(t *testing.T, failoverConfig string, retry *envoyconfig.Retry, withEtcd bool) *failoverStack {
	t.Helper()
	ports := testkit.FreePorts(t, 12)
	dir := t.TempDir()
	f := &failoverStack{t: t, namingPath: filepath.Join(dir, "naming.yaml"), admin: ports[1], envoy: ports[3],
		a: ports[5], b: ports[6], c: ports[7], d: ports[8], node: "envoy-failover", client: &http.Client{Timeout: 10 * time.Second}}
	f.writeNaming(f.a, f.b, f.c)
	write(t, filepath.Join(dir, "file.yaml"), fmt.Sprintf(failoverConfig, ports[0], ports[1], ports[2], "{source: file, file: naming.yaml}"))
	cfg, view, err := resolver.LoadConfigAndView(filepath.Join(dir, "file.yaml"), "")
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	namingBlock := "{source: file, file: naming.yaml}"
	instances := 1
	if withEtcd {
		f.etcd = etcdtest.StartTestServer(t)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := etcdsource.Write(ctx, f.etcd.Client(), config.DefaultEtcdPrefix, view); err != nil {
			t.Fatal(err)
		}
		namingBlock = fmt.Sprintf("{source: etcd, etcd: {endpoints: [%q]}}", f.etcd.Endpoint)
		instances = 2
	}
	if f.backends, err = loadtest.StartBackends([]string{f.a, f.b, f.c, f.d}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.backends.Close)

	for i := 0; i < instances; i++ {
		// The second instance listens on its own ports; Envoy talks only to the first.
		extprocAddr, admin, xdsAddr := ports[0], ports[1], ports[2]
		if i == 1 {
			extprocAddr, admin, xdsAddr = ports[9], ports[10], ports[11]
		}
		cfgPath := filepath.Join(dir, fmt.Sprintf("partroute-%d.yaml", i))
		write(t, cfgPath, fmt.Sprintf(failoverConfig, extprocAddr, admin, xdsAddr, namingBlock))
		f.admins = append(f.admins, admin)
		f.procs = append(f.procs, runPartroute(t, cfgPath, admin, 20*time.Millisecond))
	}

	runEnvoy(t, dir, cfg, view, envoyconfig.Options{ListenAddress: f.envoy, AdminAddress: ports[4], XDSAddress: ports[2], NodeID: f.node, Retry: retry},
		envoyconfig.ExtProcCluster, "orders")
	readyCtx, done := context.WithTimeout(context.Background(), 30*time.Second)
	defer done()
	if _, err := f.waitAcked(readyCtx, xds.Versions{}); err != nil {
		t.Fatal(err)
	}
	return f
}

// promote makes newPrimary the primary of partition 0 and the old primary a secondary: in
// the naming file, or with one compare-and-swap in etcd.
func (f *failoverStack) promote(newPrimary string, secondaries ...string) {
	f.t.Helper()
	if f.etcd == nil {
		f.writeNaming(newPrimary, secondaries...)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := etcdsource.Failover(ctx, f.etcd.Client(), config.DefaultEtcdPrefix, f.cfg, "orders", "orders-0", newPrimary); err != nil {
		f.t.Error(err)
	}
}

// waitAcked waits until Envoy has acknowledged a snapshot other than old, as partroute's
// /debug/xds reports it, and returns when it saw that.
func (f *failoverStack) waitAcked(ctx context.Context, old xds.Versions) (time.Time, error) {
	return f.waitServing(ctx, f.admin, old, true)
}

// waitServing waits until the partroute instance at admin serves a snapshot other than old
// and, when acked is set, Envoy has acknowledged it.
func (f *failoverStack) waitServing(ctx context.Context, admin string, old xds.Versions, acked bool) (time.Time, error) {
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for {
		resp, err := f.client.Get("http://" + admin + "/debug/xds")
		if err == nil {
			var st struct {
				Serving      xds.Versions
				Acknowledged map[string]xds.Versions
			}
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
			if err == nil && st.Serving != old && (!acked || st.Acknowledged[f.node] == st.Serving) {
				return time.Now(), nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("Envoy did not acknowledge a new snapshot: %w", ctx.Err())
		case <-tick.C:
		}
	}
}

func (f *failoverStack) serving(admin string) xds.Versions {
	resp, err := f.client.Get("http://" + admin + "/debug/xds")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var st struct{ Serving xds.Versions }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		f.t.Fatal(err)
	}
	return st.Serving
}

// writeResult is one request of the steady load.
type writeResult struct {
	sent, done time.Time
	status     int
	backend    string
	// code is partroute's x-partroute-error on a rejection.
	code string
}

// steadyWrites sends PUTs to partition 0 at rate per second for d, calling change once after
// the given delay. It is bounded by both the duration and the request count.
func (f *failoverStack) steadyWrites(rate int, d, changeAfter time.Duration, change func()) []writeResult {
	var (
		mu     sync.Mutex
		writes []writeResult
		wg     sync.WaitGroup
	)
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	changed := false
	maxRequests := int(d.Seconds()*float64(rate)) + 1
	for i := 0; i < maxRequests && time.Since(start) < d; i++ {
		<-tick.C
		if !changed && time.Since(start) >= changeAfter {
			changed = true
			change()
		}
		wg.Add(1)
		go func(key int) {
			defer wg.Done()
			w := writeResult{sent: time.Now()}
			req, _ := http.NewRequest("PUT", fmt.Sprintf("http://%s/api/orders/%d", f.envoy, key%50), http.NoBody)
			resp, err := f.client.Do(req)
			w.done = time.Now()
			if err == nil {
				w.status = resp.StatusCode
				w.backend = resp.Header.Get(loadtest.BackendHeader)
				w.code = resp.Header.Get(extproc.ErrorHeader)
				resp.Body.Close()
			}
			mu.Lock()
			writes = append(writes, w)
			mu.Unlock()
		}(i)
	}
	wg.Wait()
	return writes
}

func TestFailoverFileSourceThroughXDS(t *testing.T) { failover(t, false) }

func TestFailoverEtcdSourceThroughXDS(t *testing.T) { failover(t, true) }

// failover sends steady writes to partition 0, promotes a secondary after 3 s, and measures
// how fast the writes follow, through Envoy and partroute's xDS server.
func failover(t *testing.T, withEtcd bool) {
	f := startFailoverStack(t, nil, withEtcd)
	source := "file"
	if withEtcd {
		source = "etcd"
	}
	before := f.serving(f.admin)
	var changedAt, ackedAt time.Time
	ackErr := make(chan error, 1)
	// The other instances are watched from the moment of the change, each on its own.
	others := make([]chan time.Time, len(f.admins)-1)
	for i := range others {
		others[i] = make(chan time.Time, 1)
	}
	writes := f.steadyWrites(50, 10*time.Second, 3*time.Second, func() {
		changedAt = time.Now()
		f.promote(f.b, f.a, f.c) // promote b, demote a
		for i, admin := range f.admins[1:] {
			go func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				at, err := f.waitServing(ctx, admin, before, false)
				if err != nil {
					t.Errorf("partroute at %s: %v", admin, err)
				}
				others[i] <- at
			}()
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			var err error
			ackedAt, err = f.waitAcked(ctx, before)
			ackErr <- err
		}()
	})
	if err := <-ackErr; err != nil {
		t.Fatal(err)
	}

	var firstOnNew time.Time
	toOldAfterChange, toOldAfterAck := 0, 0
	for _, w := range writes {
		if w.status != http.StatusOK {
			t.Errorf("write sent at %v: status %d", w.sent.Sub(changedAt), w.status)
			continue
		}
		switch {
		case w.backend == f.b && w.sent.After(changedAt) && (firstOnNew.IsZero() || w.done.Before(firstOnNew)):
			firstOnNew = w.done
		case w.backend == f.a && w.sent.After(changedAt):
			toOldAfterChange++
			if w.sent.After(ackedAt) {
				toOldAfterAck++
			}
		case w.backend != f.a && w.backend != f.b:
			t.Errorf("a write reached %s, which is no primary of partition 0", w.backend)
		}
	}
	if firstOnNew.IsZero() {
		t.Fatal("no write reached the new primary")
	}
	convergence := firstOnNew.Sub(changedAt)
	t.Logf("%s source: %d writes; convergence %v (change to first write on the new primary); Envoy acknowledged after %v; writes to the old primary after the change: %d, after the acknowledgement: %d",
		source, len(writes), convergence.Round(time.Millisecond), ackedAt.Sub(changedAt).Round(time.Millisecond), toOldAfterChange, toOldAfterAck)
	if convergence > time.Second {
		t.Errorf("convergence %v is above 1s", convergence)
	}
	if toOldAfterAck != 0 {
		t.Errorf("%d writes reached the demoted primary after Envoy acknowledged the new snapshot", toOldAfterAck)
	}
	for _, w := range writes {
		if w.sent.After(ackedAt) && w.backend != f.b {
			t.Fatalf("a write sent after the acknowledgement reached %s, not the new primary", w.backend)
		}
	}
	// Every partroute instance following the view converges to the same snapshot: the
	// versions are content hashes, so equal content means equal versions.
	for i, admin := range f.admins[1:] {
		at := <-others[i]
		if at.IsZero() {
			continue
		}
		if got, want := f.serving(admin), f.serving(f.admin); got != want {
			t.Errorf("partroute at %s serves %+v, the first instance %+v", admin, got, want)
		}
		t.Logf("%s source: the second partroute instance served the new view %v after the change", source, at.Sub(changedAt).Round(time.Millisecond))
	}
	// The metrics say what is served: the first view and the failover's, nothing refused,
	// and one version series.
	metrics := f.metrics(f.admin)
	for _, want := range []string{`partroute_naming_reloads_total{result="ok"} 2`, `partroute_naming_reloads_total{result="error"} 0`} {
		if !strings.Contains(metrics, "\n"+want+"\n") {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(metrics, "partroute_naming_"))
		}
	}
	if n := strings.Count(metrics, "\npartroute_naming_view_info{"); n != 1 {
		t.Errorf("/metrics has %d partroute_naming_view_info series, want 1:\n%s", n, grepLines(metrics, "partroute_naming_"))
	}
}

// metrics returns the text of a partroute instance's /metrics.
func (f *failoverStack) metrics(admin string) string {
	f.t.Helper()
	resp, err := f.client.Get("http://" + admin + "/metrics")
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return string(body)
}

// grepLines returns the lines of text that start with prefix.
func grepLines(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestFailoverWithRetriesLosesNoWrite(t *testing.T) {
	t.Run("file", func(t *testing.T) { failoverWithRetries(t, false) })
	t.Run("etcd", func(t *testing.T) { failoverWithRetries(t, true) })
}

// failoverWithRetries stops the old primary's process at the moment of failover, with Envoy
// retrying on connect failure, reset and 503: every write must succeed or get a clear 503, and
// the replicas must record exactly the writes that succeeded.
func failoverWithRetries(t *testing.T, withEtcd bool) {
	f := startFailoverStack(t, &envoyconfig.Retry{NumRetries: 5, PerTryTimeout: time.Second}, withEtcd)
	old := f.backends.Get(f.a)
	writes := f.steadyWrites(50, 6*time.Second, 2*time.Second, func() {
		// The old primary goes away at the moment of failover, as when its process is
		// stopped: requests it accepted finish, new connections are refused.
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = old.Stop(ctx)
		f.promote(f.b, f.c)
	})
	ok, failed := 0, 0
	for _, w := range writes {
		switch w.status {
		case http.StatusOK:
			ok++
		case http.StatusServiceUnavailable:
			failed++
		default:
			t.Errorf("write answered %d; every write must succeed or get a clear 503", w.status)
		}
	}
	var recorded int64
	for _, b := range f.backends.All() {
		recorded += b.Writes()
	}
	t.Logf("with retries: %d writes, %d succeeded, %d answered 503, %d recorded by the replicas", len(writes), ok, failed, recorded)
	if int64(ok) != recorded {
		t.Errorf("%d writes succeeded but the replicas recorded %d: a write was lost or applied twice", ok, recorded)
	}
	if ok == 0 || f.backends.Get(f.b).Writes() == 0 {
		t.Error("no write reached the new primary")
	}
}
