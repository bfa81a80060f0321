package envoyconfig

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/resolver"
)

// featureConfig exercises what the example does not: exact and wildcard authorities that
// share a path, a body-keyed service, a prefix ending in "/", a service matching every path,
// and a partition id that looks like a number.
const featureConfig = `
listen: {extproc: "0.0.0.0:50151"}
naming: {file: naming.yaml}
maxBodyBytes: 4096
readYourWrites: {keysFile: ryw-keys.yaml, header: x-partroute-ryw}
services:
  - name: orders
    match: {pathPrefix: /api/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{header: x-order}, {jsonBody: /order/id}], transform: int64}
    replicas: {failoverWait: 1500ms}
  - name: api-exact
    match: {authority: api.example.com, pathPrefix: /api/users}
    partitioning: {scheme: singleton}
  - name: api-wild
    match: {authority: "*.example.com", pathPrefix: /api/users}
    partitioning: {scheme: singleton}
  - name: deep-wild
    match: {authority: "*.eu.example.com"}
    partitioning: {scheme: singleton}
  - name: static
    match: {pathPrefix: /static/}
    partitioning: {scheme: named, names: [a, b]}
    key: {sources: [{query: p}], transform: name}
    replicas: {reads: secondary, readYourWrites: 2s, selection: ordered}
  - name: everything
    partitioning: {scheme: singleton}
`

const featureNaming = `
services:
  orders:
    partitions:
      - lowKey: 0
        highKey: 4
        id: "3"
        replicas:
          - {address: 127.0.0.1:9001, role: primary}
          - {address: "[::1]:9002", role: secondary, healthy: false}
      - lowKey: 5
        highKey: 9
        replicas: []
  api-exact: {partitions: [{replicas: [{address: 127.0.0.1:9011, role: primary}]}]}
  api-wild: {partitions: [{replicas: [{address: 127.0.0.1:9021, role: primary}]}]}
  deep-wild: {partitions: [{replicas: [{address: 127.0.0.1:9031, role: primary}]}]}
  static:
    partitions:
      - {name: a, replicas: [{address: 127.0.0.1:9041, role: primary}]}
      - {name: b, replicas: [{address: 127.0.0.1:9042, role: primary}]}
  everything: {partitions: [{replicas: [{address: 127.0.0.1:9051, role: primary}]}]}
`

func loadFeatures(t *testing.T) (*config.Config, *resolver.View) {
	t.Helper()
	return parseConfigAndView(t, featureConfig, featureNaming)
}

// featureKeys is the read-your-writes keys file featureConfig names, which writeFeatureKeys
// writes next to it.
const featureKeys = "signingKey: test\nkeys:\n  - {id: test, secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=}\n"

// writeFeatureKeys writes featureKeys into dir, where a configuration parsed with its path in
// dir finds it.
func writeFeatureKeys(t *testing.T, dir string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "ryw-keys.yaml"), []byte(featureKeys), 0o600); err != nil {
		t.Fatal(err)
	}
}

