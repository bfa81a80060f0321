package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/server"
)

// serveExamples is the directory of the example configuration and naming view.
const serveExamples = "../../envoy-config/examples"

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
	logs := &serveLog{}
	hup := make(chan struct{}, 1)
	opts := embeddedOptions(filepath.Join(dir, "partroute.yaml"), time.Hour, slog.New(slog.NewTextHandler(logs, nil)))
	opts.DrainDelay, opts.ShutdownTimeout, opts.Reload = drainDelay, 5*time.Second, hup
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- server.Run(ctx, opts) }()

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
		return status("") == healthpb.HealthCheckResponse_NOT_SERVING && status("envoy.service.ext_proc.v3.ExternalProcessor") == healthpb.HealthCheckResponse_NOT_SERVING
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
	hup <- struct{}{}
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
		err = server.Run(ctx, embeddedOptions(path, time.Hour, slog.New(slog.DiscardHandler)))
		cancel()
		if err == nil || !strings.Contains(err.Error(), c.field) {
			t.Errorf("serve with %s busy returned %v", c.field, err)
		}
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
