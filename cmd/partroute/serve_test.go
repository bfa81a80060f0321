package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
)

// serveExamples is the directory of the example configuration and naming view.
const serveExamples = "../../envoy-config/examples"

// adminFixture is the admin listener over the example files, served by httptest.
type adminFixture struct {
	srv   *httptest.Server
	ready *atomic.Bool
}

func newAdminFixture(t *testing.T) *adminFixture {
	t.Helper()
	cfg, err := config.Load(filepath.Join(serveExamples, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.LoadViewFile(cfg.Naming.File, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	resolver.NewSourceMetrics(reg).Served(view, time.Now())
	extproc.NewMetrics(reg)
	f := &adminFixture{ready: &atomic.Bool{}}
	f.srv = httptest.NewServer(adminMux(reg, resolver.New(&resolver.State{Config: cfg, Naming: view}), f.ready))
	t.Cleanup(f.srv.Close)
	return f
}

// get fetches path from the admin listener and returns status, content type and body.
func (f *adminFixture) get(t *testing.T, path string) (int, string, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(f.srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("content-type"), string(body)
}

func TestAdminHealthAndReadiness(t *testing.T) {
	f := newAdminFixture(t)
	if code, _, _ := f.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200", code)
	}
	if code, _, _ := f.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d, want 503", code)
	}
	f.ready.Store(true)
	if code, _, _ := f.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready: %d, want 200", code)
	}
	// Draining: not ready again, while the process stays healthy.
	f.ready.Store(false)
	if code, _, _ := f.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d, want 503", code)
	}
	if code, _, _ := f.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}
}

func TestAdminMetrics(t *testing.T) {
	f := newAdminFixture(t)
	code, _, body := f.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, name := range []string{"partroute_extproc_active_streams", "partroute_extproc_streams_total", "partroute_naming_reloads_total", "partroute_naming_view_info"} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("/metrics lacks %s:\n%s", name, body)
		}
	}
}

// resolveReport asks /debug/resolve about a request and decodes the report.
func (f *adminFixture) resolveReport(t *testing.T, query url.Values) resolver.Report {
	t.Helper()
	code, ctype, body := f.get(t, "/debug/resolve?"+query.Encode())
	if code != http.StatusOK || ctype != "application/json" {
		t.Fatalf("/debug/resolve?%s: %d %s: %s", query.Encode(), code, ctype, body)
	}
	var r resolver.Report
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("report %s: %v", body, err)
	}
	return r
}

func TestAdminDebugResolve(t *testing.T) {
	f := newAdminFixture(t)
	r := f.resolveReport(t, url.Values{"method": {"PUT"}, "url": {"http://a.example.com/api/users/12"}})
	if r.Service != "users" || r.Key != "12" || r.Partition == nil || r.Partition.ID != "users-1" || r.Role != "primary" {
		t.Errorf("report %+v, want users-1, primary, key 12", r)
	}
	if len(r.Replicas) != 1 || r.Replicas[0].Address != "127.0.0.1:8084" {
		t.Errorf("replicas %+v, want the primary of users-1 only", r.Replicas)
	}

	// Without a method the request is a GET: a read, which users sends to any replica.
	r = f.resolveReport(t, url.Values{"url": {"http://a.example.com/api/users/12"}})
	if r.Role != "any" || len(r.Replicas) != 2 {
		t.Errorf("GET report %+v, want role any over two replicas", r)
	}

	r = f.resolveReport(t, url.Values{"method": {"GET"}, "url": {"http://a.example.com/api/users"}, "header": {"x-user-id: 30"}})
	if r.Partition == nil || r.Partition.ID != "users-3" {
		t.Errorf("report with a key header %+v, want users-3", r)
	}

	// A rejection is a report too, with the status and code a client would get.
	r = f.resolveReport(t, url.Values{"method": {"PUT"}, "url": {"http://a.example.com/api/users/34"}})
	if r.Error == nil || r.Error.Status != 400 || r.Error.Code != "partition_key_out_of_range" {
		t.Errorf("report %+v, want a 400 partition_key_out_of_range error", r)
	}
}

