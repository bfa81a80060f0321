package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	clusterservice "github.com/envoyproxy/go-control-plane/envoy/service/cluster/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	endpointservice "github.com/envoyproxy/go-control-plane/envoy/service/endpoint/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/resolver"
)

// snapshotKey is the one snapshot every Envoy gets: partroute's view does not depend on which
// Envoy asks.
const snapshotKey = "partroute"

type everyNode struct{}

func (everyNode) ID(*corev3.Node) string { return snapshotKey }

// Versions are the content versions of a snapshot, one per resource type: a change of
// endpoints alone leaves the cluster version, and so Envoy's clusters, untouched.
type Versions struct {
	Clusters, Endpoints string
}

// Server is partroute's ADS server.
type Server struct {
	cache   cachev3.SnapshotCache
	srv     serverv3.Server
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	current Versions
	// streams maps an open ADS stream to its Envoy's node id, learnt from its first request.
	streams map[int64]string
	// acked holds, per node id, the versions that node last acknowledged.
	acked map[string]Versions
	// changed is closed and replaced whenever current or acked moves, waking waiters.
	changed chan struct{}
}

// New returns an ADS server with an empty snapshot. reg may be nil.
func New(ctx context.Context, log *slog.Logger, reg prometheus.Registerer) *Server {
	s := &Server{
		log:     log,
		metrics: newMetrics(reg),
		streams: map[int64]string{},
		acked:   map[string]Versions{},
		changed: make(chan struct{}),
	}
	s.cache = cachev3.NewSnapshotCache(true, everyNode{}, nil)
	s.srv = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:   s.onOpen,
		StreamClosedFunc: s.onClosed,
		StreamRequestFunc: func(id int64, req *discoverygrpc.DiscoveryRequest) error {
			s.onRequest(id, req)
			return nil
		},
	})
	return s
}

// Register adds the ADS, CDS and EDS services to gs.
func (s *Server) Register(gs *grpc.Server) {
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, s.srv)
	clusterservice.RegisterClusterDiscoveryServiceServer(gs, s.srv)
	endpointservice.RegisterEndpointDiscoveryServiceServer(gs, s.srv)
}

// Update builds the snapshot of cfg and view and serves it. Versions are content hashes, so
// an update with the same content changes nothing and sends Envoy nothing.
func (s *Server) Update(cfg *config.Config, view *resolver.View, opts envoyconfig.Options) (Versions, error) {
	var clusters, endpoints []types.Resource
	for _, svc := range cfg.Services {
		sv := view.Services[svc.Name]
		if sv == nil {
			return Versions{}, fmt.Errorf("naming view %s has no service %s", view.Version, svc.Name)
		}
		c, err := envoyconfig.ServiceCluster(svc, opts, true)
		if err != nil {
			return Versions{}, err
		}
		cla, err := envoyconfig.LoadAssignment(svc, sv)
		if err != nil {
			return Versions{}, err
		}
		clusters = append(clusters, c)
		endpoints = append(endpoints, cla)
	}
	v := Versions{Clusters: contentVersion(clusters), Endpoints: contentVersion(endpoints)}
	snap := &cachev3.Snapshot{}
	snap.Resources[types.Cluster] = cachev3.NewResources(v.Clusters, clusters)
	snap.Resources[types.Endpoint] = cachev3.NewResources(v.Endpoints, endpoints)
	if err := snap.Consistent(); err != nil {
		return Versions{}, fmt.Errorf("xds snapshot: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if v == s.current {
		return v, nil
	}
	if err := s.cache.SetSnapshot(context.Background(), snapshotKey, snap); err != nil {
		return Versions{}, fmt.Errorf("xds snapshot: %w", err)
	}
	s.current = v
	s.metrics.snapshots.Inc()
	s.log.Info("xds snapshot", "clusters", v.Clusters, "endpoints", v.Endpoints, "naming_version", view.Version)
	s.notifyLocked()
	return v, nil
}

// contentVersion hashes resources in name order with deterministic marshalling.
func contentVersion(rs []types.Resource) string {
	sorted := append([]types.Resource(nil), rs...)
	sort.Slice(sorted, func(i, j int) bool { return cachev3.GetResourceName(sorted[i]) < cachev3.GetResourceName(sorted[j]) })
	h := sha256.New()
	opts := proto.MarshalOptions{Deterministic: true}
	for _, r := range sorted {
		b, err := opts.Marshal(r)
		if err != nil {
			// A resource that cannot be marshalled cannot be served either; Update's
			// consistency check reports it. The version still differs from any real one.
			b = []byte(err.Error())
		}
		h.Write([]byte(cachev3.GetResourceName(r)))
		h.Write(b)
	}
	return hex.EncodeToString(h.Sum(nil)[:8])
}

// Current returns the versions being served.
func (s *Server) Current() Versions {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// Acked returns, per connected Envoy node id, the versions it last acknowledged.
func (s *Server) Acked() map[string]Versions {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]Versions, len(s.acked))
	for k, v := range s.acked {
		out[k] = v
	}
	return out
}

