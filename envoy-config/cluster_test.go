package envoyconfig

import (
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	subsetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/subset/v3"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
)

func TestServiceClusterUpstream(t *testing.T) {
	plain := &config.Service{Name: "users", Upstream: config.Upstream{Protocol: "http1"}}
	c, err := ServiceCluster(plain, Options{}, false)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetType() != clusterv3.Cluster_STATIC || c.GetEdsClusterConfig() != nil || c.TypedExtensionProtocolOptions != nil || c.HealthChecks != nil {
		t.Errorf("plain static cluster: %v", c)
	}
	if c.GetConnectTimeout().AsDuration() != DefaultConnectTimeout {
		t.Errorf("connect timeout %v, want the default", c.GetConnectTimeout().AsDuration())
	}

	tuned := &config.Service{Name: "users", Upstream: config.Upstream{Protocol: "http2", ConnectTimeout: 250 * time.Millisecond,
		HealthCheck: &config.HealthCheck{Path: "/healthz", Interval: 3 * time.Second, Timeout: time.Second}}}
	c, err = ServiceCluster(tuned, Options{ConnectTimeout: 5 * time.Second}, true)
	if err != nil {
		t.Fatal(err)
	}
	if c.GetType() != clusterv3.Cluster_EDS || c.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
		t.Errorf("EDS cluster does not take endpoints from ADS: %v", c)
	}
	if c.GetConnectTimeout().AsDuration() != 250*time.Millisecond {
		t.Errorf("the service's connect timeout does not win over the option: %v", c.GetConnectTimeout().AsDuration())
	}
	if _, ok := c.TypedExtensionProtocolOptions[httpProtocolOptions]; !ok {
		t.Error("http2 upstream has no HTTP/2 protocol options")
	}
	if len(c.HealthChecks) != 1 || c.HealthChecks[0].GetHttpHealthCheck().GetPath() != "/healthz" || c.HealthChecks[0].GetInterval().AsDuration() != 3*time.Second {
		t.Errorf("health check = %v", c.HealthChecks)
	}
	if err := c.ValidateAll(); err != nil {
		t.Errorf("cluster does not validate: %v", err)
	}
	if len(c.GetLbSubsetConfig().GetSubsetSelectors()) != 2 || c.GetLbSubsetConfig().GetFallbackPolicy() != clusterv3.Cluster_LbSubsetConfig_NO_FALLBACK {
		t.Errorf("subset config = %v", c.GetLbSubsetConfig())
	}
}

// A service with replicas.selection: ordered gets Envoy's override_host policy, reading
// partroute's host list, over the subset load balancer with NO_FALLBACK: a spent or stale
// list falls back to the request's own partition and role, never to another partition.
func TestOrderedSelectionCluster(t *testing.T) {
	svc := &config.Service{Name: "users", Selection: config.SelectOrdered}
	c, err := ServiceCluster(svc, Options{}, true)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ValidateAll(); err != nil {
		t.Fatalf("cluster does not validate: %v", err)
	}
	if c.GetLbSubsetConfig() != nil || c.GetLbPolicy() != clusterv3.Cluster_ROUND_ROBIN || c.GetCommonLbConfig().GetHealthyPanicThreshold().GetValue() != 0 {
		t.Errorf("ordered cluster keeps the legacy subset config %v or lb_policy %v, or panics: %v", c.GetLbSubsetConfig(), c.GetLbPolicy(), c.GetCommonLbConfig())
	}
	policies := c.GetLoadBalancingPolicy().GetPolicies()
	if len(policies) != 1 || policies[0].GetTypedExtensionConfig().GetName() != overrideHostPolicyName {
		t.Fatalf("load balancing policy %v, want %s alone", policies, overrideHostPolicyName)
	}
	var oh overridehostv3.OverrideHost
	if err := policies[0].GetTypedExtensionConfig().GetTypedConfig().UnmarshalTo(&oh); err != nil {
		t.Fatal(err)
	}
	src := oh.GetOverrideHostSources()
	if len(src) != 1 || src[0].GetHeader() != "" || src[0].GetMetadata().GetKey() != contract.HostsNamespace ||
		len(src[0].GetMetadata().GetPath()) != 1 || src[0].GetMetadata().GetPath()[0].GetKey() != contract.KeyHosts {
		t.Errorf("override host sources %v, want the metadata %s:%s alone (never a header a client could send)", src, contract.HostsNamespace, contract.KeyHosts)
	}
	fallback := oh.GetFallbackPolicy().GetPolicies()
	if len(fallback) != 1 || fallback[0].GetTypedExtensionConfig().GetName() != subsetPolicyName {
		t.Fatalf("fallback policy %v, want %s alone", fallback, subsetPolicyName)
	}
	var sub subsetv3.Subset
	if err := fallback[0].GetTypedExtensionConfig().GetTypedConfig().UnmarshalTo(&sub); err != nil {
		t.Fatal(err)
	}
	if sub.GetFallbackPolicy() != subsetv3.Subset_NO_FALLBACK || sub.GetDefaultSubset() != nil || sub.GetPanicModeAny() || sub.GetListAsAny() {
		t.Errorf("subset fallback %v: want NO_FALLBACK, no default subset, no panic mode", &sub)
	}
	var sels [][]string
	for _, s := range sub.GetSubsetSelectors() {
		sels = append(sels, s.GetKeys())
	}
	if !slices.EqualFunc(sels, contract.SubsetSelectors(), slices.Equal) {
		t.Errorf("subset selectors %v, want %v", sels, contract.SubsetSelectors())
	}
	if name := sub.GetSubsetLbPolicy().GetPolicies()[0].GetTypedExtensionConfig().GetName(); name != roundRobinPolicyName {
		t.Errorf("policy within a subset %s, want %s", name, roundRobinPolicyName)
	}
}

