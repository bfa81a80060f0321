package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	accesslogfilev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoverygrpc "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	// The types of the typed configurations Envoy Gateway's translation holds, so that the
	// config dump decodes.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/health_check/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/least_request/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
)

// gatewayNamespace is where the example's objects and partroute's Services live.
const gatewayNamespace = "partroute"

// The cluster addresses the test gives partroute's Services. egctl reads no EndpointSlices, and
// a headless Service's endpoints come only from them, so the headless partroute-extproc gets a
// cluster IP here; in a cluster Envoy Gateway routes to its EndpointSlices, one endpoint per pod.
// Either way the test replaces the address with partroute's own on loopback.
const (
	extprocClusterIP = "10.96.0.10"
	xdsClusterIP     = "10.96.0.20"
)

// sigterm is the line Envoy logs when the test stops it.
var sigterm = regexp.MustCompile(`(?m)^\[[^\]]+\]\[\d+\]\[warning\]\[main\] \[[^\]]*\] caught ENVOY_SIGTERM$`)

// allowedGatewayEnvoyLog lists the warning, error and critical lines Envoy may log on Envoy
// Gateway's configuration while it runs, each with why; any other fails the test.
var allowedGatewayEnvoyLog []testkit.EnvoyLogAllowance

// allowedGatewayEnvoyStopLog lists the lines Envoy may log once it has caught the test's
// SIGTERM, each with why.
var allowedGatewayEnvoyStopLog = []testkit.EnvoyLogAllowance{
	{Line: regexp.MustCompile(`^\[main\] caught ENVOY_SIGTERM$`),
		Why: "the test stops Envoy with SIGTERM, which Envoy logs at warning level"},
	{Line: regexp.MustCompile(`^\[config\] DeltaAggregatedResources gRPC config stream to xds_cluster closed: 13, upstream_reset_after_response_started\{connection_termination\}$`),
		Why: "Envoy, stopping, closes its connection to xds_cluster under its delta ADS stream, and logs the stream's end at warning level (it does so with Envoy Gateway's control plane alike); only after the SIGTERM"},
}

// unexpectedGatewayEnvoyLog judges Envoy's log: the lines before the SIGTERM by
// allowedGatewayEnvoyLog, those from it on by allowedGatewayEnvoyStopLog too.
func unexpectedGatewayEnvoyLog(log string) []string {
	running, stopping := log, ""
	if loc := sigterm.FindStringIndex(log); loc != nil {
		running, stopping = log[:loc[0]], log[loc[0]:]
	}
	return append(testkit.UnexpectedEnvoyLogLines(running, allowedGatewayEnvoyLog),
		testkit.UnexpectedEnvoyLogLines(stopping, slices.Concat(allowedGatewayEnvoyLog, allowedGatewayEnvoyStopLog))...)
}

func gatewayDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(testkit.RepoRoot(t), "deploy", "envoy-gateway")
}

// gatewayExample returns the example's files, in name order, joined into one stream of YAML
// documents, as `kubectl apply -f deploy/envoy-gateway/` applies them.
func gatewayExample(t *testing.T) []byte {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(gatewayDir(t), "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no example under deploy/envoy-gateway: %v", err)
	}
	var b bytes.Buffer
	for _, f := range files {
		b.Write(readFile(t, f))
		b.WriteString("\n---\n")
	}
	return b.Bytes()
}

// clusterObjects returns what the cluster holds beside the example that Envoy Gateway reads:
// the namespace, and partroute's Services of deploy/kubernetes (which the Helm chart renders
// alike) with the namespace `kubectl apply -n partroute` gives them and the cluster IPs above.
func clusterObjects(t *testing.T) []byte {
	t.Helper()
	var out bytes.Buffer
	out.WriteString("apiVersion: v1\nkind: Namespace\nmetadata: {name: " + gatewayNamespace + "}\n")
	dec := yaml.NewDecoder(bytes.NewReader(readFile(t, filepath.Join(testkit.RepoRoot(t), "deploy", "kubernetes", "services.yaml"))))
	ips := map[string]string{"partroute-extproc": extprocClusterIP, "partroute-xds": xdsClusterIP}
	for {
		var svc map[string]any
		if err := dec.Decode(&svc); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		meta := svc["metadata"].(map[string]any)
		meta["namespace"] = gatewayNamespace
		if ip, ok := ips[meta["name"].(string)]; ok {
			svc["spec"].(map[string]any)["clusterIP"] = ip
		}
		y, err := yaml.Marshal(svc)
		if err != nil {
			t.Fatal(err)
		}
		out.WriteString("---\n")
		out.Write(y)
	}
	return out.Bytes()
}

