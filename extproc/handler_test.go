package extproc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

func TestRoutableWrite(t *testing.T) {
	f := newFixture(t)
	resp := f.decide(t, requestHeaders("PUT", "a.example.com", "/api/users/12", "content-type", "application/json"))
	checkRouted(t, resp, false, routed{partition: "users-1", role: "primary", key: "12"})
}

func TestRoutableWriteEveryPartition(t *testing.T) {
	f := newFixture(t)
	// The [0, 33] by 4 split is [0,8] [9,17] [18,25] [26,33]: the edges of each partition.
	for _, c := range []struct {
		key  string
		want string
	}{
		{"0", "users-0"}, {"8", "users-0"}, {"9", "users-1"}, {"17", "users-1"},
		{"18", "users-2"}, {"25", "users-2"}, {"26", "users-3"}, {"33", "users-3"},
	} {
		resp := f.decide(t, requestHeaders("POST", "users.example.com:8443", "/api/users/"+c.key))
		checkRouted(t, resp, false, routed{partition: c.want, role: "primary", key: c.key})
	}
}

func TestReadOnAnyServiceLeavesRoleOut(t *testing.T) {
	f := newFixture(t)
	resp := f.decide(t, requestHeaders("GET", "a.example.com", "/api/users/30"))
	checkRouted(t, resp, false, routed{partition: "users-3", roleHeader: "any", key: "30"})
}

func TestStrongReadGoesToPrimary(t *testing.T) {
	f := newFixture(t)
	resp := f.decide(t, requestHeaders("GET", "a.example.com", "/api/users/30", "x-partroute-consistency", "strong"))
	checkRouted(t, resp, false, routed{partition: "users-3", role: "primary", key: "30"})
}

func TestReadOnSecondaryServiceWithHashKey(t *testing.T) {
	f := newFixture(t)
	// The key is the hash of the session cookie reduced into the full int64 range: the
	// negative half is the first partition, the rest the second.
	const session = "8d1f0c5e2b7a4c9d"
	key := keying.ReduceHash(keying.XXHash64.Sum64(session), -1<<63, 1<<63-1)
	want := "sessions/0:9223372036854775807"
	if key < 0 {
		want = "sessions/-9223372036854775808:-1"
	}
	resp := f.decide(t, requestHeaders("GET", "api.test", "/api/sessions/current", "cookie", "theme=dark; session="+session))
	checkRouted(t, resp, false, routed{partition: want, role: "secondary", key: fmt.Sprint(key)})
}

func TestNamedPartition(t *testing.T) {
	f := newFixture(t)
	resp := f.decide(t, requestHeaders("DELETE", "api.test", "/api/regions/apac/items/3"))
	checkRouted(t, resp, false, routed{partition: "regions/apac", role: "primary", key: "apac"})
}

func TestSingletonSetsNoKeyHeader(t *testing.T) {
	f := newFixture(t)
	resp := f.decide(t, requestHeaders("GET", "api.test", "/api/settings/theme", "x-partition-key", "7"))
	// checkRouted fails when x-partition-key is set; it is still removed.
	checkRouted(t, resp, false, routed{partition: "settings", role: "primary"})
}

func TestClientHeadersDoNotChangeTheDecision(t *testing.T) {
	f := newFixture(t)
	// A client that names its own partition and role, twice over, gets the decision partroute
	// makes, and its headers are removed before partroute's are set.
	resp := f.decide(t, requestHeaders("PUT", "a.example.com", "/api/users/12",
		"x-partition-id", "users-3",
		"x-partition-role", "secondary",
		"x-partition-key", "30",
		"x-partition-id", "users-0",
	))
	checkRouted(t, resp, false, routed{partition: "users-1", role: "primary", key: "12"})
}

func TestHeaderValuesInValueField(t *testing.T) {
	f := newFixture(t)
	resp := f.decide(t, headersMessage(false, true, "PUT", "a.example.com", "/api/users/12"))
	checkRouted(t, resp, false, routed{partition: "users-1", role: "primary", key: "12"})
	resp = f.decide(t, headersMessage(false, true, "GET", "a.example.com", "/api/users", "x-user-id", "20"))
	checkRouted(t, resp, false, routed{partition: "users-2", roleHeader: "any", key: "20"})
}

