package xds

import (
	"context"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/resolver"
)

const testConfig = `naming: {file: naming.yaml}
services:
  - name: orders
    match: {pathPrefix: /orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{header: x-order}]}
    upstream: {protocol: http2}
`

func load(t *testing.T, primary string) (*config.Config, *resolver.View) {
	t.Helper()
	cfg, err := config.Parse([]byte(testConfig), "/p/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	other := "10.0.0.2:80"
	if primary == other {
		other = "10.0.0.1:80"
	}
	naming := "services:\n  orders:\n    partitions:\n" +
		"      - {lowKey: 0, highKey: 4, replicas: [{address: " + primary + ", role: primary}, {address: " + other + ", role: secondary, healthy: false}]}\n" +
		"      - {lowKey: 5, highKey: 9, replicas: [{address: 10.0.0.3:80, role: primary}]}\n"
	view, err := resolver.ParseView([]byte(naming), "/p/naming.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, view
}

func newServer() (*Server, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return New(context.Background(), slog.New(slog.DiscardHandler), reg, Options{}), reg
}

func TestUpdateVersionsFollowContent(t *testing.T) {
	s, reg := newServer()
	cfg, view := load(t, "10.0.0.1:80")
	v1, err := s.Update(cfg, view, envoyconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(v1.Clusters) != 16 || len(v1.Endpoints) != 16 || s.Current() != v1 {
		t.Fatalf("versions %+v, current %+v", v1, s.Current())
	}
	// The same content, even from a view loaded again, is the same snapshot.
	cfg2, view2 := load(t, "10.0.0.1:80")
	if v, err := s.Update(cfg2, view2, envoyconfig.Options{}); err != nil || v != v1 {
		t.Fatalf("same content gave %+v (%v), want %+v", v, err, v1)
	}
	if got := testutil.ToFloat64(s.metrics.snapshots); got != 1 {
		t.Errorf("snapshots_total = %v after two updates with one content, want 1", got)
	}
	// A failover changes the endpoints only: Envoy's clusters stay untouched.
	cfg3, view3 := load(t, "10.0.0.2:80")
	v2, err := s.Update(cfg3, view3, envoyconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if v2.Clusters != v1.Clusters || v2.Endpoints == v1.Endpoints {
		t.Errorf("failover versions %+v after %+v: want the same clusters and new endpoints", v2, v1)
	}

	snap, err := s.cache.GetSnapshot(snapshotKey)
	if err != nil {
		t.Fatal(err)
	}
	clusters := snap.GetResources(resource.ClusterType)
	endpoints := snap.GetResources(resource.EndpointType)
	if len(clusters) != 1 || len(endpoints) != 1 {
		t.Fatalf("snapshot has %d clusters and %d load assignments, want 1 and 1", len(clusters), len(endpoints))
	}
	if snap.GetVersion(resource.EndpointType) != v2.Endpoints {
		t.Errorf("served endpoint version %s, want %s", snap.GetVersion(resource.EndpointType), v2.Endpoints)
	}
	if n := testutil.CollectAndCount(reg, "partroute_xds_snapshots_total"); n != 1 {
		t.Errorf("partroute_xds_snapshots_total has %d series", n)
	}
}

func TestUpdateRefusesAViewWithoutAService(t *testing.T) {
	s, _ := newServer()
	cfg, _ := load(t, "10.0.0.1:80")
	if _, err := s.Update(cfg, &resolver.View{Version: "x", Services: map[string]*resolver.ServiceView{}}, envoyconfig.Options{}); err == nil || !strings.Contains(err.Error(), "no service orders") {
		t.Errorf("error %v, want one naming the missing service", err)
	}
	if s.Current() != (Versions{}) {
		t.Errorf("a refused view was served: %+v", s.Current())
	}
}

// request is what Envoy sends on an ADS stream: its first request names its node; later ones
// acknowledge a response with its nonce and version, or reject it with an error detail.
func request(node, typeURL, version, nonce string, rejected bool) *discoverygrpc.DiscoveryRequest {
	r := &discoverygrpc.DiscoveryRequest{TypeUrl: typeURL, VersionInfo: version, ResponseNonce: nonce}
	if node != "" {
		r.Node = &corev3.Node{Id: node}
	}
	if rejected {
		r.ErrorDetail = &status.Status{Message: "bad cluster"}
	}
	return r
}

// respond records a response sent on stream id, as go-control-plane reports it before sending.
func respond(s *Server, id int64, typeURL, version, nonce string) {
	s.onResponse(id, &discoverygrpc.DiscoveryResponse{TypeUrl: typeURL, VersionInfo: version, Nonce: nonce})
}

func TestAcknowledgements(t *testing.T) {
	s, _ := newServer()
	cfg, view := load(t, "10.0.0.1:80")
	v, err := s.Update(cfg, view, envoyconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := s.WaitAcked(ctx, v); err == nil {
		t.Error("WaitAcked returned with no Envoy connected")
	}
	cancel()

	if err := s.onOpen(context.Background(), 1, ""); err != nil {
		t.Fatal(err)
	}
	s.onRequest(1, request("envoy-a", resource.ClusterType, "", "", false))
	respond(s, 1, resource.ClusterType, v.Clusters, "n1")
	s.onRequest(1, request("", resource.ClusterType, v.Clusters, "n1", false))
	// A rejection leaves the acknowledged version where it was and is counted.
	respond(s, 1, resource.EndpointType, v.Endpoints, "n2")
	s.onRequest(1, request("", resource.EndpointType, "", "n2", true))
	if got := testutil.ToFloat64(s.metrics.nacks); got != 1 {
		t.Errorf("rejections = %v, want 1", got)
	}
	if got := s.Acked()["envoy-a"]; got != (Versions{Clusters: v.Clusters}) {
		t.Errorf("acknowledged %+v, want the clusters only", got)
	}

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		done <- s.WaitAcked(ctx, v)
	}()
	respond(s, 1, resource.EndpointType, v.Endpoints, "n3")
	s.onRequest(1, request("", resource.EndpointType, v.Endpoints, "n3", false))
	if err := <-done; err != nil {
		t.Fatalf("WaitAcked after both acknowledgements: %v", err)
	}

	// A second Envoy that has acknowledged nothing holds WaitAcked back until it leaves.
	_ = s.onOpen(context.Background(), 2, "")
	s.onRequest(2, request("envoy-b", resource.ClusterType, "", "", false))
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := s.WaitAcked(ctx, v); err == nil {
		t.Error("WaitAcked returned while envoy-b has acknowledged nothing")
	}
	cancel()
	s.onClosed(2, nil)
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitAcked(ctx, v); err != nil {
		t.Errorf("WaitAcked after envoy-b left: %v", err)
	}
	if _, ok := s.Acked()["envoy-b"]; ok {
		t.Error("a node with no stream left is still listed")
	}
	if got := testutil.ToFloat64(s.metrics.streams); got != 1 {
		t.Errorf("streams gauge = %v, want 1", got)
	}
}

// WaitDelivered returns at once with no Envoy connected, and otherwise waits like WaitAcked.
func TestWaitDelivered(t *testing.T) {
	s, _ := newServer()
	cfg, view := load(t, "10.0.0.1:80")
	v, err := s.Update(cfg, view, envoyconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.WaitDelivered(ctx, v); err != nil {
		t.Errorf("WaitDelivered with no Envoy connected: %v, want nil at once", err)
	}
	_ = s.onOpen(context.Background(), 1, "")
	s.onRequest(1, request("envoy-a", resource.ClusterType, "", "", false))
	short, stop := context.WithTimeout(context.Background(), 50*time.Millisecond)
	if err := s.WaitDelivered(short, v); err == nil {
		t.Error("WaitDelivered returned while the Envoy connected has acknowledged nothing")
	}
	stop()
	done := make(chan error, 1)
	go func() { done <- s.WaitDelivered(ctx, v) }()
	respond(s, 1, resource.ClusterType, v.Clusters, "n1")
	s.onRequest(1, request("", resource.ClusterType, v.Clusters, "n1", false))
	respond(s, 1, resource.EndpointType, v.Endpoints, "n2")
	s.onRequest(1, request("", resource.EndpointType, v.Endpoints, "n2", false))
	if err := <-done; err != nil {
		t.Fatalf("WaitDelivered after the acknowledgements: %v", err)
	}
	// An Envoy that leaves before acknowledging releases the wait.
	cfg2, view2 := load(t, "10.0.0.2:80")
	v2, err := s.Update(cfg2, view2, envoyconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	go func() { done <- s.WaitDelivered(ctx, v2) }()
	s.onClosed(1, nil)
	if err := <-done; err != nil {
		t.Fatalf("WaitDelivered after the only Envoy left: %v", err)
	}
}

// An acknowledgement counts only on the stream its response was sent on, for the type and
// version sent: anything else is ignored and counted by reason, and the node's acknowledged
// versions stay as they were.
func TestForgedAcknowledgementsAreIgnored(t *testing.T) {
	s, reg := newServer()
	s.onRequest(1, request("envoy-a", resource.ClusterType, "", "", false))
	respond(s, 1, resource.ClusterType, "c1", "1")
	s.onRequest(1, request("", resource.ClusterType, "c1", "1", false))
	respond(s, 1, resource.EndpointType, "e1", "2")
	s.onRequest(1, request("", resource.EndpointType, "e1", "2", false))
	want := Versions{Clusters: "c1", Endpoints: "e1"}
	// A second stream claims envoy-a's node id; it has been sent one response of its own.
	s.onRequest(2, request("envoy-a", resource.ClusterType, "", "", false))
	respond(s, 2, resource.ClusterType, "c1", "1")
	for _, c := range []struct {
		name   string
		id     int64
		req    *discoverygrpc.DiscoveryRequest
		reason string
	}{
		{"a nonce never sent", 2, request("", resource.ClusterType, "forged-version", "forged-nonce", false), ignoredUnknownNonce},
		{"a nonce sent on another stream", 2, request("", resource.EndpointType, "forged-version", "2", false), ignoredUnknownNonce},
		{"a nonce sent for another type", 2, request("", resource.EndpointType, "forged-version", "1", false), ignoredWrongType},
		{"a version other than the one sent", 2, request("", resource.ClusterType, "forged-version", "1", false), ignoredWrongVersion},
		{"a rejection of a nonce never sent", 2, request("", resource.ClusterType, "", "forged-nonce", true), ignoredUnknownNonce},
		{"the first request carrying a nonce", 3, request("envoy-a", resource.ClusterType, "forged-version", "1", false), ignoredUnknownNonce},
	} {
		before := testutil.ToFloat64(s.metrics.ignored.WithLabelValues(c.reason))
		s.onRequest(c.id, c.req)
		if got := testutil.ToFloat64(s.metrics.ignored.WithLabelValues(c.reason)); got != before+1 {
			t.Errorf("%s: ignored_acks_total{reason=%q} = %v, want %v", c.name, c.reason, got, before+1)
		}
		if got := s.Acked()["envoy-a"]; got != want {
			t.Errorf("%s: envoy-a acknowledged %+v, want %+v", c.name, got, want)
		}
	}
	if got := testutil.ToFloat64(s.metrics.nacks); got != 0 {
		t.Errorf("a forged rejection was counted as Envoy's: rejections = %v", got)
	}
	if n := testutil.CollectAndCount(reg, "partroute_xds_ignored_acks_total"); n != 3 {
		t.Errorf("partroute_xds_ignored_acks_total has %d series, want one per reason", n)
	}
}

// The responses a stream remembers are bounded: an old one drops out, and its nonce is then
// unknown.
func TestSentResponsesAreBounded(t *testing.T) {
	s, _ := newServer()
	s.onRequest(1, request("envoy-a", resource.EndpointType, "", "", false))
	for i := range 3 * sentWindow {
		respond(s, 1, resource.EndpointType, "e"+strconv.Itoa(i), strconv.Itoa(i))
	}
	if n := len(s.streams[1].sent); n != sentWindow {
		t.Fatalf("%d responses remembered, want %d", n, sentWindow)
	}
	s.onRequest(1, request("", resource.EndpointType, "e0", "0", false))
	if got := testutil.ToFloat64(s.metrics.ignored.WithLabelValues(ignoredUnknownNonce)); got != 1 {
		t.Errorf("an acknowledgement of a response long gone: ignored = %v, want 1", got)
	}
	last := strconv.Itoa(3*sentWindow - 1)
	s.onRequest(1, request("", resource.EndpointType, "e"+last, last, false))
	if got := s.Acked()["envoy-a"].Endpoints; got != "e"+last {
		t.Errorf("acknowledged endpoints %q, want e%s", got, last)
	}
}

// Over a real ADS stream: a second stream that uses another Envoy's node id and sends an
// acknowledgement with a nonce it was never sent changes nothing partroute reports.
func TestForgedAcknowledgementOverADS(t *testing.T) {
	s, _ := newServer()
	cfg, view := load(t, "10.0.0.1:80")
	v, err := s.Update(cfg, view, envoyconfig.Options{})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	s.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn)

	// envoy-a subscribes to clusters and acknowledges what it is sent, as Envoy does.
	envoy, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := envoy.Send(request("envoy-a", resource.ClusterType, "", "", false)); err != nil {
		t.Fatal(err)
	}
	resp, err := envoy.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := envoy.Send(request("", resource.ClusterType, resp.GetVersionInfo(), resp.GetNonce(), false)); err != nil {
		t.Fatal(err)
	}
	if err := s.WaitAcked(ctx, Versions{Clusters: v.Clusters}); err != nil {
		t.Fatal(err)
	}

	// The forger claims envoy-a's node id, and acknowledges a version with a nonce of its own
	// making, then with the nonce envoy-a was sent. Nonces count per stream, so the forger may
	// have been sent that one too by then, with the real version: the forged version is then
	// ignored as such.
	forger, err := client.StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, nonce := range []string{"forged-nonce", resp.GetNonce()} {
		if err := forger.Send(request("envoy-a", resource.ClusterType, "forged-version", nonce, false)); err != nil {
			t.Fatal(err)
		}
	}
	ignored := func() float64 {
		return testutil.ToFloat64(s.metrics.ignored.WithLabelValues(ignoredUnknownNonce)) +
			testutil.ToFloat64(s.metrics.ignored.WithLabelValues(ignoredWrongVersion))
	}
	for ignored() < 2 {
		select {
		case <-ctx.Done():
			t.Fatalf("the forged acknowledgements were not counted: %v ignored", ignored())
		case <-time.After(10 * time.Millisecond):
		}
	}
	if got := testutil.ToFloat64(s.metrics.ignored.WithLabelValues(ignoredUnknownNonce)); got < 1 {
		t.Errorf("ignored{reason=unknown_nonce} = %v, want at least the nonce of the forger's making", got)
	}
	if got := s.Acked()["envoy-a"]; got != (Versions{Clusters: v.Clusters}) {
		t.Errorf("envoy-a is reported as running %+v, want %+v", got, Versions{Clusters: v.Clusters})
	}
}

// 200 rejections with 4 KiB reasons log one line a second, each with the reason cut short,
// and the next line counts those held back; every rejection is counted.
func TestRejectionsAreRateLimitedAndCut(t *testing.T) {
	var logs strings.Builder
	s := New(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)), nil, Options{})
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	s.onRequest(1, request("envoy-a", resource.ClusterType, "", "", false))
	respond(s, 1, resource.ClusterType, "c1", "1")
	reason := strings.Repeat("r", 4096)
	nack := request("", resource.ClusterType, "", "1", true)
	nack.ErrorDetail.Message = reason
	for range 200 {
		s.onRequest(1, nack)
	}
	now = now.Add(time.Second)
	s.onRequest(1, nack)
	if got := testutil.ToFloat64(s.metrics.nacks); got != 201 {
		t.Errorf("rejections = %v, want 201", got)
	}
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("201 rejections logged %d lines, want 2", len(lines))
	}
	for _, l := range lines {
		if len(l) > 1024 || !strings.Contains(l, "[cut; 4096 bytes in all]") {
			t.Errorf("a line of %d bytes, want the reason cut to a few hundred with a marker:\n%.400s", len(l), l)
		}
	}
	if !strings.Contains(lines[1], "suppressed_since_last=199") {
		t.Errorf("second line %.400s: want 199 held back", lines[1])
	}
}

// Forged acknowledgements by the hundred log one warning a second, with the count held back.
func TestIgnoredAcknowledgementsAreRateLimited(t *testing.T) {
	var logs strings.Builder
	s := New(context.Background(), slog.New(slog.NewTextHandler(&logs, nil)), nil, Options{})
	now := time.Unix(1000, 0)
	s.now = func() time.Time { return now }
	forged := request(strings.Repeat("n", 4096), resource.ClusterType, "forged-version", "forged-nonce", false)
	for range 500 {
		s.onRequest(1, forged)
	}
	now = now.Add(time.Second)
	s.onRequest(1, forged)
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "suppressed_since_last=499") || len(lines[1]) > 1024 {
		t.Errorf("501 forged acknowledgements logged %d lines, want 2, the second short with 499 held back:\n%.1000s", len(lines), logs.String())
	}
}