func parseConfigAndView(t *testing.T, cfgYAML, namingYAML string) (*config.Config, *resolver.View) {
	t.Helper()
	dir := t.TempDir()
	writeFeatureKeys(t, dir)
	cfg, err := config.Parse([]byte(cfgYAML), filepath.Join(dir, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.ParseView([]byte(namingYAML), filepath.Join(dir, "naming.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, view
}

func mustBootstrap(t *testing.T, cfg *config.Config, view *resolver.View, opts Options) *bootstrapv3.Bootstrap {
	t.Helper()
	b, err := Bootstrap(cfg, view, opts)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// parts unpacks the pieces of a generated bootstrap that the tests look at.
type parts struct {
	hcm      *hcmv3.HttpConnectionManager
	extProc  *extprocv3.ExternalProcessor
	routes   []*routev3.Route
	clusters map[string]*clusterv3.Cluster
	order    []string
}

func unpack(t *testing.T, b *bootstrapv3.Bootstrap) parts {
	t.Helper()
	var p parts
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 || len(ls[0].GetFilterChains()) != 1 || len(ls[0].GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatalf("want one listener with one filter chain of one filter, got %v", ls)
	}
	p.hcm = &hcmv3.HttpConnectionManager{}
	if err := ls[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(p.hcm); err != nil {
		t.Fatal(err)
	}
	filters := p.hcm.GetHttpFilters()
	if len(filters) != 2 || filters[0].GetName() != extProcFilterName || filters[1].GetName() != routerFilterName {
		t.Fatalf("http filters are %v, want ext_proc then router", filters)
	}
	p.extProc = &extprocv3.ExternalProcessor{}
	if err := filters[0].GetTypedConfig().UnmarshalTo(p.extProc); err != nil {
		t.Fatal(err)
	}
	vhs := p.hcm.GetRouteConfig().GetVirtualHosts()
	if len(vhs) != 1 || !slices.Equal(vhs[0].GetDomains(), []string{"*"}) {
		t.Fatalf("want one virtual host for every domain, got %v", vhs)
	}
	p.routes = vhs[0].GetRoutes()
	p.clusters = map[string]*clusterv3.Cluster{}
	for _, c := range b.GetStaticResources().GetClusters() {
		if p.clusters[c.GetName()] != nil {
			t.Fatalf("cluster %s appears twice", c.GetName())
		}
		p.clusters[c.GetName()] = c
		p.order = append(p.order, c.GetName())
	}
	return p
}

func TestBootstrapExampleClusters(t *testing.T) {
	cfg, view := example.Load(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{}))

	want := []string{ExtProcCluster}
	for _, s := range cfg.Services {
		want = append(want, s.Name)
	}
	if !slices.Equal(p.order, want) {
		t.Fatalf("clusters %v, want %v", p.order, want)
	}
	for _, svc := range cfg.Services {
		c := p.clusters[svc.Name]
		if c.GetType() != clusterv3.Cluster_STATIC || c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || c.GetLoadBalancingPolicy() != nil {
			t.Errorf("%s: type %v lb %v, want STATIC ROUND_ROBIN", svc.Name, c.GetType(), c.GetLbPolicy())
		}
		if th := c.GetCommonLbConfig().GetHealthyPanicThreshold(); th == nil || th.GetValue() != 0 {
			t.Errorf("%s: healthy panic threshold %v, want an explicit 0%%", svc.Name, th)
		}
		sub := c.GetLbSubsetConfig()
		if sub.GetFallbackPolicy() != clusterv3.Cluster_LbSubsetConfig_NO_FALLBACK {
			t.Errorf("%s: subset fallback %v, want NO_FALLBACK", svc.Name, sub.GetFallbackPolicy())
		}
		var sels [][]string
		for _, s := range sub.GetSubsetSelectors() {
			sels = append(sels, s.GetKeys())
		}
		if len(sels) != 2 || !slices.Equal(sels[0], []string{"partition", "role"}) || !slices.Equal(sels[1], []string{"partition"}) {
			t.Errorf("%s: subset selectors %v, want [[partition role] [partition]]", svc.Name, sels)
		}

		// Every replica of the view is one endpoint, in order, with its health and its
		// partition and role as string values.
		type ep struct{ addr, partition, role, health string }
		var wantEPs, gotEPs []ep
		for _, part := range view.Services[svc.Name].Partitions {
			for _, r := range part.Replicas {
				h := "HEALTHY"
				if !r.Healthy {
					h = "UNHEALTHY"
				}
				wantEPs = append(wantEPs, ep{r.Address, part.ID, r.Role.String(), h})
			}
		}
		for _, l := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				sa := e.GetEndpoint().GetAddress().GetSocketAddress()
				md := e.GetMetadata().GetFilterMetadata()["envoy.lb"].GetFields()
				if len(md) != 2 {
					t.Errorf("%s: endpoint metadata %v, want exactly partition and role", svc.Name, md)
				}
				for k, v := range md {
					if _, ok := v.GetKind().(*structpb.Value_StringValue); !ok {
						t.Errorf("%s: metadata %s is %v, not a string: Envoy would never match it", svc.Name, k, v)
					}
				}
				gotEPs = append(gotEPs, ep{sa.GetAddress() + ":" + itoa(sa.GetPortValue()), md["partition"].GetStringValue(), md["role"].GetStringValue(), e.GetHealthStatus().String()})
			}
		}
		if !slices.Equal(gotEPs, wantEPs) {
			t.Errorf("%s endpoints:\n got %v\nwant %v", svc.Name, gotEPs, wantEPs)
		}
	}
	// The example marks one replica unhealthy; make sure the comparison above saw it.
	unhealthy := 0
	for _, c := range p.clusters {
		for _, l := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				if e.GetHealthStatus() == corev3.HealthStatus_UNHEALTHY {
					unhealthy++
				}
			}
		}
	}
	if unhealthy != 1 {
		t.Errorf("%d unhealthy endpoints, want the example's 1", unhealthy)
	}
}

func itoa(n uint32) string { return strconv.FormatUint(uint64(n), 10) }

func TestBootstrapExtProcCluster(t *testing.T) {
	cfg, view := example.Load(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{}))
	c := p.clusters[ExtProcCluster]
	if c.GetType() != clusterv3.Cluster_STATIC || c.GetConnectTimeout().AsDuration() != time.Second {
		t.Errorf("type %v connect timeout %v, want STATIC 1s", c.GetType(), c.GetConnectTimeout().AsDuration())
	}
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) != 1 || len(eps[0].GetLbEndpoints()) != 1 {
		t.Fatalf("want one endpoint, got %v", eps)
	}
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if got := sa.GetAddress() + ":" + itoa(sa.GetPortValue()); got != cfg.Listen.ExtProc {
		t.Errorf("ext_proc endpoint %s, want listen.extproc %s", got, cfg.Listen.ExtProc)
	}
	var po upstreamhttpv3.HttpProtocolOptions
	if err := c.GetTypedExtensionProtocolOptions()[httpProtocolOptions].UnmarshalTo(&po); err != nil {
		t.Fatal(err)
	}
	if po.GetExplicitHttpConfig().GetHttp2ProtocolOptions() == nil {
		t.Errorf("protocol options %v, want explicit HTTP/2 (gRPC)", &po)
	}
	hcs := c.GetHealthChecks()
	if len(hcs) != 1 {
		t.Fatalf("want one health check, got %v", hcs)
	}
	hc := hcs[0]
	if hc.GetGrpcHealthCheck().GetServiceName() != "envoy.service.ext_proc.v3.ExternalProcessor" {
		t.Errorf("gRPC health service %q", hc.GetGrpcHealthCheck().GetServiceName())
	}
	if hc.GetHealthyThreshold().GetValue() != 1 || hc.GetUnhealthyThreshold().GetValue() != 1 {
		t.Errorf("thresholds healthy %v unhealthy %v, want 1 and 1", hc.GetHealthyThreshold(), hc.GetUnhealthyThreshold())
	}
	if hc.GetInterval().AsDuration() != time.Second || hc.GetNoTrafficInterval().AsDuration() != time.Second {
		t.Errorf("interval %v no-traffic interval %v, want 1s for both", hc.GetInterval().AsDuration(), hc.GetNoTrafficInterval().AsDuration())
	}
	if hc.GetTimeout() == nil {
		t.Error("health check has no timeout")
	}
	// A partroute instance whose streams fail to connect is ejected after two of them, for
	// at most half of the cluster, with the interval of the health check.
	od := c.GetOutlierDetection()
	if od.GetConsecutiveGatewayFailure().GetValue() != OutlierGatewayFailures || od.GetEnforcingConsecutiveGatewayFailure().GetValue() != 100 {
		t.Errorf("outlier detection: %d consecutive gateway failures enforced at %d%%, want %d at 100%%",
			od.GetConsecutiveGatewayFailure().GetValue(), od.GetEnforcingConsecutiveGatewayFailure().GetValue(), OutlierGatewayFailures)
	}
	if od.GetMaxEjectionPercent().GetValue() != 50 || od.GetBaseEjectionTime().AsDuration() != OutlierBaseEjectionTime || od.GetInterval().AsDuration() != time.Second {
		t.Errorf("outlier detection: max ejection %d%%, base ejection time %v, interval %v; want 50%%, %v, 1s",
			od.GetMaxEjectionPercent().GetValue(), od.GetBaseEjectionTime().AsDuration(), od.GetInterval().AsDuration(), OutlierBaseEjectionTime)
	}
	if od.GetSplitExternalLocalOriginErrors() {
		t.Error("outlier detection splits local-origin errors: a refused connection would no longer count as a gateway failure")
	}

	// An ext_proc server listening on every address is reached on loopback, and the option
	// overrides the configuration.
	for _, tc := range []struct{ override, want string }{
		{"0.0.0.0:6000", "127.0.0.1:6000"},
		{"[::]:6000", "::1:6000"},
		{":6000", "127.0.0.1:6000"},
		{"10.1.2.3:6000", "10.1.2.3:6000"},
	} {
		p := unpack(t, mustBootstrap(t, cfg, view, Options{ExtProcAddress: tc.override}))
		sa := p.clusters[ExtProcCluster].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if got := sa.GetAddress() + ":" + itoa(sa.GetPortValue()); got != tc.want {
			t.Errorf("ExtProcAddress %s: endpoint %s, want %s", tc.override, got, tc.want)
		}
	}
}

