package xds

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/loglimit"
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

// Options are what a Server enforces on its streams.
type Options struct {
	// BindNodeID refuses a stream, or a fetch, whose node id is not an identity of the client
	// certificate of its connection (its URI SANs, DNS SANs or subject common name), with
	// PermissionDenied. It needs a listener that verifies client certificates
	// (config.ServerTLS.BindNodeID).
	BindNodeID bool
}

// Server is partroute's ADS server.
type Server struct {
	opts    Options
	cache   cachev3.SnapshotCache
	srv     serverv3.Server
	log     *slog.Logger
	metrics *metrics

	// nacks and ignored limit the log lines about rejections and ignored acknowledgements:
	// a client can send either at will. now is their clock.
	nacks, ignored, unbound loglimit.Limiter
	now                     func() time.Time

	mu      sync.Mutex
	current Versions
	// streams holds every open state-of-the-world xDS stream that has sent a request.
	streams map[int64]*stream
	// identities holds, with BindNodeID, the certificate identities of each open stream
	// until its first request has been checked against them; delta streams, whose ids are
	// counted apart by go-control-plane, are in deltaIdentities.
	identities, deltaIdentities map[int64][]string
	// acks counts accepted acknowledgements, to tell which of a node's streams acknowledged
	// last.
	acks uint64
	// changed is closed and replaced whenever current or an acknowledgement moves, waking
	// waiters.
	changed chan struct{}
}

// stream is what partroute knows of one xDS stream: the node id its first request named, the
// responses it was sent, and what it acknowledged of them.
type stream struct {
	node string
	// sent holds the last sentWindow responses sent on the stream, oldest first.
	sent []sentResponse
	// acked holds the versions of the responses the stream acknowledged; clustersAt and
	// endpointsAt are the acknowledgement count at the last of each type (0: none yet).
	acked                   Versions
	clustersAt, endpointsAt uint64
}

// sentResponse is one response sent on a stream, as its acknowledgement must echo it.
type sentResponse struct {
	nonce, typeURL, version string
}

// sentWindow is how many responses of a stream are remembered. Envoy acknowledges each
// response before the next of its type is useful, and go-control-plane itself ignores a
// request that does not carry the nonce last sent for its type; the window only has to hold
// the responses in flight, one per type, with room to spare.
const sentWindow = 8

// The reasons an acknowledgement (or rejection) is ignored, the values of the reason label of
// partroute_xds_ignored_acks_total.
const (
	// ignoredUnknownNonce: the stream was never sent that nonce (or not lately).
	ignoredUnknownNonce = "unknown_nonce"
	// ignoredWrongType: the nonce was sent on the stream for another resource type.
	ignoredWrongType = "wrong_type"
	// ignoredWrongVersion: the version acknowledged is not the one sent with the nonce.
	ignoredWrongVersion = "wrong_version"
)

