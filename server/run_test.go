package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
)

// serveAddrs matches the log line that reports the listen addresses.
var serveAddrs = regexp.MustCompile(`partroute serving" extproc=(127\.0\.0\.1:\d+) admin=(127\.0\.0\.1:\d+)`)

// testOptions are the options of a server a test runs: no drain delay, a short shutdown,
// connections that live as long as the test.
func testOptions(cfgPath string, poll time.Duration, log *slog.Logger) Options {
	o := DefaultOptions(cfgPath, log)
	o.Poll, o.DrainDelay, o.ShutdownTimeout, o.MaxConnectionAge = poll, 0, time.Second, time.Hour
	return o
}

// testServer is partroute run by a test, on a copy of the example files.
type testServer struct {
	dir            string
	extproc, admin string
	logs           *testkit.LogBuffer
	reload         chan struct{}
	cancel         context.CancelFunc
	// exited is closed when Run has returned err.
	exited chan struct{}
	err    error
}

// startServer runs partroute on a copy of the example files, with options edited by edit (nil
// keeps testOptions'), and waits until it reports its listen addresses. A test that does not
// stop it itself has it stopped, and its error checked, when it ends.
func startServer(t testing.TB, edit func(*Options)) *testServer {
	t.Helper()
	return startServerIn(t, testkit.CopyExamples(t), edit)
}

// startServerIn is startServer on the files in dir: a copy of the example files, which the
// test may have edited first.
func startServerIn(t testing.TB, dir string, edit func(*Options)) *testServer {
	t.Helper()
	s := &testServer{dir: dir, logs: &testkit.LogBuffer{}, reload: make(chan struct{}, 1), exited: make(chan struct{})}
	o := testOptions(filepath.Join(s.dir, "partroute.yaml"), time.Hour, slog.New(slog.NewTextHandler(s.logs, nil)))
	o.Reload = s.reload
	if edit != nil {
		edit(&o)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.err = Run(ctx, o); close(s.exited) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-s.exited:
			if s.err != nil {
				t.Errorf("serve: %v", s.err)
			}
		case <-time.After(30 * time.Second):
			t.Error("serve did not return 30s after the test ended")
		}
		if t.Failed() {
			t.Logf("partroute log:\n%s", s.logs)
		}
	})
	testkit.WaitFor(t, "serve to report its addresses", 10*time.Second, func() bool {
		select {
		case <-s.exited:
			t.Fatalf("serve returned %v before serving; log:\n%s", s.err, s.logs)
		default:
		}
		m := serveAddrs.FindStringSubmatch(s.logs.String())
		if m != nil {
			s.extproc, s.admin = m[1], m[2]
		}
		return m != nil
	})
	return s
}

// editFile replaces the first old with replacement in the file at path.
func editFile(t *testing.T, path, old, replacement string) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), old) {
		t.Fatalf("%q is not in %s", old, path)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(data), old, replacement, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestRunRunsAndDrains(t *testing.T) {
	const drainDelay = 3 * time.Second
	var opts Options
	srv := startServer(t, func(o *Options) { o.DrainDelay, o.ShutdownTimeout = drainDelay, 5*time.Second; opts = *o })
	dir, logs, hup, cancel, grpcAddr, adminAddr := srv.dir, srv.logs, srv.reload, srv.cancel, srv.extproc, srv.admin
	httpc := &http.Client{Timeout: 5 * time.Second}
	readyz := func() int {
		resp, err := httpc.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	testkit.WaitFor(t, "/readyz to answer 200", 10*time.Second, func() bool { return readyz() == http.StatusOK })

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	health := healthpb.NewHealthClient(conn)
	status := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		cctx, ccancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer ccancel()
		resp, err := health.Check(cctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health check of %q: %v", service, err)
		}
		return resp.GetStatus()
	}
	for _, svc := range []string{"", "envoy.service.ext_proc.v3.ExternalProcessor"} {
		if got := status(svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("health of %q: %v, want SERVING", svc, got)
		}
	}

	// One request through the running server, as Envoy sends it; it returns the partition.
	partitionOf12 := func() string {
		t.Helper()
		stream, err := extprocv3.NewExternalProcessorClient(conn).Process(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		raw := func(k, v string) *corev3.HeaderValue { return &corev3.HeaderValue{Key: k, RawValue: []byte(v)} }
		if err := stream.Send(&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestHeaders{RequestHeaders: &extprocv3.HttpHeaders{
			Headers: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{raw(":method", "PUT"), raw(":path", "/api/users/12"), raw(":authority", "a.example.com")}},
		}}}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.CloseSend(); err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("the stream ended with %v, want io.EOF", err)
		}
		return resp.GetDynamicMetadata().GetFields()["envoy.lb"].GetStructValue().GetFields()["partition"].GetStringValue()
	}
	if got := partitionOf12(); got != "users-1" {
		t.Errorf("partition %q, want users-1", got)
	}

	// SIGTERM: NOT_SERVING and not ready at once, while the server still answers.
	stopped := time.Now()
	cancel()
	testkit.WaitFor(t, "health to report NOT_SERVING", drainDelay/2, func() bool {
		return status("") == healthpb.HealthCheckResponse_NOT_SERVING && status("envoy.service.ext_proc.v3.ExternalProcessor") == healthpb.HealthCheckResponse_NOT_SERVING
	})
	testkit.WaitFor(t, "/readyz to answer 503", drainDelay/2, func() bool { return readyz() == http.StatusServiceUnavailable })
	// The requests of the drain are decided with the naming view as it is: partroute still
	// follows its changes.
	editFile(t, filepath.Join(dir, "naming.yaml"), "id: users-1\n", "id: users-1-moved\n")
	hup <- struct{}{}
	testkit.WaitFor(t, "a request of the drain to see the naming change", drainDelay/2, func() bool { return partitionOf12() == "users-1-moved" })
	select {
	case <-srv.exited:
		t.Fatalf("serve returned %v before the drain delay was over", srv.err)
	default:
	}

	select {
	case <-srv.exited:
	case <-time.After(drainDelay + opts.ShutdownTimeout + 10*time.Second):
		t.Fatal("serve did not return after the drain")
	}
	if took := time.Since(stopped); took < drainDelay {
		t.Errorf("serve returned %v after the signal, before the drain delay of %v", took, drainDelay)
	}
	if !strings.Contains(logs.String(), "partroute stopped") {
		t.Errorf("the stop is not logged:\n%s", logs)
	}
}