func TestHostHeaderStandsInForAuthority(t *testing.T) {
	f := newFixture(t)
	msg := requestHeaders("PUT", "", "/api/users/12", "host", "a.example.com")
	checkRouted(t, f.decide(t, msg), false, routed{partition: "users-1", role: "primary", key: "12"})
}

// naming is a resolver.Naming that always fails, as an unreachable naming source does.
type failingNaming struct{}

func (failingNaming) Partition(context.Context, *config.Service, keying.Key) (*resolver.Partition, error) {
	return nil, errors.New("connection refused")
}

func TestRejections(t *testing.T) {
	cfg := loadExampleConfig(t)
	example := newFixtureWith(t, cfg, loadExampleView(t, cfg))
	// users-3 has a single replica, its primary; marked unhealthy, writes have nowhere to go.
	unhealthy := newFixtureWith(t, cfg, loadExampleView(t, cfg,
		"{address: 127.0.0.1:8088, role: primary}", "{address: 127.0.0.1:8088, role: primary, healthy: false}"))
	noNaming := newFixtureWith(t, cfg, failingNaming{})
	rejectCfg := loadExampleConfig(t, "unmatched: passthrough", "unmatched: reject")
	reject := newFixtureWith(t, rejectCfg, loadExampleView(t, rejectCfg))

	for _, c := range []struct {
		name    string
		f       *fixture
		msg     *extprocv3.ProcessingRequest
		status  int
		code    string
		service string
	}{
		{"missing key", example, requestHeaders("PUT", "a.example.com", "/api/users"), 400, "missing_partition_key", "users"},
		{"missing cookie and header", example, requestHeaders("GET", "a.test", "/api/sessions", "cookie", "theme=dark"), 400, "missing_partition_key", "sessions"},
		{"not a number", example, requestHeaders("PUT", "a.example.com", "/api/users/abc"), 400, "invalid_partition_key", "users"},
		{"plus sign", example, requestHeaders("PUT", "a.example.com", "/api/users", "x-user-id", "+12"), 400, "invalid_partition_key", "users"},
		{"overflow", example, requestHeaders("PUT", "a.example.com", "/api/users?user=9223372036854775808"), 400, "invalid_partition_key", "users"},
		{"above range", example, requestHeaders("PUT", "a.example.com", "/api/users/34"), 400, "partition_key_out_of_range", "users"},
		{"below range", example, requestHeaders("PUT", "a.example.com", "/api/users/-1"), 400, "partition_key_out_of_range", "users"},
		{"unknown name", example, requestHeaders("GET", "a.test", "/api/regions/EU"), 400, "partition_key_out_of_range", "regions"},
		{"unhealthy primary", unhealthy, requestHeaders("PUT", "a.example.com", "/api/users/30"), 503, "partition_unavailable", "users"},
		{"unhealthy only replica", unhealthy, requestHeaders("GET", "a.example.com", "/api/users/30"), 503, "partition_unavailable", "users"},
		{"naming unreachable", noNaming, requestHeaders("PUT", "a.example.com", "/api/users/12"), 503, "naming_unavailable", "users"},
		{"naming unreachable singleton", noNaming, requestHeaders("GET", "a.test", "/api/settings"), 503, "naming_unavailable", "settings"},
		{"no service", reject, requestHeaders("GET", "www.test", "/index.html"), 404, "no_service", "-"},
		{"no service near a prefix", reject, requestHeaders("GET", "a.example.com", "/api/usersX/1"), 404, "no_service", "-"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := testutil.ToFloat64(c.f.metrics.requests.WithLabelValues(c.service, c.code))
			checkRejection(t, c.f.decide(t, c.msg), c.status, c.code)
			if got := testutil.ToFloat64(c.f.metrics.requests.WithLabelValues(c.service, c.code)) - before; got != 1 {
				t.Errorf("requests_total{service=%q,code=%q} rose by %v, want 1", c.service, c.code, got)
			}
		})
	}
}