// endpointAddrs lists a cluster's endpoints as host:port, in order.
func endpointAddrs(c *clusterv3.Cluster) []string {
	var out []string
	for _, l := range c.GetLoadAssignment().GetEndpoints() {
		for _, e := range l.GetLbEndpoints() {
			sa := e.GetEndpoint().GetAddress().GetSocketAddress()
			out = append(out, sa.GetAddress()+":"+itoa(sa.GetPortValue()))
		}
	}
	return out
}

// TestBootstrapSeveralInstances checks that the ext_proc and ADS clusters get one endpoint per
// partroute instance, from either option form, and that only the ext_proc cluster is health
// checked and watched by outlier detection.
func TestBootstrapSeveralInstances(t *testing.T) {
	cfg, view := example.Load(t)
	for _, tc := range []struct {
		name             string
		opts             Options
		extProc, xdsWant []string
	}{
		{"default", Options{}, []string{cfg.Listen.ExtProc}, nil},
		{"one address", Options{ExtProcAddress: "10.0.0.1:50051"}, []string{"10.0.0.1:50051"}, nil},
		{"a list of one", Options{ExtProcAddresses: []string{"10.0.0.1:50051"}}, []string{"10.0.0.1:50051"}, nil},
		{"two instances", Options{ExtProcAddresses: []string{"10.0.0.1:50051", "10.0.0.2:50051"}}, []string{"10.0.0.1:50051", "10.0.0.2:50051"}, nil},
		{"unspecified hosts", Options{ExtProcAddresses: []string{":50051", "0.0.0.0:50052", "[::]:50053"}}, []string{"127.0.0.1:50051", "127.0.0.1:50052", "::1:50053"}, nil},
		{"xds, one address", Options{XDSAddress: "10.0.0.1:18000"}, []string{cfg.Listen.ExtProc}, []string{"10.0.0.1:18000"}},
		{"xds, two instances", Options{ExtProcAddresses: []string{"10.0.0.1:50051", "10.0.0.2:50051"}, XDSAddresses: []string{"10.0.0.1:18000", "10.0.0.2:18000"}},
			[]string{"10.0.0.1:50051", "10.0.0.2:50051"}, []string{"10.0.0.1:18000", "10.0.0.2:18000"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := view
			if tc.xdsWant != nil {
				v = nil // the clusters come over ADS: no view is needed
			}
			p := unpack(t, mustBootstrap(t, cfg, v, tc.opts))
			ext := p.clusters[ExtProcCluster]
			if got := endpointAddrs(ext); !slices.Equal(got, tc.extProc) {
				t.Errorf("%s endpoints %v, want %v", ExtProcCluster, got, tc.extProc)
			}
			if len(ext.GetHealthChecks()) != 1 || ext.GetOutlierDetection() == nil {
				t.Errorf("%s: health checks %v, outlier detection %v; want one and one", ExtProcCluster, ext.GetHealthChecks(), ext.GetOutlierDetection())
			}
			xc := p.clusters[XDSCluster]
			if tc.xdsWant == nil {
				if xc != nil {
					t.Errorf("a static bootstrap has an %s cluster", XDSCluster)
				}
				return
			}
			if got := endpointAddrs(xc); !slices.Equal(got, tc.xdsWant) {
				t.Errorf("%s endpoints %v, want %v", XDSCluster, got, tc.xdsWant)
			}
			if xc.GetOutlierDetection() != nil || len(xc.GetHealthChecks()) != 0 {
				t.Errorf("%s: outlier detection %v, health checks %v; want neither", XDSCluster, xc.GetOutlierDetection(), xc.GetHealthChecks())
			}
		})
	}
}

