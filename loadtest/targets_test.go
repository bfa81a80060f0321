package loadtest

import (
	"context"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/keying"
)

// TestScenarioMatchesTheScheme loads scenarios of several sizes: partroute refuses a naming
// view whose ranges are not exactly the scheme's, so a wrong split fails here.
func TestScenarioMatchesTheScheme(t *testing.T) {
	for _, sc := range []Scenario{{Partitions: 1, Replicas: 1}, {Partitions: 7, Replicas: 2}, DefaultScenario(), {Partitions: 1000, Replicas: 3}} {
		cfg, view := loadScenario(t, sc, FakeReplicaAddrs(sc.ReplicaCount()))
		svc := cfg.Service(ScenarioService)
		if svc == nil || svc.Keyer.Transform() != keying.TransformHash || svc.Scheme().Count() != sc.Partitions {
			t.Fatalf("%+v: service %+v", sc, svc)
		}
		if n := len(view.Services[ScenarioService].Partitions); n != sc.Partitions {
			t.Errorf("%+v: %d partitions in the view", sc, n)
		}
	}
	if _, err := (Scenario{Partitions: 2, Replicas: 2}).NamingYAML([]string{"127.0.0.1:1"}); err == nil {
		t.Error("a naming view with too few addresses is written")
	}
	if (Scenario{Partitions: 0, Replicas: 1}).Check() == nil || (Scenario{Partitions: 1, Replicas: 17}).Check() == nil {
		t.Error("a scenario out of bounds passes Check")
	}

	// Replica settings reach the service; settings that would break out of the block do not
	// pass Check.
	sc := Scenario{Partitions: 2, Replicas: 3, ReplicaSettings: "selection: ordered, failoverWait: 2s"}
	cfg, _ := loadScenario(t, sc, FakeReplicaAddrs(sc.ReplicaCount()))
	if svc := cfg.Service(ScenarioService); svc.Selection != config.SelectOrdered || svc.FailoverWait != 2*time.Second || svc.Reads != config.ReadSecondary {
		t.Errorf("replica settings %q: selection %v, failover wait %v, reads %v", sc.ReplicaSettings, svc.Selection, svc.FailoverWait, svc.Reads)
	}
	sc = Scenario{Partitions: 2, Replicas: 3, ReadYourWrites: 2 * time.Second}
	cfg, _ = loadScenario(t, sc, FakeReplicaAddrs(sc.ReplicaCount()))
	if svc := cfg.Service(ScenarioService); svc.ReadYourWrites != 2*time.Second || cfg.ReadYourWrites.Header != "x-partroute-ryw" {
		t.Errorf("read-your-writes scenario: window %v, header %q", svc.ReadYourWrites, cfg.ReadYourWrites.Header)
	}
	for _, bad := range []string{"selection: ordered}\nunmatched: reject\n#", "{a: b}"} {
		if (Scenario{Partitions: 1, Replicas: 1, ReplicaSettings: bad}).Check() == nil {
			t.Errorf("replica settings %q pass Check", bad)
		}
	}
}

// TestEnvoyBootstrapBaselines checks the three Envoy configurations of an http comparison:
// with ext_proc at partroute or the no-op server, and without the filter, all with the same
// fallback.
func TestEnvoyBootstrapBaselines(t *testing.T) {
	sc := DefaultScenario()
	cfg, view := loadScenario(t, sc, FakeReplicaAddrs(sc.ReplicaCount()))
	for _, noExtProc := range []bool{false, true} {
		b, err := EnvoyBootstrap(cfg, view, envoyconfig.Options{ListenAddress: "127.0.0.1:10000", AdminAddress: "127.0.0.1:9902", ExtProcAddress: "127.0.0.1:50051", NoExtProc: noExtProc})
		if err != nil {
			t.Fatal(err)
		}
		listener := b.GetStaticResources().GetListeners()[0]
		var hcm hcmv3.HttpConnectionManager
		if err := listener.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, f := range hcm.GetHttpFilters() {
			names = append(names, f.GetName())
		}
		want := "envoy.filters.http.ext_proc envoy.filters.http.router"
		if noExtProc {
			want = "envoy.filters.http.router"
		}
		if got := strings.Join(names, " "); got != want {
			t.Errorf("NoExtProc=%v: filters %q, want %q", noExtProc, got, want)
		}
		found := false
		for _, c := range b.GetStaticResources().GetClusters() {
			if c.GetName() == ScenarioService {
				found = true
				if p := c.GetLbSubsetConfig().GetFallbackPolicy(); p != clusterv3.Cluster_LbSubsetConfig_ANY_ENDPOINT {
					t.Errorf("service cluster falls back with %v, want ANY_ENDPOINT", p)
				}
			}
		}
		if !found {
			t.Error("no cluster for the scenario's service")
		}
	}
}