func TestRejectionsAreLoggedOnceAtDebug(t *testing.T) {
	f := newFixture(t)
	// The path holds a control character and a quote: the log must carry neither raw.
	f.decide(t, requestHeaders("PUT", "a.example.com", "/api/users/4\"2\x01"))
	f.decide(t, requestHeaders("PUT", "a.example.com", "/api/users/12"))
	logs := f.logs.String()
	if n := strings.Count(logs, "request rejected"); n != 1 {
		t.Fatalf("%d rejection log lines, want 1:\n%s", n, logs)
	}
	if !strings.Contains(logs, "level=DEBUG") || !strings.Contains(logs, "code=invalid_partition_key") || !strings.Contains(logs, "service=users") {
		t.Errorf("rejection log lacks level, code or service:\n%s", logs)
	}
	if strings.ContainsRune(logs, '\x01') {
		t.Errorf("the log carries a raw control character:\n%q", logs)
	}

	// With debug logging off nothing is logged at all.
	quiet := &testkit.LogBuffer{}
	h := NewHandler(f.resolver, NewMetrics(nil), slog.New(slog.NewTextHandler(quiet, nil)))
	if err := h.Process(newFakeStream(requestHeaders("PUT", "a.example.com", "/api/users/abc"))); err != nil {
		t.Fatal(err)
	}
	if quiet.String() != "" {
		t.Errorf("logged at info level: %s", quiet.String())
	}
}

func TestUnmatchedPassesThrough(t *testing.T) {
	f := newFixture(t)
	// An unmatched request passes through without metadata, and only loses the partition
	// headers a client may have sent, so that an upstream can trust them.
	resp := f.decide(t, requestHeaders("GET", "www.test", "/index.html", "x-partition-id", "users-0"))
	want := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{Response: &extprocv3.CommonResponse{
		HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{"x-partition-id", "x-partition-role", "x-partition-key"}},
	}}}}
	if !proto.Equal(resp, want) {
		t.Fatalf("passthrough response %v, want %v", resp, want)
	}
	if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("-", "passthrough")); got != 1 {
		t.Errorf("requests_total{service=\"-\",code=\"passthrough\"} = %v, want 1", got)
	}
}

func TestOtherMessagesGetTheMatchingEmptyResponse(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name string
		msg  *extprocv3.ProcessingRequest
		want *extprocv3.ProcessingResponse
	}{
		{"request body without pending headers",
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestBody{RequestBody: &extprocv3.HttpBody{Body: []byte(`{"user":{"id":1}}`)}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{}}}},
		{"response headers",
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseHeaders{ResponseHeaders: &extprocv3.HeadersResponse{}}}},
		{"response body",
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseBody{ResponseBody: &extprocv3.HttpBody{Body: []byte("x")}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseBody{ResponseBody: &extprocv3.BodyResponse{}}}},
		{"request trailers",
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_RequestTrailers{RequestTrailers: &extprocv3.HttpTrailers{}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestTrailers{RequestTrailers: &extprocv3.TrailersResponse{}}}},
		{"response trailers",
			&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
			&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_ResponseTrailers{ResponseTrailers: &extprocv3.TrailersResponse{}}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := f.decide(t, c.msg); !proto.Equal(got, c.want) {
				t.Errorf("response %v, want %v", got, c.want)
			}
		})
	}
}

func TestFullRequestOnOneStream(t *testing.T) {
	f := newFixture(t)
	// A stream that carries every phase gets one answer per message, in order, each of the
	// matching kind.
	out := f.process(t,
		requestHeaders("PUT", "a.example.com", "/api/users/12"),
		&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}},
		&extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseTrailers{ResponseTrailers: &extprocv3.HttpTrailers{}}},
	)
	if len(out) != 3 {
		t.Fatalf("%d responses, want 3", len(out))
	}
	checkRouted(t, out[0], false, routed{partition: "users-1", role: "primary", key: "12"})
	if out[1].GetResponseHeaders() == nil || out[2].GetResponseTrailers() == nil {
		t.Errorf("responses %v, %v are not response_headers and response_trailers", out[1], out[2])
	}
}