// egctlTranslate runs `egctl x translate` on input with args and returns its standard output.
func egctlTranslate(t *testing.T, egctl string, input []byte, args ...string) ([]byte, error) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "input.yaml")
	if err := os.WriteFile(in, input, 0o600); err != nil {
		t.Fatal(err)
	}
	args = append([]string{"x", "translate", "--from", "gateway-api", "-f", in}, args...)
	cmd := exec.CommandContext(t.Context(), egctl, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("egctl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.Bytes(), nil
}

// translation is Envoy Gateway's xDS for the example: the Envoy bootstrap its infrastructure
// starts Envoy with, and the resources its control plane serves that Envoy.
type translation struct {
	bootstrap *bootstrapv3.Bootstrap
	listeners map[string]*listenerv3.Listener
	routes    map[string]*routev3.RouteConfiguration
	clusters  map[string]*clusterv3.Cluster
	endpoints map[string]*endpointv3.ClusterLoadAssignment
}

// translateExample translates the example with the cluster's objects, as Envoy Gateway would in
// the cluster: first to Gateway API resources with their status, each of whose conditions must
// hold, then to xDS.
func translateExample(t *testing.T, egctl string) *translation {
	t.Helper()
	input := append(gatewayExample(t), clusterObjects(t)...)
	status, err := egctlTranslate(t, egctl, input, "--to", "gateway-api")
	if err != nil {
		t.Fatal(err)
	}
	var resources any
	if err := yaml.Unmarshal(status, &resources); err != nil {
		t.Fatal(err)
	}
	if n := checkConditions(t, resources, ""); n == 0 {
		t.Fatalf("egctl reported no condition of any object:\n%s", status)
	}

	out, err := egctlTranslate(t, egctl, input, "--to", "xds", "-t", "all", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var result struct {
		Xds map[string]json.RawMessage `json:"xds"`
	}
	if err := json.Unmarshal(out, &result); err != nil {
		t.Fatal(err)
	}
	key := gatewayNamespace + "/partroute"
	if len(result.Xds) != 1 || result.Xds[key] == nil {
		t.Fatalf("egctl translated %v, want the one Gateway %s", slices.Collect(maps.Keys(result.Xds)), key)
	}
	dump := &adminv3.ConfigDump{}
	if err := protojson.Unmarshal(result.Xds[key], dump); err != nil {
		t.Fatalf("Envoy Gateway's config dump: %v", err)
	}
	tr := &translation{listeners: map[string]*listenerv3.Listener{}, routes: map[string]*routev3.RouteConfiguration{},
		clusters: map[string]*clusterv3.Cluster{}, endpoints: map[string]*endpointv3.ClusterLoadAssignment{}}
	unpack := func(a *anypb.Any) proto.Message {
		m, err := a.UnmarshalNew()
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	for _, c := range dump.GetConfigs() {
		switch d := unpack(c).(type) {
		case *adminv3.BootstrapConfigDump:
			tr.bootstrap = d.GetBootstrap()
		case *adminv3.ListenersConfigDump:
			for _, l := range d.GetDynamicListeners() {
				m := unpack(l.GetActiveState().GetListener()).(*listenerv3.Listener)
				tr.listeners[m.GetName()] = m
			}
		case *adminv3.RoutesConfigDump:
			for _, r := range d.GetDynamicRouteConfigs() {
				m := unpack(r.GetRouteConfig()).(*routev3.RouteConfiguration)
				tr.routes[m.GetName()] = m
			}
		case *adminv3.ClustersConfigDump:
			for _, c := range d.GetDynamicActiveClusters() {
				m := unpack(c.GetCluster()).(*clusterv3.Cluster)
				tr.clusters[m.GetName()] = m
			}
		case *adminv3.EndpointsConfigDump:
			for _, e := range d.GetDynamicEndpointConfigs() {
				m := unpack(e.GetEndpointConfig()).(*endpointv3.ClusterLoadAssignment)
				tr.endpoints[m.GetClusterName()] = m
			}
		}
	}
	if tr.bootstrap == nil {
		t.Fatal("Envoy Gateway's translation has no bootstrap")
	}
	return tr
}

// checkConditions fails the test on every status condition under v that does not hold, and
// returns how many it saw. at is where v is, for the messages.
func checkConditions(t *testing.T, v any, at string) int {
	t.Helper()
	n := 0
	switch v := v.(type) {
	case map[string]any:
		if conds, ok := v["conditions"].([]any); ok {
			for _, c := range conds {
				c := c.(map[string]any)
				n++
				if c["status"] != "True" {
					t.Errorf("%s: condition %v is %v: %v (%v)", at, c["type"], c["status"], c["reason"], c["message"])
				}
			}
		}
		name := at
		if meta, ok := v["metadata"].(map[string]any); ok {
			name = fmt.Sprintf("%s %v/%v", v["kind"], meta["namespace"], meta["name"])
		}
		for k, e := range v {
			if k != "conditions" {
				n += checkConditions(t, e, name)
			}
		}
	case []any:
		for _, e := range v {
			n += checkConditions(t, e, at)
		}
	}
	return n
}

// serviceCluster is the name Envoy Gateway gives the cluster of the one rule of the HTTPRoute
// named after a service.
func serviceCluster(service string) string {
	return "httproute/" + gatewayNamespace + "/" + service + "/rule/0"
}

// extprocCluster is the name Envoy Gateway gives the cluster of the EnvoyExtensionPolicy's
// ext_proc backend.
const extprocCluster = "envoyextensionpolicy/" + gatewayNamespace + "/partroute/extproc/0"

// checkTranslation checks what the example makes of Envoy Gateway's xDS for cfg's services: a
// route per service on its path prefix to the service's cluster, partroute's ext_proc filter on
// each, with the settings the generator writes, and every service cluster patched. A patch that
// does not apply is no error for egctl, which drops it and says so only in a status it does not
// print: these checks are what catches one.
func checkTranslation(t *testing.T, tr *translation, cfg *config.Config) {
	t.Helper()
	// The routes: each service's path prefix to its cluster, with the ext_proc filter on.
	routed := map[string]string{}
	for _, rc := range tr.routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				prefix := r.GetMatch().GetPathSeparatedPrefix()
				routed[prefix] = r.GetRoute().GetCluster()
				if _, ok := r.GetTypedPerFilterConfig()["envoy.filters.http.ext_proc/"+extprocCluster]; !ok {
					t.Errorf("route %s does not turn partroute's ext_proc filter on", r.GetName())
				}
			}
		}
	}
	want := map[string]string{}
	for _, svc := range cfg.Services {
		want[svc.Match.PathPrefix] = serviceCluster(svc.Name)
	}
	if !maps.Equal(routed, want) {
		t.Errorf("Envoy Gateway routes path prefixes to %v, want each service's prefix to its cluster, %v", routed, want)
	}

	// The ext_proc filter.
	var filter *extprocv3.ExternalProcessor
	for _, l := range tr.listeners {
		for _, hcm := range connectionManagers(t, l) {
			for _, f := range hcm.GetHttpFilters() {
				if f.GetName() != "envoy.filters.http.ext_proc/"+extprocCluster {
					continue
				}
				filter = &extprocv3.ExternalProcessor{}
				if err := f.GetTypedConfig().UnmarshalTo(filter); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if filter == nil {
		t.Fatal("Envoy Gateway's listeners have no ext_proc filter of the EnvoyExtensionPolicy")
	}
	pm := filter.GetProcessingMode()
	if pm.GetRequestHeaderMode() != extprocv3.ProcessingMode_SEND || pm.GetResponseHeaderMode() != extprocv3.ProcessingMode_SKIP ||
		pm.GetRequestBodyMode() != extprocv3.ProcessingMode_NONE || pm.GetResponseBodyMode() != extprocv3.ProcessingMode_NONE {
		t.Errorf("ext_proc processing mode %v, want the request headers only", pm)
	}
	if filter.GetFailureModeAllow() {
		t.Error("ext_proc failure_mode_allow is true: a request partroute cannot decide would go on without a partition")
	}
	if got := filter.GetMessageTimeout().AsDuration(); got != contract.DefaultMessageTimeout {
		t.Errorf("ext_proc message timeout %v, want %v", got, contract.DefaultMessageTimeout)
	}
	if got := filter.GetMetadataOptions().GetReceivingNamespaces().GetUntyped(); !slices.Equal(got, []string{contract.LBNamespace}) {
		t.Errorf("ext_proc receives metadata in %v, want [%s]", got, contract.LBNamespace)
	}
	if hc := tr.clusters[extprocCluster].GetHealthChecks(); len(hc) != 1 || hc[0].GetGrpcHealthCheck().GetServiceName() != contract.ExtProcService() {
		t.Errorf("the ext_proc cluster's health checks are %v, want one gRPC check of %s", hc, contract.ExtProcService())
	}

	// The patched clusters.
	xds := tr.clusters[envoyconfig.XDSCluster]
	if xds == nil {
		t.Fatalf("Envoy Gateway has no cluster %s: the patch that adds it did not apply", envoyconfig.XDSCluster)
	}
	for _, svc := range cfg.Services {
		c := tr.clusters[serviceCluster(svc.Name)]
		if c == nil {
			t.Errorf("Envoy Gateway has no cluster %s for service %s", serviceCluster(svc.Name), svc.Name)
			continue
		}
		eds := c.GetEdsClusterConfig()
		src := eds.GetEdsConfig().GetApiConfigSource()
		if eds.GetServiceName() != svc.Name || src.GetApiType() != corev3.ApiConfigSource_DELTA_GRPC ||
			len(src.GetGrpcServices()) != 1 || src.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != envoyconfig.XDSCluster {
			t.Errorf("cluster %s takes its endpoints from %v, want %s over delta EDS from %s", c.GetName(), eds, svc.Name, envoyconfig.XDSCluster)
		}
		if c.GetLoadBalancingPolicy() != nil {
			t.Errorf("cluster %s keeps Envoy Gateway's load_balancing_policy, beside which Envoy ignores lb_subset_config", c.GetName())
		}
		sub := c.GetLbSubsetConfig()
		var selectors [][]string
		for _, s := range sub.GetSubsetSelectors() {
			selectors = append(selectors, s.GetKeys())
		}
		if sub == nil || sub.GetFallbackPolicy() != clusterv3.Cluster_LbSubsetConfig_NO_FALLBACK ||
			!slices.EqualFunc(selectors, contract.SubsetSelectors(), slices.Equal) {
			t.Errorf("cluster %s has lb_subset_config %v, want selectors %v with NO_FALLBACK", c.GetName(), sub, contract.SubsetSelectors())
		}
		if th := c.GetCommonLbConfig().GetHealthyPanicThreshold(); th == nil || th.GetValue() != 0 {
			t.Errorf("cluster %s has healthy panic threshold %v, want 0", c.GetName(), th)
		}
	}
}

// connectionManagers returns the HTTP connection managers of a listener's filter chains.
func connectionManagers(t *testing.T, l *listenerv3.Listener) []*hcmv3.HttpConnectionManager {
	t.Helper()
	var out []*hcmv3.HttpConnectionManager
	for _, fc := range append(slices.Clone(l.GetFilterChains()), l.GetDefaultFilterChain()) {
		for _, f := range fc.GetFilters() {
			hcm := &hcmv3.HttpConnectionManager{}
			if f.GetTypedConfig().MessageIs(hcm) {
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				out = append(out, hcm)
			}
		}
	}
	return out
}

// localRun is what the test changes of Envoy Gateway's xDS to run it on this machine.
type localRun struct {
	dir                string // where access logs go
	admin, listen      string // Envoy's admin listener and the Gateway's listener
	controlPlane       string // the test's stand-in for Envoy Gateway's control plane
	extproc, xdsServer string // partroute's listeners
}

// localize rewrites Envoy Gateway's xDS so that it runs on loopback, as little as it can; every
// rewrite says why.
func localize(t *testing.T, tr *translation, r localRun) {
	t.Helper()
	b := tr.bootstrap
	setAddr := func(sa *corev3.SocketAddress, addr string) {
		host, port, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		p, err := strconv.ParseUint(port, 10, 32)
		if err != nil {
			t.Fatal(err)
		}
		sa.Address, sa.PortSpecifier = host, &corev3.SocketAddress_PortValue{PortValue: uint32(p)}
	}
	freePort := func() string { return testkit.FreePorts(t, 1)[0] }
	endpointsOf := func(cla *endpointv3.ClusterLoadAssignment) []*corev3.SocketAddress {
		var out []*corev3.SocketAddress
		for _, l := range cla.GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				out = append(out, e.GetEndpoint().GetAddress().GetSocketAddress())
			}
		}
		return out
	}

	// Envoy Gateway's infrastructure passes the bootstrap with --config-yaml and names the node
	// with --service-node and --service-cluster; the kubelet expands $(ENVOY_SERVICE_ZONE) in
	// those arguments from the pod's environment. The test gives the bootstrap a node of its
	// own and a zone instead.
	b.Node.Id, b.Node.Cluster = "envoy-partroute", "partroute"
	if b.GetNode().GetLocality().GetZone() != "$(ENVOY_SERVICE_ZONE)" {
		t.Fatalf("Envoy Gateway's bootstrap locality is %v, want the zone from the pod's environment", b.GetNode().GetLocality())
	}
	b.Node.Locality.Zone = "local"
	// The admin listener, on a free port of loopback; prometheus_stats fronts it.
	setAddr(b.GetAdmin().GetAddress().GetSocketAddress(), r.admin)
	for _, c := range b.GetStaticResources().GetClusters() {
		switch c.GetName() {
		case "prometheus_stats":
			setAddr(endpointsOf(c.GetLoadAssignment())[0], r.admin)
		case "xds_cluster":
			// Envoy Gateway's control plane, reached over mutual TLS with certificates its
			// infrastructure mounts under /sds: here the test's own, in plaintext on loopback.
			setAddr(endpointsOf(c.GetLoadAssignment())[0], r.controlPlane)
			c.TransportSocket = nil
		}
	}
	// The statistics listener, on 0.0.0.0:19001 in the pod: on a free port of loopback.
	for _, l := range b.GetStaticResources().GetListeners() {
		setAddr(l.GetAddress().GetSocketAddress(), freePort())
	}

	// The served listeners: the readiness listener and the Gateway's, on free ports of loopback
	// instead of 19003 and 10080 of the pod. Their access logs go to /dev/stdout, which is
	// Envoy's log here too: the test writes them to a file of their own.
	for _, l := range tr.listeners {
		addr := freePort()
		if l.GetName() == gatewayNamespace+"/partroute/http" {
			addr = r.listen
		}
		setAddr(l.GetAddress().GetSocketAddress(), addr)
		redirectAccessLogs(t, l.GetAccessLog(), r.dir)
		for _, fc := range append(slices.Clone(l.GetFilterChains()), l.GetDefaultFilterChain()) {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if !f.GetTypedConfig().MessageIs(hcm) {
					continue
				}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					t.Fatal(err)
				}
				redirectAccessLogs(t, hcm.GetAccessLog(), r.dir)
				a, err := anypb.New(hcm)
				if err != nil {
					t.Fatal(err)
				}
				f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: a}
			}
		}
	}
	// partroute's ext_proc Service: partroute's ext_proc listener.
	eps := endpointsOf(tr.endpoints[extprocCluster])
	if len(eps) != 1 || eps[0].GetAddress() != extprocClusterIP {
		t.Fatalf("the ext_proc cluster's endpoints are %v, want partroute-extproc's %s", eps, extprocClusterIP)
	}
	setAddr(eps[0], r.extproc)
	// partroute's xDS Service, by its DNS name in the cluster: partroute's xDS listener.
	eps = endpointsOf(tr.clusters[envoyconfig.XDSCluster].GetLoadAssignment())
	if len(eps) != 1 || eps[0].GetAddress() != "partroute-xds.partroute.svc.cluster.local" {
		t.Fatalf("the %s cluster reaches %v, want partroute-xds.partroute.svc.cluster.local", envoyconfig.XDSCluster, eps)
	}
	setAddr(eps[0], r.xdsServer)
	// In a cluster Envoy Gateway serves the endpoints of the Envoy proxy's own Service under the
	// bootstrap's local_cluster, for zone-aware routing; egctl has no such Service. The test
	// serves it empty.
	local := b.GetClusterManager().GetLocalClusterName()
	if local != "" && tr.endpoints[local] == nil {
		tr.endpoints[local] = &endpointv3.ClusterLoadAssignment{ClusterName: local}
	}
}