// WaitAcked waits until every connected Envoy has acknowledged v, or ctx ends. With no Envoy
// connected it waits for one.
func (s *Server) WaitAcked(ctx context.Context, v Versions) error {
	for {
		s.mu.Lock()
		ch := s.changed
		done := s.allAckedLocked(v)
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for Envoy to acknowledge %+v (acknowledged: %v): %w", v, s.Acked(), ctx.Err())
		}
	}
}

func (s *Server) allAckedLocked(v Versions) bool {
	nodes := map[string]bool{}
	for _, n := range s.streams {
		nodes[n] = true
	}
	if len(nodes) == 0 {
		return false
	}
	for n := range nodes {
		if s.acked[n] != v {
			return false
		}
	}
	return true
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) onOpen(_ context.Context, id int64, typeURL string) error {
	s.metrics.streams.Inc()
	s.log.Debug("xds stream opened", "stream", id, "type", typeURL)
	return nil
}

func (s *Server) onClosed(id int64, _ *corev3.Node) {
	s.metrics.streams.Dec()
	s.mu.Lock()
	defer s.mu.Unlock()
	node := s.streams[id]
	delete(s.streams, id)
	still := false
	for _, n := range s.streams {
		still = still || n == node
	}
	if !still {
		delete(s.acked, node)
	}
	s.notifyLocked()
}

// onRequest follows acknowledgements. In state-of-the-world xDS, Envoy acknowledges a
// response by sending its nonce back with the response's version and no error detail, and
// rejects it by sending the nonce with the previous version and an error detail.
func (s *Server) onRequest(id int64, req *discoverygrpc.DiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	node, known := s.streams[id]
	if !known || node == "" {
		node = req.GetNode().GetId()
		s.streams[id] = node
		s.notifyLocked()
	}
	if req.GetResponseNonce() == "" {
		return
	}
	if req.GetErrorDetail() != nil {
		s.metrics.nacks.Inc()
		s.log.Error("Envoy rejected an xds update", "node", node, "type", req.GetTypeUrl(), "error", req.GetErrorDetail().GetMessage())
		return
	}
	v := s.acked[node]
	switch req.GetTypeUrl() {
	case resource.ClusterType:
		v.Clusters = req.GetVersionInfo()
	case resource.EndpointType:
		v.Endpoints = req.GetVersionInfo()
	default:
		return
	}
	s.acked[node] = v
	s.notifyLocked()
}

type metrics struct {
	snapshots prometheus.Counter
	streams   prometheus.Gauge
	nacks     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_xds_snapshots_total",
			Help: "xDS snapshots served: one per naming view whose clusters or endpoints changed.",
		}),
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "partroute_xds_streams",
			Help: "Open xDS streams from Envoy.",
		}),
		nacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_xds_rejections_total",
			Help: "xDS updates Envoy rejected (NACKs); each is logged with Envoy's reason.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.snapshots, m.streams, m.nacks)
	}
	return m
}