func TestUnknownMessageIsLeftUnanswered(t *testing.T) {
	f := newFixture(t)
	out := f.process(t, &extprocv3.ProcessingRequest{}, requestHeaders("PUT", "a.example.com", "/api/users/12"))
	if len(out) != 1 {
		t.Fatalf("%d responses, want 1 (none for the empty message)", len(out))
	}
	checkRouted(t, out[0], false, routed{partition: "users-1", role: "primary", key: "12"})
	if !strings.Contains(f.logs.String(), "unknown kind") {
		t.Errorf("the message of unknown kind was not logged:\n%s", f.logs.String())
	}
}

// A client that sends messages of unknown kind by the hundred gets one warning a second, and
// the next warning counts those held back: unlimited, each logged a line.
func TestUnknownMessagesAreRateLimited(t *testing.T) {
	f := newFixture(t)
	now := time.Unix(1000, 0)
	f.handler.now = func() time.Time { return now }
	flood := make([]*extprocv3.ProcessingRequest, 800)
	for i := range flood {
		flood[i] = &extprocv3.ProcessingRequest{}
	}
	if out := f.process(t, flood...); len(out) != 0 {
		t.Fatalf("%d responses to messages of unknown kind, want none", len(out))
	}
	now = now.Add(time.Second)
	f.process(t, &extprocv3.ProcessingRequest{})
	lines := strings.Split(strings.TrimSpace(f.logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("801 messages of unknown kind logged %d lines, want 2:\n%.2000s", len(lines), f.logs.String())
	}
	if !strings.Contains(lines[0], "unknown kind") || !strings.Contains(lines[0], "suppressed_since_last=0") ||
		!strings.Contains(lines[1], "suppressed_since_last=799") {
		t.Errorf("log lines\n%s\nwant the first with 0 held back and the second with 799", strings.Join(lines, "\n"))
	}
}

// bodyConfig is a service that keys on a JSON body field, with a small body limit.
const bodyConfig = `
listen: {extproc: "127.0.0.1:0", admin: "127.0.0.1:0"}
naming: {source: file, file: naming.yaml}
maxBodyBytes: 64
services:
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 4}
    key:
      sources: [{jsonBody: /user/id}]
      transform: int64
    replicas: {reads: primary}
`

const bodyNaming = `
services:
  orders:
    partitions:
      - {lowKey: 0, highKey: 24, id: orders-0, replicas: [{address: "127.0.0.1:9001", role: primary}]}
      - {lowKey: 25, highKey: 49, id: orders-1, replicas: [{address: "127.0.0.1:9002", role: primary}]}
      - {lowKey: 50, highKey: 74, id: orders-2, replicas: [{address: "127.0.0.1:9003", role: primary}]}
      - {lowKey: 75, highKey: 99, id: orders-3, replicas: [{address: "127.0.0.1:9004", role: primary}]}
`

func newBodyFixture(t *testing.T) *fixture {
	t.Helper()
	path := filepath.Join(t.TempDir(), "partroute.yaml")
	cfg, err := config.Parse([]byte(bodyConfig), path)
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.ParseView([]byte(bodyNaming), cfg.Naming.File, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return newFixtureWith(t, cfg, view)
}

func TestBodyKeying(t *testing.T) {
	f := newBodyFixture(t)
	out := f.process(t,
		requestHeaders("POST", "a.test", "/api/orders", "content-type", "application/json"),
		requestBody(`{"user": {"id": 42, "name": "x"}}`),
	)
	if len(out) != 2 {
		t.Fatalf("%d responses, want 2", len(out))
	}
	// The headers are answered without a decision (the key is in the body still to come),
	// but the client's partroute headers are removed at once: nothing the client chose may
	// reach the upstream, even if the body never came.
	removeOnly := &extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{
		Response: &extprocv3.CommonResponse{HeaderMutation: &extprocv3.HeaderMutation{RemoveHeaders: []string{"x-partition-id", "x-partition-role", "x-partition-key"}}},
	}}}
	if !proto.Equal(out[0], removeOnly) {
		t.Errorf("headers response %v, want one that only removes partroute's headers", out[0])
	}
	checkRouted(t, out[1], true, routed{partition: "orders-1", role: "primary", key: "42"})
	if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("orders", "ok")); got != 1 {
		t.Errorf("the request was counted %v times, want once", got)
	}
}

