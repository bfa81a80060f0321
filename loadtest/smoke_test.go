package loadtest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
)

// loadScenario writes the scenario's files into a temporary directory and loads them as
// partroute does.
func loadScenario(t *testing.T, sc Scenario, replicas []string) (*config.Config, *resolver.View) {
	t.Helper()
	path, err := sc.WriteFiles(t.TempDir(), "127.0.0.1:0", "127.0.0.1:0", replicas)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatalf("scenario configuration: %v", err)
	}
	view, err := resolver.LoadViewFile(cfg.Naming.File, cfg)
	if err != nil {
		t.Fatalf("scenario naming view: %v", err)
	}
	return cfg, view
}

// startPartroute serves partroute's ext_proc handler for the default scenario on a loopback
// port.
func startPartroute(t *testing.T, reg prometheus.Registerer) *GRPCServer {
	t.Helper()
	return startPartrouteFor(t, reg, DefaultScenario())
}

// startPartrouteFor serves partroute's ext_proc handler for sc on a loopback port.
func startPartrouteFor(t *testing.T, reg prometheus.Registerer, sc Scenario) *GRPCServer {
	t.Helper()
	cfg, view := loadScenario(t, sc, FakeReplicaAddrs(sc.ReplicaCount()))
	h := extproc.NewHandler(resolver.New(&resolver.State{Config: cfg, Naming: view}), extproc.NewMetrics(reg), slog.New(slog.DiscardHandler))
	// The handler's requests are decoded by its codec.
	srv, err := StartExtProcServer("127.0.0.1:0", h, grpc.ForceServerCodecV2(extproc.NewCodec()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func dial(t *testing.T, addr string, expectRouted bool) *ExtProcTarget {
	t.Helper()
	target, err := DialExtProc(addr, 1)
	if err != nil {
		t.Fatal(err)
	}
	target.ExpectRouted = expectRouted
	t.Cleanup(func() { target.Close() })
	return target
}

// TestSmokeAgainstPartroute runs the generator against partroute's handler on a loopback gRPC
// server for a few seconds: every request must be routed, none may fail, and partroute must
// have counted each one.
func TestSmokeAgainstPartroute(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := startPartroute(t, reg)
	res, err := Run(context.Background(), dial(t, srv.Addr, true), Options{
		Name: "smoke", Mode: Closed, Concurrency: 64,
		Warmup: 200 * time.Millisecond, Duration: 3 * time.Second, Requests: 50_000, Timeout: 5 * time.Second,
		Keys:          KeyOptions{Distribution: Zipf, Space: 100_000, ZipfS: 1.1, ZipfV: 1},
		WriteFraction: 0.2, Seed: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 {
		t.Fatalf("%d errors: %v", res.Errors, res.ErrorCodes)
	}
	if res.Requests < 200 || res.Throughput <= 0 || res.Latency.P50 <= 0 || res.Latency.Max < res.Latency.P99 {
		t.Fatalf("implausible result: %d requests, %.0f/s, latency %+v", res.Requests, res.Throughput, res.Latency)
	}
	if ok := countedOK(t, reg); ok != float64(res.AllRequests) {
		t.Errorf("partroute counted %v routed requests, the generator sent %d", ok, res.AllRequests)
	}
	t.Logf("%d requests, %.0f/s, p50 %s p99 %s", res.Requests, res.Throughput, FormatNS(float64(res.Latency.P50)), FormatNS(float64(res.Latency.P99)))
}

// In each shape of partroute's answer (headers.setBy), the generator counts partroute's
// answers as routed when it expects that shape, and as unrouted when it expects the header
// mutation that envoy and none leave out: the check would otherwise pass on anything.
func TestSmokeEachShape(t *testing.T) {
	for _, setBy := range []config.SetBy{config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
		t.Run(setBy.String(), func(t *testing.T) {
			sc := DefaultScenario()
			sc.SetBy = setBy
			reg := prometheus.NewRegistry()
			srv := startPartrouteFor(t, reg, sc)
			o := Options{Name: "smoke " + setBy.String(), Mode: Closed, Concurrency: 8, Duration: 10 * time.Second, Requests: 2000, Timeout: 5 * time.Second,
				Keys: KeyOptions{Distribution: Uniform, Space: 1000}, WriteFraction: 0.2, Seed: 1}
			target := dial(t, srv.Addr, true)
			target.SetBy = setBy
			res, err := Run(context.Background(), target, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.Errors != 0 || res.Requests != 2000 {
				t.Fatalf("%d requests, errors %v", res.Requests, res.ErrorCodes)
			}
			if setBy == config.SetByExtProc {
				return
			}
			wrong := dial(t, srv.Addr, true)
			wrong.SetBy = config.SetByExtProc
			o.Requests = 100
			res, err = Run(context.Background(), wrong, o)
			if err != nil {
				t.Fatal(err)
			}
			if res.ErrorCodes["unrouted"] != res.Requests || res.Requests == 0 {
				t.Errorf("expecting extproc's header mutation from partroute under setBy %v: errors %v of %d requests, want every one unrouted", setBy, res.ErrorCodes, res.Requests)
			}
		})
	}
}

// countedOK is partroute's count of requests routed for the scenario's service.
func countedOK(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		if f.GetName() != "partroute_extproc_requests_total" {
			continue
		}
		for _, m := range f.GetMetric() {
			if labels(m)["service"] == ScenarioService && labels(m)["code"] == "ok" {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestSmokeOpenLoopAgainstNoop paces a second of requests to the no-op server: the rate is
// kept and nothing fails.
func TestSmokeOpenLoopAgainstNoop(t *testing.T) {
	srv, err := StartExtProcServer("127.0.0.1:0", NoopProcessor{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	res, err := Run(context.Background(), dial(t, srv.Addr, false), Options{
		Mode: Open, Rate: 500, Concurrency: 32, Duration: time.Second,
		Keys: KeyOptions{Distribution: Uniform, Space: 1000},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 0 || res.Requests != 500 {
		t.Fatalf("%d requests, %d errors %v; want 500 and none", res.Requests, res.Errors, res.ErrorCodes)
	}
}

// TestNoopRefusesToRoute checks that the routed check has teeth: the no-op server's empty
// answers count as unrouted when a routed answer is expected.
func TestNoopRefusesToRoute(t *testing.T) {
	srv, err := StartExtProcServer("127.0.0.1:0", NoopProcessor{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	res, err := Run(context.Background(), dial(t, srv.Addr, true), Options{
		Mode: Closed, Concurrency: 2, Duration: 5 * time.Second, Requests: 20,
		Keys: KeyOptions{Distribution: Uniform, Space: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.ErrorCodes["unrouted"] != 20 {
		t.Errorf("errors %v, want 20 unrouted", res.ErrorCodes)
	}
}

// TestUnreachableServer checks that a server that is not there shows as errors by gRPC code,
// within the run's bounds.
func TestUnreachableServer(t *testing.T) {
	res, err := Run(context.Background(), dial(t, "127.0.0.1:1", false), Options{
		Mode: Closed, Concurrency: 2, Duration: 5 * time.Second, Requests: 10, Timeout: time.Second,
		Keys: KeyOptions{Distribution: Uniform, Space: 10},
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Errors != 10 || res.ErrorCodes["grpc_Unavailable"] != 10 {
		t.Errorf("errors %d %v, want 10 grpc_Unavailable", res.Errors, res.ErrorCodes)
	}
}
