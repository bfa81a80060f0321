package xds

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/url"
	"reflect"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit/certs"
)

func TestIdentitiesOf(t *testing.T) {
	spiffe, _ := url.Parse("spiffe://example.org/envoy/edge-1")
	c := &x509.Certificate{URIs: []*url.URL{spiffe}, DNSNames: []string{"edge-1.envoy.internal", "edge-1"}}
	c.Subject.CommonName = "edge"
	want := []string{"spiffe://example.org/envoy/edge-1", "edge-1.envoy.internal", "edge-1", "edge"}
	if got := identitiesOf(c); !reflect.DeepEqual(got, want) {
		t.Errorf("identities %q, want %q", got, want)
	}
	for _, tc := range []struct {
		node string
		want bool
	}{{"edge-1", true}, {"spiffe://example.org/envoy/edge-1", true}, {"edge", true}, {"edge-2", false}, {"", false}, {"EDGE", false}} {
		if got := boundTo(tc.node, want); got != tc.want {
			t.Errorf("boundTo(%q) = %v, want %v", tc.node, got, tc.want)
		}
	}
	if ids := certificateIdentities(context.Background()); ids != nil {
		t.Errorf("a context with no peer proves %q", ids)
	}
}

// mtlsADS serves s over mutual TLS on a free loopback port and returns a function that dials
// it with a client certificate named name.
func mtlsADS(t *testing.T, s *Server) func(name string) *grpc.ClientConn {
	t.Helper()
	ca := certs.NewCA(t, "xds test CA")
	serverCert := ca.Server(t, "localhost", "127.0.0.1").TLS(t)
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
		Certificates: []tls.Certificate{serverCert}, ClientCAs: ca.Pool(), ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
	})))
	s.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- gs.Serve(lis) }()
	t.Cleanup(func() {
		gs.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return func(name string) *grpc.ClientConn {
		creds := credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{ca.Client(t, name).TLS(t)}, RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12,
		})
		conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn
	}
}

// subscribe opens an ADS stream as node over conn, asks for clusters and returns the first
// answer: the response, or the error that ended the stream.
func subscribe(ctx context.Context, conn *grpc.ClientConn, node string) (*discoverygrpc.DiscoveryResponse, error) {
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	if err := st.Send(request(node, resource.ClusterType, "", "", false)); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return st.Recv()
}

func subscribeDelta(ctx context.Context, conn *grpc.ClientConn, node string) (*discoverygrpc.DeltaDiscoveryResponse, error) {
	st, err := discoverygrpc.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return nil, err
	}
	req := &discoverygrpc.DeltaDiscoveryRequest{Node: &corev3.Node{Id: node}, TypeUrl: resource.ClusterType}
	if err := st.Send(req); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return st.Recv()
}

// With BindNodeID, a stream (state of the world or delta) or a fetch may name only a node id
// its client certificate proves; one that claims another Envoy's is refused with
// PermissionDenied, is counted, and never becomes a stream of that node. Without it, the same
// claim is served, which is what the binding closes.
func TestNodeIDBoundToCertificate(t *testing.T) {
	for _, bind := range []bool{true, false} {
		t.Run(map[bool]string{true: "bound", false: "unbound"}[bind], func(t *testing.T) {
			reg := prometheus.NewRegistry()
			s := New(context.Background(), slog.New(slog.DiscardHandler), reg, Options{BindNodeID: bind})
			cfg, view := load(t, "10.0.0.1:80")
			if _, err := s.Update(cfg, view, envoyconfig.Options{}); err != nil {
				t.Fatal(err)
			}
			dial := mtlsADS(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			envoyA, envoyB := dial("envoy-a"), dial("envoy-b")

			if resp, err := subscribe(ctx, envoyA, "envoy-a"); err != nil || len(resp.GetResources()) == 0 {
				t.Fatalf("envoy-a as envoy-a: %v, %v; want the clusters", resp, err)
			}
			refusals := []struct {
				name string
				call func() error
			}{
				{"an ADS stream", func() error { _, err := subscribe(ctx, envoyB, "envoy-a"); return err }},
				{"a delta ADS stream", func() error { _, err := subscribeDelta(ctx, envoyB, "envoy-a"); return err }},
				{"a fetch", func() error {
					_, err := clusterservice.NewClusterDiscoveryServiceClient(envoyB).FetchClusters(ctx,
						request("envoy-a", resource.ClusterType, "", "", false))
					return err
				}},
				{"an ADS stream with no node id", func() error { _, err := subscribe(ctx, envoyB, ""); return err }},
			}
			for i, r := range refusals {
				err := r.call()
				if !bind {
					if r.name == "an ADS stream with no node id" {
						continue
					}
					if err != nil {
						t.Errorf("%s from envoy-b claiming envoy-a, unbound: %v, want it served", r.name, err)
					}
					continue
				}
				if status.Code(err) != codes.PermissionDenied {
					t.Errorf("%s from envoy-b claiming envoy-a: %v, want PermissionDenied", r.name, err)
				}
				if got := testutil.ToFloat64(s.metrics.refused); got != float64(i+1) {
					t.Errorf("after %s: partroute_xds_unbound_node_refusals_total = %v, want %d", r.name, got, i+1)
				}
			}
			if bind {
				if err := refusals[0].call(); status.Convert(err).Message() == "" ||
					!contains(status.Convert(err).Message(), `node id "envoy-a" is not an identity of the client certificate`, "envoy-b") {
					t.Errorf("refusal message %q: want the node id and the certificate's identities", status.Convert(err).Message())
				}
				// envoy-b may still speak for itself.
				if _, err := subscribe(ctx, envoyB, "envoy-b"); err != nil {
					t.Errorf("envoy-b as envoy-b: %v", err)
				}
			}
			if n := testutil.CollectAndCount(reg, "partroute_xds_unbound_node_refusals_total"); n != 1 {
				t.Errorf("partroute_xds_unbound_node_refusals_total has %d series, want 1", n)
			}
		})
	}
}

func contains(s string, parts ...string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