func TestBootstrapExtProcFilter(t *testing.T) {
	cfg, view := example.Load(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{}))
	ep := p.extProc
	if ep.GetFailureModeAllow() {
		t.Error("failure_mode_allow is true: an unroutable request would go on without partition criteria")
	}
	if got := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName(); got != ExtProcCluster {
		t.Errorf("gRPC cluster %q, want %q", got, ExtProcCluster)
	}
	// A stream that could not be opened on one partroute instance (a killed one, before
	// outlier detection ejects it) is opened on another instead of failing the request, with
	// a back-off far below the message timeout; a stream that reached partroute is not.
	rp := ep.GetGrpcService().GetRetryPolicy()
	if rp.GetRetryOn() != "connect-failure,refused-stream" || rp.GetNumRetries().GetValue() < 1 {
		t.Errorf("ext_proc retry policy: retry_on %q, %d retries; want connect-failure,refused-stream and at least 1", rp.GetRetryOn(), rp.GetNumRetries().GetValue())
	}
	if hp := rp.GetRetryHostPredicate(); len(hp) != 1 || hp[0].GetName() != previousHostsName {
		t.Errorf("ext_proc retry host predicates %v, want %s alone: a retry goes to another instance", hp, previousHostsName)
	}
	if bo := rp.GetRetryBackOff(); bo.GetBaseInterval() == nil || bo.GetMaxInterval().AsDuration()*time.Duration(rp.GetNumRetries().GetValue()) >= ep.GetMessageTimeout().AsDuration()/4 {
		t.Errorf("ext_proc retry back-off %v over %d retries: the retries must take a small part of the %v message timeout (Envoy's default base is 1s)",
			bo, rp.GetNumRetries().GetValue(), ep.GetMessageTimeout().AsDuration())
	}
	if got := ep.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Equal(got, []string{"envoy.lb"}) {
		t.Errorf("receiving namespaces %v, want [envoy.lb]", got)
	}
	if got := ep.GetMessageTimeout().AsDuration(); got != 200*time.Millisecond {
		t.Errorf("message timeout %v, want 200ms", got)
	}
	if ep.GetAllowModeOverride() {
		t.Error("allow_mode_override is on")
	}
	m := ep.GetProcessingMode()
	if m.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND || m.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP ||
		m.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || m.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE ||
		m.GetRequestTrailerMode() != extprocv3.ProcessingMode_SKIP || m.GetResponseTrailerMode() != extprocv3.ProcessingMode_SKIP {
		t.Errorf("processing mode %v, want request headers only", m)
	}
	if !p.hcm.GetNormalizePath().GetValue() || p.hcm.GetCodecType() != hcmv3.HttpConnectionManager_AUTO || p.hcm.GetStatPrefix() == "" {
		t.Errorf("connection manager normalize_path %v codec %v stat_prefix %q", p.hcm.GetNormalizePath(), p.hcm.GetCodecType(), p.hcm.GetStatPrefix())
	}

	p = unpack(t, mustBootstrap(t, cfg, view, Options{ResponseHeaders: true, MessageTimeout: 150 * time.Millisecond}))
	if got := p.extProc.GetProcessingMode().GetResponseHeaderMode(); got != extprocv3.ProcessingMode_SEND {
		t.Errorf("with ResponseHeaders, response header mode %v, want SEND", got)
	}
	if got := p.extProc.GetMessageTimeout().AsDuration(); got != 150*time.Millisecond {
		t.Errorf("message timeout %v, want the option's 150ms", got)
	}
}

// A service with read-your-writes gets the token back to its client from partroute's
// partroute.ryw metadata: its route appends a Set-Cookie (leaving the replica's own) and sets
// the token header, and the ext_proc filter accepts the namespace. Other routes, and a
// configuration without the feature, are as they were.
func TestBootstrapReadYourWrites(t *testing.T) {
	cfg, view := example.Load(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{}))
	if got := p.extProc.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Equal(got, []string{"envoy.lb"}) {
		t.Errorf("without read-your-writes: receiving namespaces %v, want [envoy.lb]", got)
	}
	for _, r := range p.routes {
		if len(r.GetResponseHeadersToAdd()) != 0 && r.GetName() != "no_service" {
			t.Errorf("without read-your-writes: route %s adds response headers %v", r.GetName(), r.GetResponseHeadersToAdd())
		}
	}

	cfg, view = loadFeatures(t)
	for _, opts := range []Options{{}, {XDSAddress: "127.0.0.1:18000"}} {
		p = unpack(t, mustBootstrap(t, cfg, view, opts))
		if got := p.extProc.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Equal(got, []string{"envoy.lb", "partroute.hosts", "partroute.ryw"}) {
			t.Errorf("receiving namespaces %v, want [envoy.lb partroute.hosts partroute.ryw] (the feature configuration orders a service too)", got)
		}
		for _, r := range p.routes {
			got := r.GetResponseHeadersToAdd()
			switch r.GetName() {
			case "static":
				if len(got) != 2 {
					t.Fatalf("route static adds %v, want the cookie and the token header", got)
				}
				if h := got[0]; h.GetHeader().GetKey() != "set-cookie" || h.GetHeader().GetValue() != "%DYNAMIC_METADATA(partroute.ryw:cookie)%" ||
					h.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD || h.GetKeepEmptyValue() {
					t.Errorf("route static's cookie: %v", h)
				}
				if h := got[1]; h.GetHeader().GetKey() != "x-partroute-ryw" || h.GetHeader().GetValue() != "%DYNAMIC_METADATA(partroute.ryw:token)%" ||
					h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || h.GetKeepEmptyValue() {
					t.Errorf("route static's token header: %v", h)
				}
			case "no_service":
			default:
				if len(got) != 0 {
					t.Errorf("route %s, without read-your-writes, adds response headers %v", r.GetName(), got)
				}
			}
		}
	}
}