// New returns an ADS server with an empty snapshot. reg may be nil.
func New(ctx context.Context, log *slog.Logger, reg prometheus.Registerer, opts Options) *Server {
	s := &Server{
		opts:            opts,
		identities:      map[int64][]string{},
		deltaIdentities: map[int64][]string{},
		log:             log,
		metrics:         newMetrics(reg),
		now:             time.Now,
		streams:         map[int64]*stream{},
		changed:         make(chan struct{}),
	}
	s.cache = cachev3.NewSnapshotCache(true, everyNode{}, nil)
	s.srv = serverv3.NewServer(ctx, s.cache, serverv3.CallbackFuncs{
		StreamOpenFunc:   s.onOpen,
		StreamClosedFunc: s.onClosed,
		StreamRequestFunc: func(id int64, req *discoverygrpc.DiscoveryRequest) error {
			if err := s.checkNode(s.identities, id, req.GetNode()); err != nil {
				return err
			}
			s.onRequest(id, req)
			return nil
		},
		DeltaStreamOpenFunc: func(ctx context.Context, id int64, _ string) error {
			s.opened(ctx, s.deltaIdentities, id)
			return nil
		},
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { s.closed(s.deltaIdentities, id) },
		StreamDeltaRequestFunc: func(id int64, req *discoverygrpc.DeltaDiscoveryRequest) error {
			return s.checkNode(s.deltaIdentities, id, req.GetNode())
		},
		FetchRequestFunc: func(ctx context.Context, req *discoverygrpc.DiscoveryRequest) error {
			if !s.opts.BindNodeID {
				return nil
			}
			return s.refuseUnbound(req.GetNode().GetId(), certificateIdentities(ctx))
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoverygrpc.DiscoveryRequest, resp *discoverygrpc.DiscoveryResponse) {
			s.onResponse(id, resp)
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

// Acked returns, per connected Envoy node id, the versions it last acknowledged on any of its
// open streams (Envoy may use one stream per type, or a new stream before the old one is
// closed). A node that has acknowledged nothing is left out.
func (s *Server) Acked() map[string]Versions {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ackedLocked()
}

func (s *Server) ackedLocked() map[string]Versions {
	type latest struct {
		v                       Versions
		clustersAt, endpointsAt uint64
	}
	nodes := map[string]*latest{}
	for _, st := range s.streams {
		if st.clustersAt == 0 && st.endpointsAt == 0 {
			continue
		}
		n := nodes[st.node]
		if n == nil {
			n = &latest{}
			nodes[st.node] = n
		}
		if st.clustersAt > n.clustersAt {
			n.v.Clusters, n.clustersAt = st.acked.Clusters, st.clustersAt
		}
		if st.endpointsAt > n.endpointsAt {
			n.v.Endpoints, n.endpointsAt = st.acked.Endpoints, st.endpointsAt
		}
	}
	out := make(map[string]Versions, len(nodes))
	for node, n := range nodes {
		out[node] = n.v
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

// WaitDelivered waits until every Envoy connected now has acknowledged v, or ctx ends; with no
// Envoy connected it returns at once. It is what held requests wait for before they are
// released to a new view: an Envoy connected acknowledges the endpoints it will route to,
// and one that is not (it holds its stream to another partroute instance, or takes its
// endpoints from a file) cannot be waited for.
func (s *Server) WaitDelivered(ctx context.Context, v Versions) error {
	for {
		s.mu.Lock()
		ch := s.changed
		done := len(s.streams) == 0 || s.allAckedLocked(v)
		s.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for Envoy to acknowledge %+v: %w", v, ctx.Err())
		}
	}
}

func (s *Server) allAckedLocked(v Versions) bool {
	if len(s.streams) == 0 {
		return false
	}
	acked := s.ackedLocked()
	for _, st := range s.streams {
		if acked[st.node] != v {
			return false
		}
	}
	return true
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) onOpen(ctx context.Context, id int64, typeURL string) error {
	s.opened(ctx, s.identities, id)
	s.log.Debug("xds stream opened", "stream", id, "type", typeURL)
	return nil
}

func (s *Server) onClosed(id int64, _ *corev3.Node) {
	s.closed(s.identities, id)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.streams, id)
	s.notifyLocked()
}

// opened counts a stream that opened and, with BindNodeID, remembers what its certificate
// proves until its first request is checked: go-control-plane gives the stream's context to
// the open callback alone.
func (s *Server) opened(ctx context.Context, ids map[int64][]string, id int64) {
	s.metrics.streams.Inc()
	if !s.opts.BindNodeID {
		return
	}
	certIDs := certificateIdentities(ctx)
	s.mu.Lock()
	ids[id] = certIDs
	s.mu.Unlock()
}

func (s *Server) closed(ids map[int64][]string, id int64) {
	s.metrics.streams.Dec()
	if !s.opts.BindNodeID {
		return
	}
	s.mu.Lock()
	delete(ids, id)
	s.mu.Unlock()
}

// checkNode refuses, with BindNodeID, a stream whose first request names a node id its
// certificate does not prove; the error ends the stream. Envoy names its node in the first
// request of a stream alone (set_node_on_first_message_only), so that request is the one
// checked, and every later one rides on it. A stream that was opened without a certificate
// identity (it cannot be, on a listener that requires client certificates) is refused too.
func (s *Server) checkNode(ids map[int64][]string, id int64, node *corev3.Node) error {
	if !s.opts.BindNodeID {
		return nil
	}
	s.mu.Lock()
	certIDs, unchecked := ids[id]
	if unchecked {
		// Checked once: a refused stream ends, an accepted one keeps its node id.
		delete(ids, id)
	}
	s.mu.Unlock()
	if !unchecked {
		return nil
	}
	return s.refuseUnbound(node.GetId(), certIDs)
}

// refuseUnbound returns PermissionDenied, counted and logged at most once per
// loglimit.Interval, unless node is one of certIDs.
func (s *Server) refuseUnbound(node string, certIDs []string) error {
	if boundTo(node, certIDs) {
		return nil
	}
	s.metrics.refused.Inc()
	if suppressed, ok := s.unbound.Allow(s.now()); ok {
		s.log.Warn("xds stream refused: its node id is not an identity of its client certificate",
			"node", loglimit.Text(node), "certificate_identities", loglimit.Text(strings.Join(certIDs, ",")),
			"suppressed_since_last", suppressed)
	}
	return status.Errorf(codes.PermissionDenied,
		"node id %q is not an identity of the client certificate (its URI SANs, DNS SANs and common name: %s)",
		loglimit.Text(node), loglimit.Text(strings.Join(certIDs, ", ")))
}

// streamLocked returns the state of stream id, made on its first message.
func (s *Server) streamLocked(id int64) *stream {
	st := s.streams[id]
	if st == nil {
		st = &stream{}
		s.streams[id] = st
	}
	return st
}

// onResponse remembers a response about to be sent on stream id, so that its
// acknowledgement can be told from a forged one. go-control-plane calls it before the
// response is sent, so it is remembered before Envoy can acknowledge it.
func (s *Server) onResponse(id int64, resp *discoverygrpc.DiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streamLocked(id)
	if len(st.sent) == sentWindow {
		st.sent = append(st.sent[:0], st.sent[1:]...)
	}
	st.sent = append(st.sent, sentResponse{nonce: resp.GetNonce(), typeURL: resp.GetTypeUrl(), version: resp.GetVersionInfo()})
}

// onRequest follows acknowledgements. In state-of-the-world xDS, Envoy acknowledges a
// response by sending its nonce back with the response's version and no error detail, and
// rejects it by sending the nonce with the previous version and an error detail. Only the
// stream a response was sent on can acknowledge or reject it: an acknowledgement whose nonce
// that stream was never sent, or whose version is not the one sent with it, is ignored and
// counted, so that no peer can make partroute believe an Envoy applied a version it did not.
func (s *Server) onRequest(id int64, req *discoverygrpc.DiscoveryRequest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.streamLocked(id)
	if st.node == "" && req.GetNode().GetId() != "" {
		st.node = req.GetNode().GetId()
		s.notifyLocked()
	}
	nonce := req.GetResponseNonce()
	if nonce == "" {
		return
	}
	var sent *sentResponse
	for i := range st.sent {
		if st.sent[i].nonce == nonce {
			sent = &st.sent[i]
		}
	}
	switch {
	case sent == nil:
		s.ignoreLocked(st, req, ignoredUnknownNonce)
		return
	case sent.typeURL != req.GetTypeUrl():
		s.ignoreLocked(st, req, ignoredWrongType)
		return
	}
	if req.GetErrorDetail() != nil {
		s.metrics.nacks.Inc()
		if suppressed, ok := s.nacks.Allow(s.now()); ok {
			s.log.Error("Envoy rejected an xds update", "node", loglimit.Text(st.node), "type", loglimit.Text(req.GetTypeUrl()),
				"version", sent.version, "error", loglimit.Text(req.GetErrorDetail().GetMessage()), "suppressed_since_last", suppressed)
		}
		return
	}
	if req.GetVersionInfo() != sent.version {
		s.ignoreLocked(st, req, ignoredWrongVersion)
		return
	}
	switch sent.typeURL {
	case resource.ClusterType:
		s.acks++
		st.acked.Clusters, st.clustersAt = sent.version, s.acks
	case resource.EndpointType:
		s.acks++
		st.acked.Endpoints, st.endpointsAt = sent.version, s.acks
	default:
		return
	}
	s.notifyLocked()
}

// ignoreLocked counts an acknowledgement or rejection that is ignored, and warns of it at most
// once per loglimit.Interval.
func (s *Server) ignoreLocked(st *stream, req *discoverygrpc.DiscoveryRequest, reason string) {
	s.metrics.ignored.WithLabelValues(reason).Inc()
	if suppressed, ok := s.ignored.Allow(s.now()); ok {
		s.log.Warn("xds acknowledgement ignored: not an answer to a response of its stream", "reason", reason,
			"node", loglimit.Text(st.node), "type", loglimit.Text(req.GetTypeUrl()), "nonce", loglimit.Text(req.GetResponseNonce()),
			"suppressed_since_last", suppressed)
	}
}

type metrics struct {
	snapshots prometheus.Counter
	streams   prometheus.Gauge
	nacks     prometheus.Counter
	ignored   *prometheus.CounterVec
	refused   prometheus.Counter
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
			Help: "xDS updates Envoy rejected (NACKs); they are logged with Envoy's reason, at most one a second.",
		}),
		ignored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_xds_ignored_acks_total",
			Help: "xDS acknowledgements and rejections ignored because they answer no response of their stream, by reason: unknown_nonce, wrong_type, wrong_version.",
		}, []string{"reason"}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_xds_unbound_node_refusals_total",
			Help: "xDS streams and fetches refused because their node id is not an identity of their client certificate (listen.tls.xds.nodeID: certificate).",
		}),
	}
	for _, r := range []string{ignoredUnknownNonce, ignoredWrongType, ignoredWrongVersion} {
		m.ignored.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.snapshots, m.streams, m.nacks, m.ignored, m.refused)
	}
	return m
}