// A scenario's SetBy becomes its configuration's headers.setBy (none set is partroute's
// default), and the Envoy configuration of every arm follows it: with envoy and none the
// service's route removes the client's copies of the three headers, with envoy it sets them
// from partroute.request, and with extproc it leaves them to partroute's answer.
func TestScenarioSetBy(t *testing.T) {
	h := config.DefaultHeaders()
	for _, setBy := range []config.SetBy{0, config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
		sc := Scenario{Partitions: 2, Replicas: 2, SetBy: setBy}
		cfg, view := loadScenario(t, sc, FakeReplicaAddrs(sc.ReplicaCount()))
		if cfg.Headers.SetBy != setBy.OrDefault() {
			t.Errorf("scenario with SetBy %v: configuration's setBy %v", setBy, cfg.Headers.SetBy)
		}
		var wantRemove, wantAdd []string
		switch setBy.OrDefault() {
		case config.SetByEnvoy:
			wantAdd = []string{h.Partition, h.Role, h.Key}
			fallthrough
		case config.SetByNone:
			wantRemove = []string{h.Partition, h.Role, h.Key}
		}
		for _, noExtProc := range []bool{false, true} {
			b, err := EnvoyBootstrap(cfg, view, envoyconfig.Options{ListenAddress: "127.0.0.1:10000", AdminAddress: "127.0.0.1:9902", ExtProcAddress: "127.0.0.1:50051", NoExtProc: noExtProc})
			if err != nil {
				t.Fatal(err)
			}
			var hcm hcmv3.HttpConnectionManager
			if err := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
				t.Fatal(err)
			}
			route := hcm.GetRouteConfig().GetVirtualHosts()[0].GetRoutes()[0]
			if route.GetName() != ScenarioService {
				t.Fatalf("first route %s, want the service's", route.GetName())
			}
			var added []string
			for _, a := range route.GetRequestHeadersToAdd() {
				added = append(added, a.GetHeader().GetKey())
			}
			if !slices.Equal(route.GetRequestHeadersToRemove(), wantRemove) || !slices.Equal(added, wantAdd) {
				t.Errorf("SetBy %v, NoExtProc %v: the route removes %v and adds %v, want %v and %v", setBy, noExtProc, route.GetRequestHeadersToRemove(), added, wantRemove, wantAdd)
			}
		}
	}
	if err := (Scenario{Partitions: 1, Replicas: 1, SetBy: 9}).Check(); err == nil {
		t.Error("a scenario with an unknown setBy passes Check")
	}
}

// TestHTTPTarget sends requests over both protocols to a local server, as the http target does
// to Envoy's listener.
func TestHTTPTarget(t *testing.T) {
	var h1, h2, writes, bad atomic.Int64
	mux := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.ProtoMajor {
		case 1:
			h1.Add(1)
		case 2:
			h2.Add(1)
		}
		if r.Method == http.MethodPut {
			writes.Add(1)
		}
		if r.Host != ScenarioAuthority || !strings.HasPrefix(r.URL.Path, ScenarioPathPrefix) {
			bad.Add(1)
		}
		if strings.HasSuffix(r.URL.Path, "/0") {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(lis) }()
	t.Cleanup(func() { srv.Close() })

	for _, proto := range []string{HTTP1, H2C} {
		target, err := NewHTTPTarget(lis.Addr().String(), proto, 4)
		if err != nil {
			t.Fatal(err)
		}
		res, err := Run(context.Background(), target, Options{
			Mode: Closed, Concurrency: 4, Duration: 10 * time.Second, Requests: 400, WriteFraction: 0.5,
			Keys: KeyOptions{Distribution: Uniform, Space: 20},
		})
		target.Close()
		if err != nil {
			t.Fatal(err)
		}
		// Key 0 answers 503: about one request in twenty.
		if res.Requests != 400 || res.Errors != res.ErrorCodes["http_503"] || res.Errors == 0 || res.Errors > 60 {
			t.Errorf("%s: %d requests, errors %v", proto, res.Requests, res.ErrorCodes)
		}
	}
	if h1.Load() != 400 || h2.Load() != 400 || bad.Load() != 0 || writes.Load() < 100 {
		t.Errorf("server saw %d HTTP/1.1 and %d HTTP/2 requests, %d writes, %d misaddressed", h1.Load(), h2.Load(), writes.Load(), bad.Load())
	}
	if _, err := NewHTTPTarget("127.0.0.1:1", "h3", 1); err == nil {
		t.Error("an unknown protocol is accepted")
	}
}

func TestProcessCPU(t *testing.T) {
	before, err := ProcessCPU(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	// Burn CPU until the clock (10ms ticks) moves, bounded in time and count.
	deadline := time.Now().Add(10 * time.Second)
	x, after := uint64(1), before
	for round := 0; round < 100_000 && after == before && time.Now().Before(deadline); round++ {
		for i := 0; i < 100_000; i++ {
			x = x*6364136223846793005 + 1
		}
		if after, err = ProcessCPU(os.Getpid()); err != nil {
			t.Fatal(err)
		}
	}
	if after <= before || x == 0 {
		t.Errorf("CPU time went from %v to %v", before, after)
	}
	if _, err := ProcessCPU(-1); err == nil {
		t.Error("CPU time of a process that does not exist")
	}
}