// A configuration that holds writes for a failover gets a max_message_timeout with room for
// its longest wait and the answer after it, so that Envoy takes partroute's
// override_message_timeout; one that holds none leaves the field unset.
func TestBootstrapMaxMessageTimeout(t *testing.T) {
	cfg, view := example.Load(t)
	if got := unpack(t, mustBootstrap(t, cfg, view, Options{})).extProc.GetMaxMessageTimeout(); got != nil {
		t.Errorf("max_message_timeout %v without a failover wait, want unset", got.AsDuration())
	}
	dir := t.TempDir()
	writeFeatureKeys(t, dir)
	cfg, err := config.Parse([]byte(featureConfig), filepath.Join(dir, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	view, err = resolver.ParseView([]byte(featureNaming), filepath.Join(dir, "naming.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		opts Options
		want time.Duration
	}{
		{Options{}, 1500*time.Millisecond + contract.FailoverAnswerMargin},
		{Options{MessageTimeout: 5 * time.Second}, 5 * time.Second},
	} {
		ep := unpack(t, mustBootstrap(t, cfg, view, c.opts)).extProc
		if got := ep.GetMaxMessageTimeout().AsDuration(); got != c.want {
			t.Errorf("message timeout %v: max_message_timeout %v, want %v", c.opts.MessageTimeout, got, c.want)
		}
		if ep.GetMaxMessageTimeout().AsDuration() < contract.HeldMessageTimeout(cfg.LongestFailoverWait()) {
			t.Error("max_message_timeout is below the override partroute sends: Envoy would ignore it")
		}
	}
}

func TestBootstrapRouteOrder(t *testing.T) {
	for _, load := range []func(*testing.T) (*config.Config, *resolver.View){func(t *testing.T) (*config.Config, *resolver.View) { return example.Load(t) }, loadFeatures} {
		cfg, view := load(t)
		p := unpack(t, mustBootstrap(t, cfg, view, Options{}))
		var got, want []string
		for _, r := range p.routes {
			got = append(got, r.GetName())
		}
		for _, s := range cfg.ServicesByPrecedence() {
			want = append(want, s.Name)
		}
		want = append(want, "no_service")
		if !slices.Equal(got, want) {
			t.Fatalf("routes %v, want %v", got, want)
		}
		for _, r := range p.routes[:len(p.routes)-1] {
			if c := r.GetRoute().GetCluster(); c != r.GetName() {
				t.Errorf("route %s goes to cluster %q", r.GetName(), c)
			}
		}
		last := p.routes[len(p.routes)-1]
		if last.GetDirectResponse().GetStatus() != 404 || last.GetMatch().GetPrefix() != "/" || len(last.GetMatch().GetHeaders()) != 0 {
			t.Errorf("catch-all route %v, want a 404 for every path", last)
		}
		if !strings.Contains(last.GetDirectResponse().GetBody().GetInlineString(), "no_service") {
			t.Errorf("catch-all body %q does not name the error", last.GetDirectResponse().GetBody().GetInlineString())
		}
	}
}

func TestBootstrapPathMatchers(t *testing.T) {
	cfg, view := loadFeatures(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{}))
	want := map[string]string{
		"orders":     "path_separated_prefix /api/orders",
		"api-exact":  "path_separated_prefix /api/users",
		"api-wild":   "path_separated_prefix /api/users",
		"deep-wild":  "prefix /",
		"static":     "prefix /static/",
		"everything": "prefix /",
	}
	for _, r := range p.routes[:len(p.routes)-1] {
		m := r.GetMatch()
		var got string
		switch s := m.GetPathSpecifier().(type) {
		case *routev3.RouteMatch_PathSeparatedPrefix:
			got = "path_separated_prefix " + s.PathSeparatedPrefix
		case *routev3.RouteMatch_Prefix:
			got = "prefix " + s.Prefix
		default:
			got = "other"
		}
		if got != want[r.GetName()] {
			t.Errorf("route %s matches %s, want %s", r.GetName(), got, want[r.GetName()])
		}
	}
}

// TestBootstrapBodyKeyedRoutesBuffer checks that only a route whose key may come from the body
// makes Envoy buffer it, up to maxBodyBytes, and that its override keeps the other modes.
func TestBootstrapBodyKeyedRoutesBuffer(t *testing.T) {
	cfg, view := loadFeatures(t)
	for _, respHeaders := range []bool{false, true} {
		p := unpack(t, mustBootstrap(t, cfg, view, Options{ResponseHeaders: respHeaders}))
		wantResp := extprocv3.ProcessingMode_SKIP
		if respHeaders {
			wantResp = extprocv3.ProcessingMode_SEND
		}
		buffered := 0
		for _, r := range p.routes {
			pf := r.GetTypedPerFilterConfig()
			if r.GetName() == "no_service" {
				continue // TestCatchAllSkipsExtProc
			}
			if r.GetName() != "orders" {
				if len(pf) != 0 || r.GetRequestBodyBufferLimit() != nil {
					t.Errorf("route %s has per-filter config %v and body limit %v; only body-keyed routes should", r.GetName(), pf, r.GetRequestBodyBufferLimit())
				}
				continue
			}
			var per extprocv3.ExtProcPerRoute
			if err := pf[extProcFilterName].UnmarshalTo(&per); err != nil {
				t.Fatalf("orders: ext_proc per-route config: %v", err)
			}
			m := per.GetOverrides().GetProcessingMode()
			if m.GetRequestBodyMode() != extprocv3.ProcessingMode_BUFFERED || m.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND ||
				m.GetResponseHeaderMode() != wantResp || m.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE {
				t.Errorf("orders: override %v, want headers SEND, body BUFFERED, response headers %v", m, wantResp)
			}
			if got := r.GetRequestBodyBufferLimit().GetValue(); got != uint64(cfg.MaxBodyBytes) {
				t.Errorf("orders: body buffer limit %d, want maxBodyBytes %d", got, cfg.MaxBodyBytes)
			}
			buffered++
		}
		if buffered != 1 {
			t.Errorf("%d buffered routes, want 1", buffered)
		}
	}
}

func TestBootstrapRetry(t *testing.T) {
	cfg, view := example.Load(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{}))
	for _, r := range p.routes {
		if r.GetRoute().GetRetryPolicy() != nil {
			t.Errorf("route %s retries without Options.Retry", r.GetName())
		}
	}
	p = unpack(t, mustBootstrap(t, cfg, view, Options{Retry: &Retry{NumRetries: 2, PerTryTimeout: 300 * time.Millisecond}}))
	for _, r := range p.routes[:len(p.routes)-1] {
		rp := r.GetRoute().GetRetryPolicy()
		if rp.GetRetryOn() != "connect-failure,reset,retriable-status-codes" || !slices.Equal(rp.GetRetriableStatusCodes(), []uint32{503}) || rp.GetNumRetries().GetValue() != 2 || rp.GetPerTryTimeout().AsDuration() != 300*time.Millisecond {
			t.Errorf("route %s retry policy %v", r.GetName(), rp)
		}
		if len(rp.GetRetryHostPredicate()) != 1 || rp.GetRetryHostPredicate()[0].GetName() != previousHostsName {
			t.Errorf("route %s retries without preferring another replica: %v", r.GetName(), rp.GetRetryHostPredicate())
		}
	}
	p = unpack(t, mustBootstrap(t, cfg, view, Options{Retry: &Retry{NumRetries: 1}}))
	if rp := p.routes[0].GetRoute().GetRetryPolicy(); rp.GetPerTryTimeout() != nil || rp.GetNumRetries().GetValue() != 1 {
		t.Errorf("retry policy %v, want 1 retry and no per-try timeout", rp)
	}
}

// envoyRoute picks the route Envoy would for a request, reading the generated route matchers
// the way Envoy documents them, with Go's regexp standing in for RE2 (the expressions use only
// syntax both share). It returns the route's name.
func envoyRoute(t *testing.T, routes []*routev3.Route, authority, path string) string {
	t.Helper()
	for _, r := range routes {
		m := r.GetMatch()
		ok := false
		switch s := m.GetPathSpecifier().(type) {
		case *routev3.RouteMatch_Prefix:
			ok = strings.HasPrefix(path, s.Prefix)
		case *routev3.RouteMatch_PathSeparatedPrefix:
			p, _, _ := strings.Cut(path, "?")
			ok = p == s.PathSeparatedPrefix || strings.HasPrefix(p, s.PathSeparatedPrefix+"/")
		default:
			t.Fatalf("route %s: path matcher %T not emulated", r.GetName(), s)
		}
		for _, h := range m.GetHeaders() {
			if h.GetName() != ":authority" {
				t.Fatalf("route %s: header matcher on %s not emulated", r.GetName(), h.GetName())
			}
			re := regexp.MustCompile(`^(?:` + h.GetStringMatch().GetSafeRegex().GetRegex() + `)$`)
			// A missing header matches no regex.
			ok = ok && authority != "" && re.MatchString(authority)
		}
		if ok {
			return r.GetName()
		}
	}
	return ""
}

// TestBootstrapRoutesAgreeWithPartroute checks that Envoy's route and partroute's own match
// pick the same service for every request in a table, which is what keeps partition criteria
// from landing on another service's cluster.
func TestBootstrapRoutesAgreeWithPartroute(t *testing.T) {
	cfg, view := loadFeatures(t)
	p := unpack(t, mustBootstrap(t, cfg, view, Options{}))
	authorities := []string{
		"", "api.example.com", "API.Example.COM", "api.example.com:8080", "api.example.com:",
		"x.example.com", "a.b.example.com:443", "example.com", ".example.com", "x.example.comm",
		"x.eu.example.com", "eu.example.com", "X.EU.EXAMPLE.COM:1", "api.example.com.evil.org",
		"evilapi.example.com", "other.org", "127.0.0.1:10000",
	}
	paths := []string{
		"/", "/api/users", "/api/users/", "/api/users/42", "/api/users?x=1", "/api/usersX",
		"/api/orders", "/api/orders/1?y", "/api/ordersfoo", "/static/", "/static/a.css", "/static",
		"/staticX", "/API/users",
	}
	for _, a := range authorities {
		for _, path := range paths {
			want := "no_service"
			if s := cfg.Match(a, path); s != nil {
				want = s.Name
			}
			if got := envoyRoute(t, p.routes, a, path); got != want {
				t.Errorf("authority %q path %q: Envoy routes to %s, partroute to %s", a, path, got, want)
			}
		}
	}
}

// TestAuthorityRegex pins the authority expressions against a table, then checks them
// against partroute's own host match over generated authorities of at most one colon (see
// authorityRegex for why those are the ones that matter).
func TestAuthorityRegex(t *testing.T) {
	table := []struct {
		pattern   string
		authority string
		match     bool
	}{
		{"*.example.com", "a.example.com", true},
		{"*.example.com", "A.Example.Com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "a.example.com:8080", true},
		{"*.example.com", "a.example.com:", true},
		{"*.example.com", "example.com", false},
		{"*.example.com", ".example.com", false},
		{"*.example.com", "aexample.com", false},
		{"*.example.com", "a.example.com.evil", false},
		{"*.example.com", "a.example.com:80:90", false},
		{"*.example.com", "a.exampleXcom", false},
		{"api.example.com", "api.example.com", true},
		{"api.example.com", "API.EXAMPLE.COM:443", true},
		{"api.example.com", "x.api.example.com", false},
		{"api.example.com", "api.example.co", false},
		{"api.example.com", "apiXexample.com", false},
		{"api.example.com", "api.example.com.", false},
	}
	for _, tc := range table {
		expr, err := authorityRegex(tc.pattern)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`^(?:` + expr + `)$`)
		if got := re.MatchString(tc.authority); got != tc.match {
			t.Errorf("%s (%s) against %q: %v, want %v", tc.pattern, expr, tc.authority, got, tc.match)
		}
	}

	for _, pattern := range []string{"*.example.com", "api.example.com", "*.a-b.io", "x"} {
		cfg, _ := parseConfigAndView(t, `
naming: {file: naming.yaml}
services: [{name: s, match: {authority: "`+pattern+`"}, partitioning: {scheme: singleton}}]
`, `services: {s: {partitions: [{replicas: []}]}}`)
		expr, err := authorityRegex(pattern)
		if err != nil {
			t.Fatal(err)
		}
		re := regexp.MustCompile(`^(?:` + expr + `)$`)
		hosts := []string{"", "x", "X", "example.com", ".example.com", "a.example.com", "A.B.EXAMPLE.COM",
			"api.example.com", "aPi.example.com", "a.a-b.io", ".a-b.io", "a-b.io", "a.a-b.iox", "[x", "a]", "a.example.com]"}
		ports := []string{"", ":", ":80", ":x", ":65536"}
		for _, h := range hosts {
			for _, port := range ports {
				a := h + port
				want := cfg.Match(a, "/") != nil
				if got := re.MatchString(a); got != want {
					t.Errorf("%s (%s) against %q: regex %v, partroute %v", pattern, expr, a, got, want)
				}
			}
		}
	}

	for _, bad := range []string{"[::1]", "a:b", "x]"} {
		if _, err := authorityRegex(bad); err == nil {
			t.Errorf("authority %q: no error", bad)
		}
	}
}

func TestBootstrapErrors(t *testing.T) {
	cfg, view := example.Load(t)
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"message timeout at the resolve deadline", Options{MessageTimeout: cfg.Cache.ResolveTimeout}, "resolveTimeout"},
		{"retry without retries", Options{Retry: &Retry{}}, "at least 1 retry"},
		{"listen address without port", Options{ListenAddress: "127.0.0.1"}, "listen address"},
		{"admin address by name", Options{AdminAddress: "localhost:9902"}, "not an IP address"},
		{"admin address without host", Options{AdminAddress: ":9902"}, "admin address"},
		{"ext_proc port out of range", Options{ExtProcAddress: "127.0.0.1:70000"}, "ext_proc address"},
		{"ext_proc address and list", Options{ExtProcAddress: "127.0.0.1:50051", ExtProcAddresses: []string{"127.0.0.1:50052"}}, "give one or the other"},
		{"ext_proc address in a list by name", Options{ExtProcAddresses: []string{"127.0.0.1:50051", "partroute-2:50051"}}, `"partroute-2:50051"`},
		{"ext_proc address listed twice", Options{ExtProcAddresses: []string{"127.0.0.1:50051", "0.0.0.0:50051"}}, `"0.0.0.0:50051" is listed twice`},
		{"xds address and list", Options{XDSAddress: "127.0.0.1:18000", XDSAddresses: []string{"127.0.0.1:18001"}}, "xds address"},
		{"xds address listed twice", Options{XDSAddresses: []string{"127.0.0.1:18000", "127.0.0.1:18000"}}, "listed twice"},
	} {
		if _, err := Bootstrap(cfg, view, tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one mentioning %q", tc.name, err, tc.want)
		}
	}
	if _, err := Bootstrap(cfg, nil, Options{}); err == nil {
		t.Error("no error without a naming view")
	}

	named, view := parseConfigAndView(t, `
naming: {file: naming.yaml}
services: [{name: s, partitioning: {scheme: singleton}}]
`, `services: {s: {partitions: [{replicas: [{address: "db.internal:5432", role: primary}]}]}}`)
	if _, err := Bootstrap(named, view, Options{}); err == nil || !strings.Contains(err.Error(), "db.internal:5432") {
		t.Errorf("replica with a host name: error %v, want one naming the address", err)
	}

	clash, view := parseConfigAndView(t, `
naming: {file: naming.yaml}
services: [{name: partroute_extproc, partitioning: {scheme: singleton}}]
`, `services: {partroute_extproc: {partitions: [{replicas: []}]}}`)
	if _, err := Bootstrap(clash, view, Options{}); err == nil || !strings.Contains(err.Error(), "partroute_extproc") {
		t.Errorf("service named like partroute's cluster: error %v", err)
	}
}