// The ext_proc filter takes the host list's namespace only from a configuration that orders
// some service's replicas.
func TestReceivingNamespacesFollowSelection(t *testing.T) {
	ordered := &config.Config{Services: []*config.Service{{Name: "a"}, {Name: "b", Selection: config.SelectOrdered}}}
	if got := receivingNamespaces(ordered); !slices.Equal(got, []string{contract.LBNamespace, contract.HostsNamespace}) {
		t.Errorf("with ordered selection: %v", got)
	}
	subset := &config.Config{Services: []*config.Service{{Name: "a"}}}
	if got := receivingNamespaces(subset); !slices.Equal(got, []string{contract.LBNamespace}) {
		t.Errorf("without ordered selection: %v", got)
	}
}

// A partroute on a unix domain socket is an Envoy pipe address in the ext_proc cluster, listed
// once.
func TestExtProcOnAUnixSocket(t *testing.T) {
	addrs, err := grpcAddresses("ext_proc", "unix:/run/partroute/extproc.sock", nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(addrs) != 1 || addrs[0].GetPipe().GetPath() != "/run/partroute/extproc.sock" || addrs[0].GetSocketAddress() != nil {
		t.Errorf("addresses %v, want the pipe /run/partroute/extproc.sock", addrs)
	}
	if _, err := grpcAddresses("ext_proc", "", []string{"unix:/run/a.sock", "unix:/run/a.sock"}); err == nil {
		t.Error("a socket listed twice is accepted")
	}
}

// With the Google gRPC client, the ext_proc filter calls partroute's address itself, an
// unspecified host as loopback and a unix socket as it is, and one instance only.
func TestExtProcHopOptions(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.1:50051": "10.0.0.1:50051", ":50051": "127.0.0.1:50051", "[::]:50051": "[::1]:50051",
		"unix:/run/partroute/extproc.sock": "unix:/run/partroute/extproc.sock",
	} {
		if got := googleTarget(in); got != want {
			t.Errorf("googleTarget(%q) = %q, want %q", in, got, want)
		}
	}
	cfg := &config.Config{Services: []*config.Service{}}
	cfg.Cache.ResolveTimeout = 100 * time.Millisecond
	cfg.Listen.ExtProc = "127.0.0.1:50051"
	b, err := Bootstrap(cfg, nil, Options{XDSAddress: "127.0.0.1:18000", GoogleGRPC: true})
	if err != nil {
		t.Fatal(err)
	}
	if g := unpack(t, b).extProc.GetGrpcService().GetGoogleGrpc(); g.GetTargetUri() != "127.0.0.1:50051" || g.GetStatPrefix() == "" {
		t.Errorf("the filter's Google gRPC service %v, want partroute's address", g)
	}
	if _, err := Bootstrap(cfg, nil, Options{XDSAddress: "127.0.0.1:18000", GoogleGRPC: true, ExtProcAddresses: []string{"127.0.0.1:1", "127.0.0.1:2"}}); err == nil {
		t.Error("the Google gRPC client is accepted with several instances")
	}
}

// The catch-all route answers with partroute's own no_service, and skips the ext_proc hop.
func TestCatchAllSkipsExtProc(t *testing.T) {
	r := catchAllRoute()
	var per extprocv3.ExtProcPerRoute
	if err := r.GetTypedPerFilterConfig()[extProcFilterName].UnmarshalTo(&per); err != nil || !per.GetDisabled() {
		t.Errorf("catch-all per-filter config %v (%v): want ext_proc disabled", r.GetTypedPerFilterConfig(), err)
	}
	headers := map[string]string{}
	for _, h := range r.GetResponseHeadersToAdd() {
		headers[h.GetHeader().GetKey()] = h.GetHeader().GetValue()
	}
	if headers["x-partroute-error"] != "no_service" || r.GetDirectResponse().GetStatus() != 404 ||
		!strings.Contains(r.GetDirectResponse().GetBody().GetInlineString(), `"code":"no_service"`) {
		t.Errorf("catch-all answers %d %q with %v", r.GetDirectResponse().GetStatus(), r.GetDirectResponse().GetBody().GetInlineString(), headers)
	}
}