// redirectAccessLogs points the file access logs among logs that write to /dev/stdout at a
// file in dir.
func redirectAccessLogs(t *testing.T, logs []*accesslogv3.AccessLog, dir string) {
	t.Helper()
	for _, al := range logs {
		fl := &accesslogfilev3.FileAccessLog{}
		if !al.GetTypedConfig().MessageIs(fl) {
			continue
		}
		if err := al.GetTypedConfig().UnmarshalTo(fl); err != nil {
			t.Fatal(err)
		}
		if fl.GetPath() != "/dev/stdout" {
			continue
		}
		fl.Path = filepath.Join(dir, "access.log")
		a, err := anypb.New(fl)
		if err != nil {
			t.Fatal(err)
		}
		al.ConfigType = &accesslogv3.AccessLog_TypedConfig{TypedConfig: a}
	}
}

// serveControlPlane serves the translated listeners, routes, clusters and endpoints over ADS on
// lis until the test ends, as Envoy Gateway's control plane serves its Envoys (delta xDS, which
// its bootstrap asks for).
func serveControlPlane(t *testing.T, lis net.Listener, tr *translation) {
	t.Helper()
	res := map[resource.Type][]types.Resource{}
	for _, l := range tr.listeners {
		res[resource.ListenerType] = append(res[resource.ListenerType], l)
	}
	for _, r := range tr.routes {
		res[resource.RouteType] = append(res[resource.RouteType], r)
	}
	for _, c := range tr.clusters {
		res[resource.ClusterType] = append(res[resource.ClusterType], c)
	}
	for _, e := range tr.endpoints {
		res[resource.EndpointType] = append(res[resource.EndpointType], e)
	}
	snap, err := cachev3.NewSnapshot("1", res)
	if err != nil {
		t.Fatal(err)
	}
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	if err := cache.SetSnapshot(context.Background(), tr.bootstrap.GetNode().GetId(), snap); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	gs := grpc.NewServer()
	discoverygrpc.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, cache, nil))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(func() { cancel(); gs.Stop() })
}