// TestBootstrapRegexLimit checks that the generator raises Envoy's RE2 program size limit only
// when an authority is long enough to need it (Envoy's validate mode proves the limit is high
// enough, in TestEnvoyValidatesBootstraps).
func TestBootstrapRegexLimit(t *testing.T) {
	cfg, view := example.Load(t)
	if rt := mustBootstrap(t, cfg, view, Options{}).GetLayeredRuntime(); rt != nil {
		t.Errorf("the example's short authority needs no runtime override, got %v", rt)
	}
	long := strings.Repeat("abcdefghi.", 24) + "example.com"
	cfg, view = parseConfigAndView(t, `
naming: {file: naming.yaml}
services: [{name: e, match: {authority: "`+long+`"}, partitioning: {scheme: singleton}}]
`, `services: {e: {partitions: [{replicas: []}]}}`)
	rt := mustBootstrap(t, cfg, view, Options{}).GetLayeredRuntime()
	re, err := authorityRegex(long)
	if err != nil {
		t.Fatal(err)
	}
	var static, admin bool
	for _, l := range rt.GetLayers() {
		if v := l.GetStaticLayer().GetFields()["re2.max_program_size.error_level"]; v != nil {
			static = v.GetNumberValue() >= float64(len(re))
		}
		admin = admin || l.GetAdminLayer() != nil
	}
	if !static || !admin {
		t.Errorf("a %d-character authority regex: runtime %v, want a static layer raising the RE2 limit to at least %d and an admin layer", len(re), rt, len(re))
	}
}