func TestAdminDebugResolveBadRequests(t *testing.T) {
	f := newAdminFixture(t)
	for _, c := range []struct {
		q    url.Values
		want string
	}{
		{url.Values{"method": {"PUT"}}, "url is required"},
		{url.Values{"url": {"http://a.example.com/api/users/12"}, "header": {"no colon"}}, `header "no colon" is not 'name: value'`},
		{url.Values{"url": {"http://a.example.com/%zz"}}, `bad request: URL "http://a.example.com/%zz"`},
		// A URL without scheme and host would be read as a relative path that no service
		// matches: it is refused, as by partroute resolve.
		{url.Values{"url": {"api.example.com/api/users/12"}}, `bad request: URL "api.example.com/api/users/12" has no scheme and host: write it as http://host/path (or as a path, /path, with a host header)` + "\n"},
	} {
		code, _, body := f.get(t, "/debug/resolve?"+c.q.Encode())
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("/debug/resolve?%s: %d %q, want 400 with %q", c.q.Encode(), code, body, c.want)
		}
	}
}

func TestAdminDebugResolveNeverReadsFiles(t *testing.T) {
	f := newAdminFixture(t)
	// A body of "@path" reads a file in the CLI; over HTTP it must be refused before any file
	// is opened. A FIFO without a writer blocks whoever opens it for reading, so a handler
	// that opens it never answers.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Unblock a reader left behind by a failing handler, so that the server can close.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	q := url.Values{"method": {"POST"}, "url": {"http://a.test/api/orders"}, "body": {"@" + fifo}}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(f.srv.URL + "/debug/resolve?" + q.Encode())
	if err != nil {
		t.Fatalf("the handler did not answer a body of @file at once: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("body=@file: %d, want 400", resp.StatusCode)
	}
}

// serveLog collects serve's log, which is written from several goroutines.
type serveLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *serveLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *serveLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// serveWaitFor checks cond on a ticker until it holds, failing the test at the deadline.
func serveWaitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// serveAddrs matches the log line that reports the listen addresses.
var serveAddrs = regexp.MustCompile(`partroute serving" extproc=(127\.0\.0\.1:\d+) admin=(127\.0\.0\.1:\d+)`)

func TestServeRunsAndDrains(t *testing.T) {
	// The example files, listening on ports the kernel picks: serve logs which.
	dir := t.TempDir()
	for _, name := range []string{"partroute.yaml", "naming.yaml"} {
		data, err := os.ReadFile(filepath.Join(serveExamples, name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("127.0.0.1:50051", "127.0.0.1:0", "127.0.0.1:9901", "127.0.0.1:0").Replace(string(data))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	const drainDelay = 3 * time.Second
	opts := serveOptions{
		configPath:      filepath.Join(dir, "partroute.yaml"),
		poll:            time.Hour,
		drainDelay:      drainDelay,
		shutdownTimeout: 5 * time.Second,
		maxConnAge:      time.Minute,
	}
	logs := &serveLog{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	hup := make(chan os.Signal, 1)
	go func() { served <- serve(ctx, opts, hup, slog.New(slog.NewTextHandler(logs, nil))) }()

	var grpcAddr, adminAddr string
	serveWaitFor(t, "serve to report its addresses", 10*time.Second, func() bool {
		select {
		case err := <-served:
			t.Fatalf("serve returned %v before serving; log:\n%s", err, logs)
		default:
		}
		m := serveAddrs.FindStringSubmatch(logs.String())
		if m != nil {
			grpcAddr, adminAddr = m[1], m[2]
		}
		return m != nil
	})
	httpc := &http.Client{Timeout: 5 * time.Second}
	readyz := func() int {
		resp, err := httpc.Get("http://" + adminAddr + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	serveWaitFor(t, "/readyz to answer 200", 10*time.Second, func() bool { return readyz() == http.StatusOK })

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
	for _, svc := range []string{"", extProcServiceName} {
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
		if _, err := stream.Recv(); err != io.EOF {
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
	serveWaitFor(t, "health to report NOT_SERVING", drainDelay/2, func() bool {
		return status("") == healthpb.HealthCheckResponse_NOT_SERVING && status(extProcServiceName) == healthpb.HealthCheckResponse_NOT_SERVING
	})
	serveWaitFor(t, "/readyz to answer 503", drainDelay/2, func() bool { return readyz() == http.StatusServiceUnavailable })
	// The requests of the drain are decided with the naming view as it is: partroute still
	// follows its changes.
	namingPath := filepath.Join(dir, "naming.yaml")
	data, err := os.ReadFile(namingPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(namingPath, []byte(strings.Replace(string(data), "id: users-1\n", "id: users-1-moved\n", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	hup <- syscall.SIGHUP
	serveWaitFor(t, "a request of the drain to see the naming change", drainDelay/2, func() bool { return partitionOf12() == "users-1-moved" })
	select {
	case err := <-served:
		t.Fatalf("serve returned %v before the drain delay was over", err)
	default:
	}

	select {
	case err := <-served:
		if err != nil {
			t.Errorf("serve returned %v after a drain, want nil", err)
		}
	case <-time.After(drainDelay + opts.shutdownTimeout + 10*time.Second):
		t.Fatal("serve did not return after the drain")
	}
	if took := time.Since(stopped); took < drainDelay {
		t.Errorf("serve returned %v after the signal, before the drain delay of %v", took, drainDelay)
	}
	if !strings.Contains(logs.String(), "partroute stopped") {
		t.Errorf("the stop is not logged:\n%s", logs)
	}
}

func TestNewLogger(t *testing.T) {
	var buf bytes.Buffer
	log, err := newLogger(&buf, "debug", "json")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("hello", "k", "v")
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil || line["msg"] != "hello" || line["level"] != "DEBUG" {
		t.Errorf("json debug log %q: %v", buf.String(), err)
	}
	buf.Reset()
	if log, err = newLogger(&buf, "warn", "text"); err != nil {
		t.Fatal(err)
	}
	log.Info("quiet")
	log.Warn("loud")
	if strings.Contains(buf.String(), "quiet") || !strings.Contains(buf.String(), "msg=loud") {
		t.Errorf("text log at warn: %q", buf.String())
	}
	for _, c := range [][2]string{{"verbose", "text"}, {"info", "xml"}} {
		if _, err := newLogger(&buf, c[0], c[1]); err == nil {
			t.Errorf("newLogger(%q, %q) accepted", c[0], c[1])
		}
	}
}

func TestRunServeUsageErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.yaml")
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "usage: partroute serve"},
		{[]string{"-config", missing, "extra"}, "usage: partroute serve"},
		{[]string{"-nosuchflag"}, "flag provided but not defined"},
		{[]string{"-config", missing, "-log-level", "loud"}, "-log-level"},
		{[]string{"-config", missing}, "missing.yaml"},
	} {
		var stderr bytes.Buffer
		if code := runServe(c.args, io.Discard, &stderr); code != 1 {
			t.Errorf("runServe(%q) = %d, want 1", c.args, code)
		}
		if !strings.Contains(stderr.String(), c.want) {
			t.Errorf("runServe(%q) said %q, want it to mention %q", c.args, stderr.String(), c.want)
		}
	}
}

func TestServeReportsBusyPorts(t *testing.T) {
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
		err = serve(ctx, serveOptions{configPath: path, poll: time.Hour}, nil, slog.New(slog.DiscardHandler))
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("serve with %s busy returned %v", c.field, err)
		}
	}
}