func TestBodyKeyingRejections(t *testing.T) {
	f := newBodyFixture(t)
	headers := requestHeaders("POST", "a.test", "/api/orders")
	for _, c := range []struct {
		name   string
		body   string
		status int
		code   string
	}{
		{"no field", `{"user": {}}`, 400, "missing_partition_key"},
		{"empty body", ``, 400, "missing_partition_key"},
		{"not JSON", `{"user": `, 400, "invalid_partition_key"},
		{"out of range", `{"user": {"id": 100}}`, 400, "partition_key_out_of_range"},
		{"above maxBodyBytes", `{"user": {"id": 42}, "padding": "` + strings.Repeat("x", 64) + `"}`, 413, "request_body_too_large"},
		// The limit comes before parsing: what an oversized body holds does not matter.
		{"above maxBodyBytes and not JSON", strings.Repeat("{", 65), 413, "request_body_too_large"},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := testutil.ToFloat64(f.metrics.requests.WithLabelValues("orders", c.code))
			out := f.process(t, headers, requestBody(c.body))
			if len(out) != 2 {
				t.Fatalf("%d responses, want 2", len(out))
			}
			checkRejection(t, out[1], c.status, c.code)
			// Every rejection of a matched request is counted under its service.
			if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("orders", c.code)) - before; got != 1 {
				t.Errorf("requests_total{service=\"orders\",code=%q} rose by %v, want 1", c.code, got)
			}
		})
	}
}

func TestBodyKeyingWithoutBody(t *testing.T) {
	f := newBodyFixture(t)
	// end_of_stream on the headers: no body will come, so the decision is made at once.
	out := f.process(t, headersMessage(true, false, "POST", "a.test", "/api/orders"))
	if len(out) != 1 {
		t.Fatalf("%d responses, want 1", len(out))
	}
	checkRejection(t, out[0], 400, "missing_partition_key")
}

func TestProcessEndsQuietly(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"half-close", io.EOF, nil},
		{"wrapped half-close", fmt.Errorf("recv: %w", io.EOF), nil},
		{"reset", status.Error(codes.Canceled, "context canceled"), nil},
		{"transport failure", status.Error(codes.Internal, "boom"), status.Error(codes.Internal, "boom")},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newFakeStream(requestHeaders("PUT", "a.example.com", "/api/users/12"))
			s.recvErr = c.err
			err := f.handler.Process(s)
			if (err == nil) != (c.want == nil) || (err != nil && status.Code(err) != status.Code(c.want)) {
				t.Errorf("Process returned %v, want %v", err, c.want)
			}
			if len(s.out) != 1 {
				t.Errorf("%d responses, want 1", len(s.out))
			}
		})
	}
}

func TestProcessEndsWhenContextEnds(t *testing.T) {
	f := newFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	s := newFakeStream()
	s.ctx = ctx
	s.recvErr = errors.New("transport is closing")
	if err := f.handler.Process(s); err != nil {
		t.Errorf("Process on an ended context returned %v, want nil", err)
	}
	// A failed send on a live stream is an error worth returning.
	s = newFakeStream(requestHeaders("PUT", "a.example.com", "/api/users/12"))
	s.sendErr = errors.New("send failed")
	if err := f.handler.Process(s); err == nil {
		t.Error("Process hid a failed send on a live stream")
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t)
	for i := 0; i < 3; i++ {
		f.decide(t, requestHeaders("PUT", "a.example.com", "/api/users/12"))
	}
	f.decide(t, requestHeaders("PUT", "a.example.com", "/api/users/abc"))
	f.decide(t, requestHeaders("GET", "a.test", "/api/regions/eu"))
	f.decide(t, requestHeaders("GET", "www.test", "/"))

	for _, c := range []struct {
		service, code string
		want          float64
	}{
		{"users", "ok", 3},
		{"users", "invalid_partition_key", 1},
		{"regions", "ok", 1},
		{"-", "passthrough", 1},
		{"users", "missing_partition_key", 0},
	} {
		if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues(c.service, c.code)); got != c.want {
			t.Errorf("requests_total{service=%q,code=%q} = %v, want %v", c.service, c.code, got, c.want)
		}
	}
	if got := testutil.ToFloat64(f.metrics.streams); got != 6 {
		t.Errorf("streams_total = %v, want 6", got)
	}
	if n, err := testutil.GatherAndCount(f.reg, "partroute_extproc_decision_duration_seconds"); err != nil || n != 1 {
		t.Errorf("decision histogram: %d series, %v", n, err)
	}
	// The series are registered under their documented names.
	for _, name := range []string{"partroute_extproc_requests_total", "partroute_extproc_active_streams", "partroute_extproc_streams_total"} {
		if n, err := testutil.GatherAndCount(f.reg, name); err != nil || n == 0 {
			t.Errorf("%s: %d series, %v", name, n, err)
		}
	}
}

