package xds

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/genproto/googleapis/rpc/status"

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
	return New(context.Background(), slog.New(slog.DiscardHandler), reg), reg
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
	s.onRequest(1, request("", resource.ClusterType, v.Clusters, "n1", false))
	// A rejection leaves the acknowledged version where it was and is counted.
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