func TestRunReportsBusyPorts(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, c := range []struct {
		field          string
		extproc, admin string
	}{
		{"listen.extproc", busy.Addr().String(), "127.0.0.1:0"},
		{"listen.admin", "127.0.0.1:0", busy.Addr().String()},
	} {
		dir := t.TempDir()
		data, err := os.ReadFile(filepath.Join(serveExamples, "partroute.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		absNaming, err := filepath.Abs(filepath.Join(serveExamples, "naming.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("127.0.0.1:50051", c.extproc, "127.0.0.1:9901", c.admin, "file: naming.yaml", "file: "+absNaming).Replace(string(data))
		path := filepath.Join(dir, "partroute.yaml")
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		// A serve that started anyway stops when the context ends, and fails the test then.
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = Run(ctx, testOptions(path, time.Hour, slog.New(slog.DiscardHandler)))
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("serve with %s busy returned %v", c.field, err)
		}
	}
}

// stays.
func TestRunBrokenReloadKeepsServing(t *testing.T) {
	srv := startServer(t, nil)
	logs := srv.logs
	editFile(t, filepath.Join(srv.dir, "naming.yaml"), "role: primary", "role: leader")
	srv.reload <- struct{}{}
	testkit.WaitFor(t, "the broken naming view to be refused", 10*time.Second, func() bool {
		return strings.Contains(logs.String(), "still serving the previous one")
	})
	if !strings.Contains(logs.String(), `\"leader\" is not primary or secondary`) {
		t.Errorf("the refusal does not name the problem:\n%s", logs)
	}
}

// requestSeriesLine is the exposition line of a request counter of service and code at zero.
func requestSeriesLine(service, code string) string {
	return `partroute_extproc_requests_total{code="` + code + `",service="` + service + `"} 0`
}

// A server just started exposes the request series of every configured service at zero,
// before any request; a reload that adds a service brings its series, and one that removes a
// service takes its series away.
func TestRunMetricsRequestSeriesBeforeTheFirstRequest(t *testing.T) {
	srv := startServer(t, nil)
	dir, hup, adminAddr := srv.dir, srv.reload, srv.admin
	httpc := &http.Client{Timeout: 5 * time.Second}
	metrics := func() string {
		t.Helper()
		resp, err := httpc.Get("http://" + adminAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}

	body := metrics()
	for _, service := range []string{"users", "sessions", "regions", "settings", "-"} {
		for _, code := range resolver.Codes() {
			if line := requestSeriesLine(service, code.String()); !strings.Contains(body, "\n"+line+"\n") {
				t.Errorf("/metrics lacks %s before any request", line)
			}
		}
	}
	if line := requestSeriesLine("-", "passthrough"); !strings.Contains(body, "\n"+line+"\n") {
		t.Errorf("/metrics lacks %s before any request", line)
	}

	// settings becomes flags in both files, swapped in together on SIGHUP.
	for name, edit := range map[string][2]string{"partroute.yaml": {"- name: settings", "- name: flags"}, "naming.yaml": {"\n  settings:\n", "\n  flags:\n"}} {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), edit[0]) {
			t.Fatalf("%q is not in %s", edit[0], name)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(data), edit[0], edit[1], 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hup <- struct{}{}
	added := requestSeriesLine("flags", resolver.OK.String())
	testkit.WaitFor(t, "the series of the added service", 10*time.Second, func() bool { return strings.Contains(metrics(), "\n"+added+"\n") })
	body = metrics()
	for _, code := range resolver.Codes() {
		if line := requestSeriesLine("flags", code.String()); !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %s after the reload that added flags", line)
		}
	}
	if strings.Contains(body, `service="settings"`) {
		t.Errorf("/metrics still has series of settings after the reload that removed it:\n%s", body)
	}
}