func TestActiveStreams(t *testing.T) {
	f := newFixture(t)
	s := newFakeStream(requestHeaders("PUT", "a.example.com", "/api/users/12"))
	s.recv = make(chan *extprocv3.ProcessingRequest)
	done := make(chan error, 1)
	go func() { done <- f.handler.Process(s) }()
	testkit.WaitFor(t, "one active stream", 10*time.Second, func() bool { return testutil.ToFloat64(f.metrics.activeStreams) == 1 })
	// A second message on the same stream is answered, and the stream stays open.
	s.recv <- &extprocv3.ProcessingRequest{Request: &extprocv3.ProcessingRequest_ResponseHeaders{ResponseHeaders: &extprocv3.HttpHeaders{}}}
	if got := testutil.ToFloat64(f.metrics.activeStreams); got != 1 {
		t.Errorf("active streams = %v while the stream is open, want 1", got)
	}
	close(s.recv)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Process: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Process did not return after the half-close")
	}
	if got := testutil.ToFloat64(f.metrics.activeStreams); got != 0 {
		t.Errorf("active streams = %v after the stream ended, want 0", got)
	}
	if len(s.out) != 2 {
		t.Errorf("%d responses, want 2", len(s.out))
	}
}

func TestEveryCodeIsCountedUnderItsName(t *testing.T) {
	m := NewMetrics(nil)
	for _, c := range resolver.Codes() {
		m.countRequest("svc", c)
		if got := testutil.ToFloat64(m.requests.WithLabelValues("svc", c.String())); got != 1 {
			t.Errorf("code %s counted %v times under its name, want 1", c, got)
		}
	}
}

// decider is a Decider that returns a fixed decision.
type decider resolver.Decision

func (d decider) Resolve(context.Context, *keying.Request) resolver.Decision {
	return resolver.Decision(d)
}

func (decider) Await(_ context.Context, _ *keying.Request, d resolver.Decision, _ func()) resolver.Decision {
	return d
}

func TestErrorWithoutServiceIsCountedUnmatched(t *testing.T) {
	m := NewMetrics(nil)
	h := NewHandler(decider{Err: &resolver.Error{Code: resolver.NamingUnavailable, Message: "down"}}, m, slog.New(slog.DiscardHandler))
	s := newFakeStream(requestHeaders("GET", "a.test", "/"))
	if err := h.Process(s); err != nil {
		t.Fatal(err)
	}
	checkRejection(t, s.out[0], 503, "naming_unavailable")
	if got := testutil.ToFloat64(m.requests.WithLabelValues("-", "naming_unavailable")); got != 1 {
		t.Errorf("requests_total{service=\"-\",code=\"naming_unavailable\"} = %v, want 1", got)
	}
}