// chartDefaultFiles returns the Helm chart's default partroute.yaml and naming.yaml, the
// partroute the example fronts: the example configuration, listening on 0.0.0.0, with xDS and
// without TLS.
func chartDefaultFiles(t *testing.T) (cfgYAML, namingYAML string) {
	t.Helper()
	var values struct {
		Config struct {
			PartrouteYaml string `yaml:"partrouteYaml"`
		} `yaml:"config"`
		Naming struct {
			NamingYaml string `yaml:"namingYaml"`
		} `yaml:"naming"`
	}
	if err := yaml.Unmarshal(readFile(t, filepath.Join(chartDir(t), "values.yaml")), &values); err != nil {
		t.Fatal(err)
	}
	return values.Config.PartrouteYaml, values.Naming.NamingYaml
}

// replicaAddr matches a replica address of the chart's naming view.
var replicaAddr = regexp.MustCompile(`127\.0\.0\.1:\d+`)

// TestEnvoyGatewayExample translates the example of deploy/envoy-gateway with Envoy Gateway's
// own translator (egctl, the Makefile's EGCTL_VERSION), checks what it makes of it, and runs a
// real Envoy on the result against a real partroute, on the Helm chart's default files, and
// real backends playing the replicas of its naming view: writes reach the primary of the
// partition partroute chose, reads follow each service's read policy, and Envoy logs no warning
// the test does not allow. egctl and Envoy missing fail the test.
func TestEnvoyGatewayExample(t *testing.T) {
	egctl := makeBinary(t, "egctl", "EGCTL_VERSION", "github.com/envoyproxy/gateway")
	envoyBin, err := envoyconfig.FindEnvoy()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()

	// partroute: the chart's files, its listeners on loopback, each replica on a free port.
	cfgYAML, namingYAML := chartDefaultFiles(t)
	ports := testkit.FreePorts(t, 2)
	extprocAddr, xdsAddr := ports[0], ports[1]
	cfgPath, namingPath := filepath.Join(dir, "partroute.yaml"), filepath.Join(dir, "naming.yaml")
	if err := os.WriteFile(cfgPath, []byte(cfgYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	editFile(t, cfgPath, "0.0.0.0:50051", extprocAddr)
	editFile(t, cfgPath, "0.0.0.0:18000", xdsAddr)
	editFile(t, cfgPath, "0.0.0.0:9901", "127.0.0.1:0")
	moved := map[string]string{}
	namingYAML = replicaAddr.ReplaceAllStringFunc(namingYAML, func(a string) string {
		if moved[a] == "" {
			moved[a] = testkit.FreePorts(t, 1)[0]
		}
		return moved[a]
	})
	if err := os.WriteFile(namingPath, []byte(namingYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.LoadViewFile(namingPath, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var specs []loadtest.BackendSpec
	for _, sv := range view.Services {
		for _, p := range sv.Partitions {
			for _, r := range p.Replicas {
				specs = append(specs, loadtest.BackendSpec{Addr: r.Address, Replica: r.Address, Role: r.Role.String(), Partition: p.ID})
			}
		}
	}
	backends, err := loadtest.StartReplicas(specs)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(backends.Close)
	startServe(t, cfgPath)

	// Envoy Gateway's translation, checked, then made to run here.
	tr := translateExample(t, egctl)
	checkTranslation(t, tr, cfg)
	if t.Failed() {
		t.FailNow()
	}
	ports = testkit.FreePorts(t, 2)
	admin, listen := ports[0], ports[1]
	cp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	localize(t, tr, localRun{dir: dir, admin: admin, listen: listen, controlPlane: cp.Addr().String(), extproc: extprocAddr, xdsServer: xdsAddr})
	serveControlPlane(t, cp, tr)
	bootPath := filepath.Join(dir, "envoy.json")
	boot, err := protojson.Marshal(tr.bootstrap)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bootPath, boot, 0o600); err != nil {
		t.Fatal(err)
	}
	envoyLog := &testkit.LogBuffer{}
	envoy, err := envoyconfig.StartEnvoy(envoyBin, bootPath, admin, envoyLog)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			if err := envoy.Stop(5 * time.Second); err != nil {
				t.Errorf("stopping Envoy: %v", err)
			}
		}
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			access, _ := os.ReadFile(filepath.Join(dir, "access.log"))
			t.Logf("Envoy's log:\n%s\nits access log:\n%s", envoyLog.String(), access)
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	if err := envoy.WaitReady(ctx, extprocCluster); err != nil {
		t.Fatal(err)
	}

	client := &http.Client{Timeout: 5 * time.Second}
	send := func(method, host, path string, header http.Header) (int, loadtest.Echo, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(t.Context(), method, "http://"+listen+path, http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		maps.Copy(req.Header, header)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("%s %s%s: %v", method, host, path, err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var e loadtest.Echo
		if resp.StatusCode == http.StatusOK {
			if err := json.Unmarshal(body, &e); err != nil {
				t.Fatalf("%s %s%s: %v\n%s", method, host, path, err, body)
			}
		}
		return resp.StatusCode, e, string(body)
	}
	cases := []struct {
		name, method, host, path string
		header                   http.Header
		status                   int
		partition                string // when set, the partition partroute must choose
		roles                    []string
	}{
		{name: "users write", method: http.MethodPut, host: "api.example.com", path: "/api/users/12", status: 200, partition: "users-1", roles: []string{"primary"}},
		{name: "users write, a client-sent partition ignored", method: http.MethodPut, host: "api.example.com", path: "/api/users/12",
			header: http.Header{"X-Partition-Id": {"users-3"}, "X-Partition-Role": {"secondary"}}, status: 200, partition: "users-1", roles: []string{"primary"}},
		{name: "users read (any replica)", method: http.MethodGet, host: "api.example.com", path: "/api/users/12", status: 200, partition: "users-1", roles: []string{"primary", "secondary"}},
		{name: "users key out of range", method: http.MethodPut, host: "api.example.com", path: "/api/users/99", status: 400},
		{name: "users on another authority: no service, no replica", method: http.MethodPut, host: "api.example.org", path: "/api/users/12", status: 503},
		{name: "sessions write", method: http.MethodPut, host: "api.example.com", path: "/api/sessions", header: http.Header{"Cookie": {"session=abc"}}, status: 200, roles: []string{"primary"}},
		{name: "sessions read (secondaries)", method: http.MethodGet, host: "api.example.com", path: "/api/sessions", header: http.Header{"Cookie": {"session=abc"}}, status: 200, roles: []string{"secondary"}},
		{name: "regions write", method: http.MethodPost, host: "api.example.com", path: "/api/regions/eu", status: 200, roles: []string{"primary"}},
		{name: "regions read (primary)", method: http.MethodGet, host: "api.example.com", path: "/api/regions/eu", status: 200, roles: []string{"primary"}},
		{name: "regions unknown name", method: http.MethodGet, host: "api.example.com", path: "/api/regions/mars", status: 400},
		{name: "settings write", method: http.MethodPut, host: "api.example.com", path: "/api/settings", status: 200, roles: []string{"primary"}},
	}
	// Envoy takes each service's endpoints from partroute's xDS server once it has the
	// service's cluster: until then a request gets 503.
	for _, tc := range cases {
		if tc.status == http.StatusOK {
			testkit.WaitFor(t, tc.name+" to be served", 20*time.Second, func() bool {
				code, _, _ := send(tc.method, tc.host, tc.path, tc.header)
				return code == http.StatusOK
			})
		}
	}
	for _, tc := range cases {
		for range 4 { // reads may go to any of several replicas: each must fit
			code, e, body := send(tc.method, tc.host, tc.path, tc.header)
			if code != tc.status {
				t.Errorf("%s: %s %s%s answered %d, want %d\n%s", tc.name, tc.method, tc.host, tc.path, code, tc.status, body)
				break
			}
			if code != http.StatusOK {
				continue
			}
			// A backend refuses (421) a request labelled with a partition other than the
			// one it holds, so a 200 is from a replica of the partition partroute chose.
			if tc.partition != "" && e.Partition != tc.partition {
				t.Errorf("%s: served by %s of partition %s, want %s", tc.name, e.Replica, e.Partition, tc.partition)
			}
			if !slices.Contains(tc.roles, e.ReplicaRole) {
				t.Errorf("%s: served by %s, a %s of %s, want a replica of role %v", tc.name, e.Replica, e.ReplicaRole, e.Partition, tc.roles)
			}
			if b := backends.Get(e.Backend); b == nil {
				t.Errorf("%s: served by %s, no replica of the naming view", tc.name, e.Backend)
			}
		}
	}
	for _, b := range backends.All() {
		if n := b.Misrouted(); n > 0 {
			t.Errorf("replica %s (%s of %s) was sent %d request(s) of another partition", b.Addr, b.Role, b.Partition, n)
		}
	}

	stop()
	if bad := unexpectedGatewayEnvoyLog(envoyLog.String()); len(bad) > 0 {
		t.Errorf("Envoy logged %d line(s) that no entry of allowedGatewayEnvoyLog (or, once stopping, allowedGatewayEnvoyStopLog) allows:\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
}

// TestEnvoyGatewayExampleDecodedStrictly checks that egctl refuses an object with a field its
// API types do not have, as the API server would: that is what makes its translation of the
// example also a strict check of every object against Envoy Gateway's and Gateway API's types,
// which the module does not import.
func TestEnvoyGatewayExampleDecodedStrictly(t *testing.T) {
	egctl := makeBinary(t, "egctl", "EGCTL_VERSION", "github.com/envoyproxy/gateway")
	example := gatewayExample(t)
	misspelt := bytes.Replace(example, []byte("failOpen:"), []byte("failOpn:"), 1)
	if bytes.Equal(misspelt, example) {
		t.Fatal("the example has no failOpen to misspell")
	}
	_, err := egctlTranslate(t, egctl, append(misspelt, clusterObjects(t)...), "--to", "xds", "-t", "all", "-o", "json")
	if err == nil || !strings.Contains(err.Error(), "unknown field") {
		t.Errorf("egctl translates an EnvoyExtensionPolicy with a misspelt failOpen: %v", err)
	}
}