// The shape of partroute's answer decides what the service routes do to the upstream request.
// With extproc, partroute's header mutation removes and sets the headers, and the routes leave
// them alone. With envoy and none, partroute's answer carries no mutation: every service route
// removes the client's copies of the three configured headers, and with envoy sets them from
// the partroute.request metadata, which the ext_proc filter then accepts. The catch-all route
// sends nothing upstream and changes nothing. Statically and over xDS alike, since the routes
// stay in the bootstrap.
func TestBootstrapSetBy(t *testing.T) {
	const names = "headers: {partition: x-shard, role: x-shard-role, key: x-shard-key, setBy: %s}\n"
	type headerAdd struct{ name, value string }
	cases := []struct {
		setBy      config.SetBy
		remove     []string
		add        []headerAdd
		namespaces []string
	}{
		{config.SetByExtProc, nil, nil, []string{"envoy.lb", "partroute.hosts", "partroute.ryw"}},
		{config.SetByEnvoy, []string{"x-shard", "x-shard-role", "x-shard-key"}, []headerAdd{
			{"x-shard", "%DYNAMIC_METADATA(partroute.request:partition)%"},
			{"x-shard-role", "%DYNAMIC_METADATA(partroute.request:role)%"},
			{"x-shard-key", "%DYNAMIC_METADATA(partroute.request:key)%"},
		}, []string{"envoy.lb", "partroute.hosts", "partroute.ryw", "partroute.request"}},
		{config.SetByNone, []string{"x-shard", "x-shard-role", "x-shard-key"}, nil, []string{"envoy.lb", "partroute.hosts", "partroute.ryw"}},
	}
	for _, tc := range cases {
		t.Run(tc.setBy.String(), func(t *testing.T) {
			cfg, view := parseConfigAndView(t, fmt.Sprintf(names, tc.setBy)+featureConfig, featureNaming)
			if cfg.Headers.SetBy != tc.setBy {
				t.Fatalf("parsed setBy %v, want %v", cfg.Headers.SetBy, tc.setBy)
			}
			for _, opts := range []Options{{}, {XDSAddress: "127.0.0.1:18000"}, {Retry: &Retry{NumRetries: 2}, ResponseHeaders: true}} {
				p := unpack(t, mustBootstrap(t, cfg, view, opts))
				if got := p.extProc.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Equal(got, tc.namespaces) {
					t.Errorf("%+v: receiving namespaces %v, want %v", opts, got, tc.namespaces)
				}
				if len(p.routes) != len(cfg.Services)+1 {
					t.Fatalf("%d routes, want one per service and the catch-all", len(p.routes))
				}
				for _, r := range p.routes {
					remove, add := tc.remove, tc.add
					if r.GetName() == "no_service" {
						remove, add = nil, nil
					}
					if got := r.GetRequestHeadersToRemove(); !slices.Equal(got, remove) {
						t.Errorf("%+v: route %s removes %v, want %v", opts, r.GetName(), got, remove)
					}
					var got []headerAdd
					for _, h := range r.GetRequestHeadersToAdd() {
						if h.GetAppendAction() != corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD || h.GetKeepEmptyValue() || len(h.GetHeader().GetRawValue()) != 0 {
							t.Errorf("%+v: route %s adds %v: want it to overwrite, and to add nothing for an empty value", opts, r.GetName(), h)
						}
						got = append(got, headerAdd{h.GetHeader().GetKey(), h.GetHeader().GetValue()})
					}
					if !slices.Equal(got, add) {
						t.Errorf("%+v: route %s adds %v, want %v", opts, r.GetName(), got, add)
					}
				}
			}
		})
	}
}

// A shape the loader cannot give, in a configuration built in code, is refused by name; the
// zero shape is the default's.
func TestBootstrapSetByUnknown(t *testing.T) {
	cfg, view := example.Load(t)
	cfg.Headers.SetBy = 9
	if _, err := Bootstrap(cfg, view, Options{}); err == nil || !strings.Contains(err.Error(), "headers.setBy SetBy(9) is not extproc, envoy or none") {
		t.Errorf("Bootstrap with setBy 9: %v", err)
	}
	cfg.Headers.SetBy = 0
	want := unpack(t, mustBootstrap(t, cfg, view, Options{})).routes
	cfg.Headers.SetBy = config.DefaultSetBy
	got := unpack(t, mustBootstrap(t, cfg, view, Options{})).routes
	for i := range got {
		if !slices.Equal(got[i].GetRequestHeadersToRemove(), want[i].GetRequestHeadersToRemove()) || len(got[i].GetRequestHeadersToAdd()) != len(want[i].GetRequestHeadersToAdd()) {
			t.Errorf("route %s: the zero setBy's request headers differ from the default's", got[i].GetName())
		}
	}
}