// A naming source's error never reaches the client, which may not know the cluster's
// internal names and addresses; the operator gets it in a warning, at most one a second.
func TestNamingCauseIsLoggedNotSent(t *testing.T) {
	const secret = "gateway 10.0.0.5:19080 timed out resolving fabric:/internal/users"
	var out testkit.LogBuffer
	d := decider{Err: &resolver.Error{Code: resolver.NamingUnavailable, Message: "service users: naming view unavailable", Cause: errors.New(secret)}}
	h := NewHandler(d, NewMetrics(nil), slog.New(slog.NewTextHandler(&out, nil)))
	for i := 0; i < 5; i++ {
		s := newFakeStream(requestHeaders("GET", "a.test", "/"))
		if err := h.Process(s); err != nil {
			t.Fatal(err)
		}
		checkRejection(t, s.out[0], 503, "naming_unavailable")
		ir := s.out[0].GetImmediateResponse()
		if body := string(ir.GetBody()); strings.Contains(body, "10.0.0.5") || strings.Contains(body, "fabric:/") || !strings.Contains(body, "naming view unavailable") {
			t.Fatalf("rejection body %s: want the generic message without the cause", body)
		}
	}
	log := out.String()
	if n := strings.Count(log, secret); n != 1 {
		t.Errorf("the cause is logged %d times for 5 rejections within a second, want once:\n%s", n, log)
	}
	if !strings.Contains(log, "level=WARN") {
		t.Errorf("the cause is not a warning:\n%s", log)
	}
}

// TestAnswerShapes checks the answers of each headers.setBy: with envoy and none, a routed
// answer is metadata alone (partroute.request holding the headers' values for envoy, and no
// key for a singleton service even when the client sent one), while an unmatched request that
// passes through still has the client's partroute headers removed.
func TestAnswerShapes(t *testing.T) {
	for _, setBy := range []config.SetBy{config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
		t.Run(setBy.String(), func(t *testing.T) {
			cfg := loadExampleConfig(t)
			cfg.Headers.SetBy = setBy
			f := newFixtureWith(t, cfg, loadExampleView(t, cfg))
			spoofed := []string{"x-partition-id", "users-3", "x-partition-role", "secondary", "x-partition-key", "30"}
			for _, c := range []struct {
				name string
				msg  *extprocv3.ProcessingRequest
				want routed
			}{
				{"write", requestHeaders("PUT", "a.example.com", "/api/users/12", spoofed...), routed{partition: "users-1", role: "primary", key: "12"}},
				{"read of any replica", requestHeaders("GET", "a.example.com", "/api/users/30", spoofed...), routed{partition: "users-3", roleHeader: "any", key: "30"}},
				{"singleton", requestHeaders("GET", "api.test", "/api/settings/theme", spoofed...), routed{partition: "settings", role: "primary"}},
			} {
				resp := f.decide(t, c.msg)
				if setBy == config.SetByExtProc {
					checkRouted(t, resp, false, c.want)
					continue
				}
				if resp.GetRequestHeaders() == nil || resp.GetRequestHeaders().GetResponse() != nil {
					t.Errorf("%s: answer %v, want request headers without a mutation", c.name, resp)
				}
				md := resp.GetDynamicMetadata().GetFields()
				lb := md[contract.LBNamespace].GetStructValue().GetFields()
				if lb[contract.KeyPartition].GetStringValue() != c.want.partition || lb[contract.KeyRole].GetStringValue() != c.want.role {
					t.Errorf("%s: envoy.lb %v, want %s %q", c.name, lb, c.want.partition, c.want.role)
				}
				req, ok := md[contract.RequestNamespace]
				if setBy == config.SetByNone {
					if ok || len(md) != 1 {
						t.Errorf("%s: metadata %v, want envoy.lb alone", c.name, md)
					}
					continue
				}
				role := c.want.role + c.want.roleHeader
				got := req.GetStructValue().GetFields()
				key, hasKey := got[contract.RequestKeyKey]
				if got[contract.RequestKeyPartition].GetStringValue() != c.want.partition || got[contract.RequestKeyRole].GetStringValue() != role ||
					hasKey != (c.want.key != "") || key.GetStringValue() != c.want.key {
					t.Errorf("%s: %s %v, want partition %s role %s key %q", c.name, contract.RequestNamespace, got, c.want.partition, role, c.want.key)
				}
			}
			// Whatever the shape, a request that passes through loses the client's headers.
			resp := f.decide(t, requestHeaders("GET", "x.example.org", "/elsewhere", spoofed...))
			if got := resp.GetRequestHeaders().GetResponse().GetHeaderMutation().GetRemoveHeaders(); len(got) != 3 {
				t.Errorf("passed through with removals %v, want the three partroute headers", got)
			}
		})
	}
}
