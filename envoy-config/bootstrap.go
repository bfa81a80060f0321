package envoyconfig

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	overridehostv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/override_host/v3"
	roundrobinv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/round_robin/v3"
	subsetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/load_balancing_policies/subset/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	metadatav3 "github.com/envoyproxy/go-control-plane/envoy/type/metadata/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
)

// Names the generated bootstrap uses, which tests and operators look for in Envoy's admin
// output.
const (
	// ExtProcCluster is the cluster through which Envoy reaches partroute's ext_proc server.
	ExtProcCluster = "partroute_extproc"
	// XDSCluster is the cluster through which Envoy reaches partroute's ADS server.
	XDSCluster = "partroute_xds"
	// DefaultNodeID identifies Envoy to partroute's xDS server when Options.NodeID is empty.
	DefaultNodeID = "partroute-envoy"
)

// Defaults of the options left at their zero value.
const (
	DefaultListenAddress       = "127.0.0.1:10000"
	DefaultAdminAddress        = "127.0.0.1:9902"
	DefaultConnectTimeout      = time.Second
	DefaultHealthCheckInterval = time.Second
)

// Extension and filter names, as Envoy registers them.
const (
	hcmFilterName       = "envoy.filters.network.http_connection_manager"
	extProcFilterName   = "envoy.filters.http.ext_proc"
	routerFilterName    = "envoy.filters.http.router"
	httpProtocolOptions = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	previousHostsName   = "envoy.retry_host_predicates.previous_hosts"
	// The load balancing policies of ordered selection, as Envoy registers them.
	overrideHostPolicyName = "envoy.load_balancing_policies.override_host"
	subsetPolicyName       = "envoy.load_balancing_policies.subset"
	roundRobinPolicyName   = "envoy.load_balancing_policies.round_robin"
	// retryOn retries a connection that failed or was reset, and a replica's answer of
	// retriableStatusCode. Envoy's retry_on has no token for a single status: a "503" there is
	// ignored, with a warning in Envoy's log.
	retryOn             = "connect-failure,reset,retriable-status-codes"
	retriableStatusCode = 503
	// regexDefaultSafeLen is the length up to which an authority regex compiles within Envoy's
	// default RE2 program size limit of 100, with room to spare.
	regexDefaultSafeLen  = 80
	hostSelectionRetries = 3
	// extProcRetryOn, extProcRetries and extProcRetryBackOff are the retry policy of the
	// ext_proc stream (extProcRetryPolicy).
	extProcRetryOn      = "connect-failure,refused-stream"
	extProcRetries      = 2
	extProcRetryBackOff = 5 * time.Millisecond
)

// Options are the settings of the bootstrap that are not in partroute's configuration.
type Options struct {
	// ListenAddress is where Envoy accepts client traffic (DefaultListenAddress when empty). An
	// empty host listens on every IPv4 address.
	ListenAddress string
	// AdminAddress is Envoy's admin endpoint (DefaultAdminAddress when empty); its /ready and
	// /clusters tell when Envoy can serve. Keep it on loopback: it can stop Envoy.
	AdminAddress string
	// ExtProcAddress is where Envoy reaches partroute's ext_proc server; empty means the
	// configuration's listen.extproc. An unspecified host (":50051", "0.0.0.0:50051") means
	// loopback, since a server listening on every address is reachable there.
	ExtProcAddress string
	// ExtProcAddresses are several partroute instances' ext_proc servers, one endpoint of the
	// ext_proc cluster each, in place of ExtProcAddress (set one or the other). Envoy balances
	// the streams over the instances that pass their health check and are not ejected by
	// outlier detection.
	ExtProcAddresses []string
	// MessageTimeout is the ext_proc filter's message_timeout (contract.DefaultMessageTimeout when
	// zero). It must exceed the configuration's cache.resolveTimeout, so that partroute answers
	// 503 itself before Envoy gives up on it.
	MessageTimeout time.Duration
	// ConnectTimeout bounds connecting to partroute and to replicas (DefaultConnectTimeout
	// when zero).
	ConnectTimeout time.Duration
	// HealthCheckInterval is how often Envoy checks partroute's gRPC health
	// (DefaultHealthCheckInterval when zero).
	HealthCheckInterval time.Duration
	// Retry adds a retry policy to every service route; nil means no retries.
	Retry *Retry
	// XDSAddress, when set, makes the service clusters and their endpoints come from
	// partroute's ADS server at this address instead of being written into the bootstrap:
	// Envoy then follows every change of the naming view. The listener and routes stay static.
	XDSAddress string
	// XDSAddresses are several partroute instances' ADS servers, in place of XDSAddress (set
	// one or the other). Envoy holds one ADS stream, to one of them, and opens it to another
	// when that instance goes away; the instances serve the same snapshot for the same view.
	XDSAddresses []string
	// NodeID names this Envoy to the xDS server (DefaultNodeID when empty). Give each Envoy
	// its own, so that partroute can tell which of them acknowledged an update.
	NodeID string
	// ResponseHeaders sends response headers to partroute too, which failure-driven
	// re-resolution needs; otherwise Envoy skips that round trip.
	ResponseHeaders bool
	// NoExtProc leaves the ext_proc filter out, so that requests go straight to the router. It
	// is the load test's baseline for the cost of the ext_proc hop; without partroute's
	// criteria, a subset cluster with NO_FALLBACK finds no host for any request.
	NoExtProc bool
	// TLS, when set, makes Envoy reach partroute's ext_proc and xDS servers over TLS (mutual
	// TLS with a client certificate); nil means plaintext. Its SDS files (SecretFiles) must
	// be written before Envoy starts.
	TLS *UpstreamTLS
	// GoogleGRPC makes the ext_proc filter call partroute with Envoy's Google gRPC client
	// (google_grpc, a channel of its own to the one ExtProcAddress) instead of Envoy's own
	// client through the ext_proc cluster (envoy_grpc), to measure the two
	// (docs/benchmarks.md). The channel has no health check, outlier detection or retry of
	// the cluster's, and it does not support TLS here.
	GoogleGRPC bool
}

// Retry is the retry policy of the service routes. Envoy does not call ext_proc again for a
// retry: the retry goes to the same partition and role, to another replica when there is one.
type Retry struct {
	// NumRetries is the number of retries after the first attempt, at least 1.
	NumRetries int
	// PerTryTimeout bounds each attempt; zero leaves only the route's overall timeout.
	PerTryTimeout time.Duration
}

// Bootstrap builds the Envoy bootstrap for a configuration and its naming view and validates
// it, typed extension configs included.
func Bootstrap(cfg *config.Config, view *resolver.View, opts Options) (*bootstrapv3.Bootstrap, error) {
	if cfg == nil || (view == nil && !opts.fromXDS()) {
		return nil, errors.New("envoy bootstrap: a configuration is required, and a naming view unless the clusters come from xDS")
	}
	opts = withDefaults(cfg, opts)
	if opts.MessageTimeout <= cfg.Cache.ResolveTimeout {
		return nil, fmt.Errorf("envoy bootstrap: ext_proc message timeout %v must exceed the configuration's cache.resolveTimeout %v, or Envoy times out before partroute can answer", opts.MessageTimeout, cfg.Cache.ResolveTimeout)
	}
	if opts.TLS != nil {
		if err := opts.TLS.check(); err != nil {
			return nil, err
		}
	}
	if opts.GoogleGRPC && (opts.TLS != nil || len(opts.ExtProcAddresses) > 0) {
		return nil, errors.New("envoy bootstrap: the Google gRPC client reaches one partroute instance in plaintext: not with TLS or several ext_proc addresses")
	}
	if s := cfg.Headers.SetBy.OrDefault(); s != config.SetByExtProc && s != config.SetByEnvoy && s != config.SetByNone {
		return nil, fmt.Errorf("envoy bootstrap: headers.setBy %v is not extproc, envoy or none", s)
	}
	if opts.Retry != nil && opts.Retry.NumRetries < 1 {
		return nil, fmt.Errorf("envoy bootstrap: a retry policy needs at least 1 retry, not %d", opts.Retry.NumRetries)
	}
	listenAddr, err := socketAddress(opts.ListenAddress, "0.0.0.0")
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: listen address: %w", err)
	}
	adminAddr, err := socketAddress(opts.AdminAddress, "")
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: admin address: %w", err)
	}
	extProcAddrs, err := grpcAddresses("ext_proc", opts.ExtProcAddress, opts.ExtProcAddresses)
	if err != nil {
		return nil, err
	}

	hcm, err := connectionManager(cfg, opts)
	if err != nil {
		return nil, err
	}
	clusters := []*clusterv3.Cluster{grpcCluster(ExtProcCluster, extProcAddrs, opts, contract.ExtProcService())}
	var dynamic *bootstrapv3.Bootstrap_DynamicResources
	if opts.fromXDS() {
		xdsAddrs, err := grpcAddresses("xds", opts.XDSAddress, opts.XDSAddresses)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, grpcCluster(XDSCluster, xdsAddrs, opts, ""))
		dynamic = &bootstrapv3.Bootstrap_DynamicResources{
			AdsConfig: &corev3.ApiConfigSource{
				ApiType:             corev3.ApiConfigSource_GRPC,
				TransportApiVersion: corev3.ApiVersion_V3,
				GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
					EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: XDSCluster},
				}}},
				SetNodeOnFirstMessageOnly: true,
			},
			CdsConfig: adsSource(),
		}
	}
	for _, svc := range cfg.Services {
		if svc.Name == ExtProcCluster || svc.Name == XDSCluster {
			return nil, fmt.Errorf("envoy bootstrap: service %q has the name of one of partroute's own clusters; rename the service", svc.Name)
		}
		if dynamic != nil {
			continue // served over ADS
		}
		c, err := serviceCluster(svc, view, opts)
		if err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}

	b := &bootstrapv3.Bootstrap{
		Node:             &corev3.Node{Id: opts.NodeID, Cluster: "partroute"},
		DynamicResources: dynamic,
		Admin: &bootstrapv3.Admin{
			Address: adminAddr,
		},
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{{
				Name:    "partroute",
				Address: listenAddr,
				FilterChains: []*listenerv3.FilterChain{{
					Filters: []*listenerv3.Filter{{
						Name:       hcmFilterName,
						ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)},
					}},
				}},
			}},
			Clusters: clusters,
		},
	}
	runtime := map[string]*structpb.Value{}
	if limit := regexProgramLimit(cfg); limit > 0 {
		runtime["re2.max_program_size.error_level"] = structpb.NewNumberValue(float64(limit))
	}
	if len(runtime) > 0 {
		b.LayeredRuntime = &bootstrapv3.LayeredRuntime{Layers: []*bootstrapv3.RuntimeLayer{
			{Name: "static", LayerSpecifier: &bootstrapv3.RuntimeLayer_StaticLayer{StaticLayer: &structpb.Struct{Fields: runtime}}},
			// Envoy has an admin layer (/runtime_modify) only when the runtime lists one.
			{Name: "admin", LayerSpecifier: &bootstrapv3.RuntimeLayer_AdminLayer_{AdminLayer: &bootstrapv3.RuntimeLayer_AdminLayer{}}},
		}}
	}
	if err := Validate(b); err != nil {
		return nil, fmt.Errorf("envoy bootstrap: %w", err)
	}
	return b, nil
}

// regexProgramLimit returns the RE2 program size limit the authority regexes need, or 0 when
// Envoy's default of 100 is enough. Host names may be up to 253 characters, and Envoy refuses
// the whole bootstrap when one regex compiles past the limit. For these expressions the
// program is smaller than the expression is long (Envoy 1.40 measured a 142-character one at
// 123), so twice the length is a generous bound. The limit guards against runaway
// expressions; these are linear in one host name.
func regexProgramLimit(cfg *config.Config) int {
	longest := 0
	for _, svc := range cfg.Services {
		if svc.Match.Authority != "" {
			if re, err := authorityRegex(svc.Match.Authority); err == nil {
				longest = max(longest, len(re))
			}
		}
	}
	if longest <= regexDefaultSafeLen {
		return 0
	}
	return 2*longest + 100
}

// googleTarget is the target URI of Envoy's Google gRPC client for an ext_proc address: a unix
// socket as it is, and an unspecified host as loopback, as the ext_proc cluster has it.
func googleTarget(addr string) string {
	if _, ok := config.UnixSocketPath(addr); ok {
		return addr
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return addr // Bootstrap has refused it already, through the ext_proc cluster's address
	}
	if ip := net.ParseIP(host); host == "" || ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip != nil && ip.To4() == nil {
			host = "::1"
		}
	}
	return net.JoinHostPort(host, port)
}

// fromXDS reports whether the service clusters come from partroute's ADS server.
func (o Options) fromXDS() bool { return o.XDSAddress != "" || len(o.XDSAddresses) > 0 }

// grpcAddresses parses the addresses of one of partroute's gRPC servers, given as one address
// or as a list (not both), into endpoint addresses. An unspecified host becomes loopback, and
// an address listed twice is an error, as it would be one instance counted twice.
func grpcAddresses(what, one string, list []string) ([]*corev3.Address, error) {
	if one != "" && len(list) > 0 {
		return nil, fmt.Errorf("envoy bootstrap: %s address %q and a list of %d %s addresses are both set; give one or the other", what, one, len(list), what)
	}
	if one != "" {
		list = []string{one}
	}
	var addrs []*corev3.Address
	seen := map[string]bool{}
	for _, hostport := range list {
		if path, ok := config.UnixSocketPath(hostport); ok {
			// A colocated partroute on a unix domain socket: an Envoy pipe address.
			if seen[hostport] {
				return nil, fmt.Errorf("envoy bootstrap: %s address %q is listed twice", what, hostport)
			}
			seen[hostport] = true
			addrs = append(addrs, &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: path}}})
			continue
		}
		addr, err := socketAddress(hostport, "127.0.0.1")
		if err != nil {
			return nil, fmt.Errorf("envoy bootstrap: %s address: %w", what, err)
		}
		sa := addr.GetSocketAddress()
		if ip := net.ParseIP(sa.GetAddress()); ip.IsUnspecified() {
			sa.Address = "127.0.0.1"
			if ip.To4() == nil {
				sa.Address = "::1"
			}
		}
		key := net.JoinHostPort(sa.GetAddress(), strconv.FormatUint(uint64(sa.GetPortValue()), 10))
		if seen[key] {
			return nil, fmt.Errorf("envoy bootstrap: %s address %q is listed twice (as %s)", what, hostport, key)
		}
		seen[key] = true
		addrs = append(addrs, addr)
	}
	return addrs, nil
}

func withDefaults(cfg *config.Config, opts Options) Options {
	if opts.ListenAddress == "" {
		opts.ListenAddress = DefaultListenAddress
	}
	if opts.AdminAddress == "" {
		opts.AdminAddress = DefaultAdminAddress
	}
	if opts.ExtProcAddress == "" && len(opts.ExtProcAddresses) == 0 {
		opts.ExtProcAddress = cfg.Listen.ExtProc
	}
	if opts.MessageTimeout == 0 {
		opts.MessageTimeout = contract.DefaultMessageTimeout
	}
	if opts.ConnectTimeout == 0 {
		opts.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.HealthCheckInterval == 0 {
		opts.HealthCheckInterval = DefaultHealthCheckInterval
	}
	if opts.NodeID == "" {
		opts.NodeID = DefaultNodeID
	}
	return opts
}

// connectionManager is the listener's HTTP connection manager: ext_proc then the router, and
// one route per service.
func connectionManager(cfg *config.Config, opts Options) (*hcmv3.HttpConnectionManager, error) {
	var routes []*routev3.Route
	for _, svc := range cfg.ServicesByPrecedence() {
		r, err := serviceRoute(cfg, svc, opts)
		if err != nil {
			return nil, err
		}
		routes = append(routes, r)
	}
	routes = append(routes, catchAllRoute())

	grpcService := &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ExtProcCluster}},
		RetryPolicy:     extProcRetryPolicy(),
	}
	if opts.GoogleGRPC {
		grpcService = &corev3.GrpcService{TargetSpecifier: &corev3.GrpcService_GoogleGrpc_{GoogleGrpc: &corev3.GrpcService_GoogleGrpc{
			TargetUri: googleTarget(opts.ExtProcAddress), StatPrefix: ExtProcCluster,
		}}}
	}
	extProc := &extprocv3.ExternalProcessor{
		GrpcService: grpcService,
		// A request partroute could not route must fail rather than go on without partition
		// criteria, or worse, with a client's own.
		FailureModeAllow: false,
		MessageTimeout:   durationpb.New(opts.MessageTimeout),
		ProcessingMode:   processingMode(opts, false),
		// A service that holds writes for a failover extends the message timeout of each
		// request it holds (override_message_timeout); Envoy takes the override only up to
		// this bound, and ignores it when the bound is unset.
		MaxMessageTimeout: maxMessageTimeout(cfg, opts),
		// Envoy merges a namespace of partroute's dynamic metadata into the request only when
		// it is listed here; the router then hands envoy.lb to the subset load balancer, and
		// the host list of ordered selection to the override_host policy.
		MetadataOptions: &extprocv3.MetadataOptions{
			ReceivingNamespaces: &extprocv3.MetadataOptions_MetadataNamespaces{Untyped: receivingNamespaces(cfg)},
		},
	}
	return &hcmv3.HttpConnectionManager{
		StatPrefix: "partroute",
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		// Normalizing the path (".." and "." segments) before anything reads it means the path
		// that picked the partition is the path the replica serves, not one that walks out of
		// the service's prefix.
		NormalizePath: wrapperspb.Bool(true),
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "partroute",
			// With clusters from xDS, the static routes name clusters that arrive only after
			// start; Envoy would refuse them if it checked them at load.
			ValidateClusters: validateClusters(opts),
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    "partroute",
				Domains: []string{"*"},
				Routes:  routes,
			}},
		}},
		HttpFilters: httpFilters(extProc, opts.NoExtProc),
	}, nil
}

// receivingNamespaces are the metadata namespaces partroute writes for cfg, which Envoy takes
// into the request only when they are listed: envoy.lb always, the host list when a service
// orders its replicas, the read-your-writes namespace when a service mints tokens, and the
// values of partroute's headers when Envoy sets them (headers.setBy envoy).
func receivingNamespaces(cfg *config.Config) []string {
	ns := []string{contract.LBNamespace}
	if cfg.OrdersReplicas() {
		ns = append(ns, contract.HostsNamespace)
	}
	for _, svc := range cfg.Services {
		if svc.ReadYourWrites > 0 {
			ns = append(ns, contract.RYWNamespace)
			break
		}
	}
	if cfg.Headers.SetBy.OrDefault() == config.SetByEnvoy {
		ns = append(ns, contract.RequestNamespace)
	}
	return ns
}

// maxMessageTimeout is the ext_proc filter's max_message_timeout: room for the longest
// failover wait of cfg and its answer, or nil when no service holds requests.
func maxMessageTimeout(cfg *config.Config, opts Options) *durationpb.Duration {
	if d := contract.MaxMessageTimeout(cfg.LongestFailoverWait(), opts.MessageTimeout); d > 0 {
		return durationpb.New(d)
	}
	return nil
}

// httpFilters is ext_proc then the router, or the router alone when noExtProc is set.
func httpFilters(extProc *extprocv3.ExternalProcessor, noExtProc bool) []*hcmv3.HttpFilter {
	router := &hcmv3.HttpFilter{Name: routerFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}
	if noExtProc {
		return []*hcmv3.HttpFilter{router}
	}
	return []*hcmv3.HttpFilter{
		{Name: extProcFilterName, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(extProc)}},
		router,
	}
}

// processingMode says which parts of a request Envoy sends to partroute: the request headers,
// the response headers only when asked for, and the request body only on routes whose key may
// come from it.
func processingMode(opts Options, body bool) *extprocv3.ProcessingMode {
	m := &extprocv3.ProcessingMode{
		RequestHeaderMode:   extprocv3.ProcessingMode_SEND,
		ResponseHeaderMode:  extprocv3.ProcessingMode_SKIP,
		RequestBodyMode:     extprocv3.ProcessingMode_NONE,
		ResponseBodyMode:    extprocv3.ProcessingMode_NONE,
		RequestTrailerMode:  extprocv3.ProcessingMode_SKIP,
		ResponseTrailerMode: extprocv3.ProcessingMode_SKIP,
	}
	if opts.ResponseHeaders {
		m.ResponseHeaderMode = extprocv3.ProcessingMode_SEND
	}
	if body {
		m.RequestBodyMode = extprocv3.ProcessingMode_BUFFERED
	}
	return m
}

// serviceRoute sends a service's requests to its cluster, where the subset load balancer picks
// a replica of the partition and role partroute put in the request's envoy.lb metadata.
func serviceRoute(cfg *config.Config, svc *config.Service, opts Options) (*routev3.Route, error) {
	match, err := routeMatch(svc.Match)
	if err != nil {
		return nil, fmt.Errorf("envoy bootstrap: service %s: %w", svc.Name, err)
	}
	action := &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: svc.Name}}
	if opts.Retry != nil {
		action.RetryPolicy = &routev3.RetryPolicy{
			RetryOn: retryOn,
			// Only a replica's 503 reaches the router's retry policy. partroute's own 503s
			// (partition_unavailable, naming_unavailable) are ext_proc immediate responses,
			// which end the request before the router: the client retries those, after their
			// retry-after, through partroute again.
			RetriableStatusCodes: []uint32{retriableStatusCode},
			NumRetries:           wrapperspb.UInt32(uint32(opts.Retry.NumRetries)), //nolint:gosec // Bootstrap checked that it is at least 1; a count past 2^32-1 wraps
			// Prefer a replica the request has not tried yet; when the subset holds only one,
			// Envoy settles for it after these attempts.
			RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
				Name:       previousHostsName,
				ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
			}},
			HostSelectionRetryMaxAttempts: hostSelectionRetries,
		}
		if opts.Retry.PerTryTimeout > 0 {
			action.RetryPolicy.PerTryTimeout = durationpb.New(opts.Retry.PerTryTimeout)
		}
	}
	r := &routev3.Route{
		Name:                 svc.Name,
		Match:                match,
		Action:               &routev3.Route_Route{Route: action},
		ResponseHeadersToAdd: readYourWritesHeaders(cfg, svc),
	}
	r.RequestHeadersToRemove, r.RequestHeadersToAdd = requestHeaders(cfg.Headers)
	if svc.Keyer.NeedsBody() {
		// The key may be in the JSON body, so this route buffers it for partroute, up to the
		// configuration's maxBodyBytes: Envoy answers 413 to a larger body before partroute
		// sees it.
		r.TypedPerFilterConfig = map[string]*anypb.Any{
			extProcFilterName: mustAny(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Overrides{
				Overrides: &extprocv3.ExtProcOverrides{ProcessingMode: processingMode(opts, true)},
			}}),
		}
		r.RequestBodyBufferLimit = wrapperspb.UInt64(uint64(cfg.MaxBodyBytes)) //nolint:gosec // config checks that maxBodyBytes is at least 1
	}
	return r, nil
}

// requestHeaders are a service route's changes to the upstream request when partroute's answer
// carries no header mutation (headers.setBy envoy or none). The router applies them after
// ext_proc, removals before additions, so the client's copies of partroute's three headers go
// whatever partroute answered. With envoy the route then sets each from partroute's
// partroute.request metadata. Envoy skips an addition whose value comes out empty, so the
// removal is what keeps a client's copy from surviving where the metadata has no value (the
// key of a singleton service). With extproc partroute's mutation does both, and the route
// changes nothing.
func requestHeaders(h config.Headers) (remove []string, add []*corev3.HeaderValueOption) {
	setBy := h.SetBy.OrDefault()
	if setBy == config.SetByExtProc {
		return nil, nil
	}
	headers := []struct{ name, key string }{
		{h.Partition, contract.RequestKeyPartition},
		{h.Role, contract.RequestKeyRole},
		{h.Key, contract.RequestKeyKey},
	}
	for _, hd := range headers {
		remove = append(remove, hd.name)
	}
	if setBy != config.SetByEnvoy {
		return remove, nil
	}
	for _, hd := range headers {
		add = append(add, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: hd.name, Value: contract.RequestHeaderValue(hd.key)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return remove, add
}

// readYourWritesHeaders are the response headers of a service with read-your-writes on: the
// token partroute minted for a write, from its partroute.ryw metadata, as a Set-Cookie and in
// the token header, as configured. A response to a request that minted none (a read) has no
// such metadata, and Envoy then adds no header. The cookie is appended, so that the replica's
// own Set-Cookie headers stay as they are; the token header is partroute's, and replaces any
// of that name.
func readYourWritesHeaders(cfg *config.Config, svc *config.Service) []*corev3.HeaderValueOption {
	if svc.ReadYourWrites <= 0 {
		return nil
	}
	var out []*corev3.HeaderValueOption
	if r := cfg.ReadYourWrites; r.Cookie != "" {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: "set-cookie", Value: contract.RYWHeaderValue(contract.RYWKeyCookie)},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	if r := cfg.ReadYourWrites; r.Header != "" {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: r.Header, Value: contract.RYWHeaderValue(contract.RYWKeyToken)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	return out
}

// catchAllRoute answers requests that match no service. Envoy has nowhere to send them: the
// bootstrap knows only partitioned services, and their clusters accept only requests carrying
// partition criteria. Answering 404 here, with the error body partroute itself uses, keeps such
// requests from ending in a bare "no route" or "no healthy upstream" from Envoy, with partroute's
// x-partroute-error too, so that a client sees the same answer as partroute's own no_service
// under "unmatched: reject". partroute does not see these requests. Operators who front other
// traffic add their routes before this one.
func catchAllRoute() *routev3.Route {
	e := &resolver.Error{Code: resolver.NoService, Message: "no partroute service matches this request's authority and path"}
	return &routev3.Route{
		Name:  "no_service",
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: uint32(e.Code.Status()), //nolint:gosec // an HTTP status of the error table
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(resolver.ErrorBody(e))}},
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}, {
			Header:       &corev3.HeaderValue{Key: extproc.ErrorHeader, Value: e.Code.String()},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
		// A request no service matches needs no decision: this route answers it whatever
		// partroute would say, so the ext_proc hop is skipped and such traffic costs partroute
		// nothing (docs/benchmarks.md has the difference).
		TypedPerFilterConfig: map[string]*anypb.Any{
			extProcFilterName: mustAny(&extprocv3.ExtProcPerRoute{Override: &extprocv3.ExtProcPerRoute_Disabled{Disabled: true}}),
		},
	}
}

// grpcCluster is how Envoy reaches partroute's gRPC servers, one endpoint per instance:
// HTTP/2, over TLS with Options.TLS, and for the ext_proc server a gRPC health check, so that Envoy stops sending to a
// partroute that is draining or has nothing loaded, and outlier detection, so that it stops
// sending to one that has gone away without draining well before the health check notices.
// Envoy routes nothing to a health-checked host before its first check passes: tests and the
// demo wait for the cluster to be healthy in Envoy's /clusters.
func grpcCluster(name string, addrs []*corev3.Address, opts Options, healthService string) *clusterv3.Cluster {
	endpoints := make([]*endpointv3.LbEndpoint, 0, len(addrs))
	for _, addr := range addrs {
		endpoints = append(endpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
		})
	}
	c := &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(opts.ConnectTimeout),
		LbPolicy:                      clusterv3.Cluster_ROUND_ROBIN,
		CommonLbConfig:                noPanic(),
		TypedExtensionProtocolOptions: map[string]*anypb.Any{httpProtocolOptions: http2Options()},
		TransportSocket:               opts.TLS.transportSocket(),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{
			ClusterName: name,
			Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: endpoints}},
		},
	}
	if healthService != "" {
		interval := durationpb.New(opts.HealthCheckInterval)
		c.HealthChecks = []*corev3.HealthCheck{{
			Timeout:            durationpb.New(opts.ConnectTimeout),
			Interval:           interval,
			UnhealthyThreshold: wrapperspb.UInt32(1),
			HealthyThreshold:   wrapperspb.UInt32(1),
			// Envoy checks a cluster that has carried no traffic only every no_traffic_interval
			// (60s by default); an unhealthy partroute carries none, so without this Envoy would
			// notice it is back a minute late.
			NoTrafficInterval: interval,
			HealthChecker: &corev3.HealthCheck_GrpcHealthCheck_{GrpcHealthCheck: &corev3.HealthCheck_GrpcHealthCheck{
				ServiceName: healthService,
			}},
		}}
		c.OutlierDetection = extProcOutlierDetection(opts)
	}
	return c
}

// extProcRetryPolicy opens an ext_proc stream again, on another partroute instance, when it
// could not be opened: the connection was refused (an instance that is gone, before outlier
// detection or the health check has taken it out) or the stream was refused (an instance that
// is closing its connections). Nothing reached partroute, so nothing is decided twice. The
// back-off is short: the request waits for it, within the message timeout.
func extProcRetryPolicy() *corev3.RetryPolicy {
	return &corev3.RetryPolicy{
		RetryOn:    extProcRetryOn,
		NumRetries: wrapperspb.UInt32(extProcRetries),
		RetryBackOff: &corev3.BackoffStrategy{
			BaseInterval: durationpb.New(extProcRetryBackOff),
			MaxInterval:  durationpb.New(4 * extProcRetryBackOff),
		},
		RetryHostPredicate: []*corev3.RetryPolicy_RetryHostPredicate{{
			Name:       previousHostsName,
			ConfigType: &corev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: hostSelectionRetries,
	}
}

// Outlier detection of the ext_proc cluster.
const (
	// OutlierGatewayFailures is how many ext_proc streams in a row that fail to reach an
	// instance (a connection refused or reset, a 502, 503 or 504) eject it. partroute's own
	// refusals (partition_unavailable and the like) are answers on a stream that succeeded,
	// so they never count.
	OutlierGatewayFailures = 2
	// OutlierBaseEjectionTime is how long a first ejection lasts; a passing health check
	// ends it sooner.
	OutlierBaseEjectionTime = 10 * time.Second
	// outlierMaxEjectionPercent keeps half of the instances in the cluster whatever fails:
	// when every instance fails at once, the fault is most likely not theirs, and ejecting
	// them all would only add the ejection time to the outage.
	outlierMaxEjectionPercent = 50
)

// extProcOutlierDetection ejects a partroute instance whose streams fail, such as one killed
// without draining: its health check would notice only at the next interval, while the streams
// sent to it meanwhile fail. A passing active health check un-ejects it (Envoy's default), so
// a restarted instance takes traffic again as soon as it reports SERVING.
func extProcOutlierDetection(opts Options) *clusterv3.OutlierDetection {
	return &clusterv3.OutlierDetection{
		ConsecutiveGatewayFailure:          wrapperspb.UInt32(OutlierGatewayFailures),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(100),
		Interval:                           durationpb.New(opts.HealthCheckInterval),
		BaseEjectionTime:                   durationpb.New(OutlierBaseEjectionTime),
		MaxEjectionPercent:                 wrapperspb.UInt32(outlierMaxEjectionPercent),
	}
}

// ServiceCluster is a service's cluster: every replica of every partition, each tagged with
// its partition and role, behind a subset load balancer that picks among the replicas matching
// the request's criteria and never outside them. With eds set the endpoints come from EDS over
// ADS (partroute's xDS server); otherwise they are static, from LoadAssignment.
func ServiceCluster(svc *config.Service, opts Options, eds bool) (*clusterv3.Cluster, error) {
	timeout := svc.Upstream.ConnectTimeout
	if timeout == 0 {
		timeout = opts.ConnectTimeout
	}
	if timeout == 0 {
		timeout = DefaultConnectTimeout
	}
	c := &clusterv3.Cluster{
		Name:           svc.Name,
		ConnectTimeout: durationpb.New(timeout),
		CommonLbConfig: noPanic(),
	}
	if svc.Selection == config.SelectOrdered {
		c.LoadBalancingPolicy = orderedPolicy()
	} else {
		c.LbPolicy = clusterv3.Cluster_ROUND_ROBIN
		c.LbSubsetConfig = &clusterv3.Cluster_LbSubsetConfig{
			// A request without criteria, or for a partition and role with no replica, gets
			// no host at all: never a replica of some other partition.
			FallbackPolicy:  clusterv3.Cluster_LbSubsetConfig_NO_FALLBACK,
			SubsetSelectors: subsetSelectors(),
		}
	}
	if eds {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS}
		c.EdsClusterConfig = &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()}
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	}
	if svc.Upstream.Protocol == "http2" {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{httpProtocolOptions: http2Options()}
	}
	if hc := svc.Upstream.HealthCheck; hc != nil {
		// Envoy's own checks add to the naming view's health: a replica the view calls healthy
		// but that fails its check takes no traffic, and the view's UNHEALTHY is never
		// overridden by a passing check.
		c.HealthChecks = []*corev3.HealthCheck{{
			Timeout:            durationpb.New(hc.Timeout),
			Interval:           durationpb.New(hc.Interval),
			UnhealthyThreshold: wrapperspb.UInt32(2),
			HealthyThreshold:   wrapperspb.UInt32(1),
			HealthChecker: &corev3.HealthCheck_HttpHealthCheck_{HttpHealthCheck: &corev3.HealthCheck_HttpHealthCheck{
				Path: hc.Path,
			}},
		}}
	}
	return c, nil
}

// LoadAssignment lists a service's replicas as endpoints, each carrying its partition and role
// as envoy.lb metadata and its health from the naming view, so that Envoy never picks a
// replica the view marks unhealthy.
func LoadAssignment(svc *config.Service, sv *resolver.ServiceView) (*endpointv3.ClusterLoadAssignment, error) {
	var endpoints []*endpointv3.LbEndpoint
	for _, p := range sv.Partitions {
		for _, r := range p.Replicas {
			addr, err := replicaAddress(r.Address)
			if err != nil {
				return nil, fmt.Errorf("envoy bootstrap: service %s partition %s: %w", svc.Name, p.ID, err)
			}
			health := corev3.HealthStatus_HEALTHY
			if !r.Healthy {
				health = corev3.HealthStatus_UNHEALTHY
			}
			endpoints = append(endpoints, &endpointv3.LbEndpoint{
				HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: addr}},
				HealthStatus:   health,
				Metadata:       EndpointMetadata(p.ID, r.Role),
			})
		}
	}
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: svc.Name,
		Endpoints:   []*endpointv3.LocalityLbEndpoints{{LbEndpoints: endpoints}},
	}, nil
}

// serviceCluster is the static cluster of a service, endpoints included.
func serviceCluster(svc *config.Service, view *resolver.View, opts Options) (*clusterv3.Cluster, error) {
	sv := view.Services[svc.Name]
	if sv == nil {
		return nil, fmt.Errorf("envoy bootstrap: naming view %s has no service %s", view.Version, svc.Name)
	}
	c, err := ServiceCluster(svc, opts, false)
	if err != nil {
		return nil, err
	}
	if c.LoadAssignment, err = LoadAssignment(svc, sv); err != nil {
		return nil, err
	}
	return c, nil
}

// adsSource points a resource at the ADS stream Envoy holds with partroute.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// EndpointMetadata is the envoy.lb metadata of a replica's endpoint: the same shape as the
// criteria partroute sends with a request (contract.LBFields), with the role always present.
func EndpointMetadata(partitionID string, role resolver.Role) *corev3.Metadata {
	return &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
		contract.LBNamespace: contract.LBFields(partitionID, role.String()),
	}}
}

// orderedPolicy is the load balancing policy of a service with replicas.selection: ordered.
// Envoy's override_host policy sends the request to the first host of partroute's list
// (contract.HostsNamespace) and each retry to the next. A host no longer in the cluster is
// skipped, and once the list is spent the subset load balancer picks, with NO_FALLBACK as in
// the subset mode: a list made stale by a failover, or a request without one, then lands on a
// replica of the request's partition and role, or on none, never on another partition's.
func orderedPolicy() *clusterv3.LoadBalancingPolicy {
	var selectors []*subsetv3.Subset_LbSubsetSelector
	for _, keys := range contract.SubsetSelectors() {
		selectors = append(selectors, &subsetv3.Subset_LbSubsetSelector{Keys: keys})
	}
	subset := &subsetv3.Subset{
		FallbackPolicy:  subsetv3.Subset_NO_FALLBACK,
		SubsetSelectors: selectors,
		SubsetLbPolicy:  policyOf(roundRobinPolicyName, &roundrobinv3.RoundRobin{}),
	}
	return policyOf(overrideHostPolicyName, &overridehostv3.OverrideHost{
		OverrideHostSources: []*overridehostv3.OverrideHost_OverrideHostSource{{
			Metadata: &metadatav3.MetadataKey{
				Key:  contract.HostsNamespace,
				Path: []*metadatav3.MetadataKey_PathSegment{{Segment: &metadatav3.MetadataKey_PathSegment_Key{Key: contract.KeyHosts}}},
			},
		}},
		FallbackPolicy: policyOf(subsetPolicyName, subset),
	})
}

// policyOf is a load balancing policy of one typed extension.
func policyOf(name string, m proto.Message) *clusterv3.LoadBalancingPolicy {
	return &clusterv3.LoadBalancingPolicy{Policies: []*clusterv3.LoadBalancingPolicy_Policy{{
		TypedExtensionConfig: &corev3.TypedExtensionConfig{Name: name, TypedConfig: mustAny(m)},
	}}}
}

// subsetSelectors are the subset load balancer's selectors of contract.SubsetSelectors.
func subsetSelectors() []*clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector {
	var out []*clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector
	for _, keys := range contract.SubsetSelectors() {
		out = append(out, &clusterv3.Cluster_LbSubsetConfig_LbSubsetSelector{Keys: keys})
	}
	return out
}

// noPanic turns off Envoy's panic mode, in which a host set with too few healthy hosts (under
// 50% by default) balances over all of them, unhealthy ones included. Subsets are small (one
// primary, a few secondaries), so panic mode would routinely send requests to replicas the
// naming view marks unhealthy.
func noPanic() *clusterv3.Cluster_CommonLbConfig {
	return &clusterv3.Cluster_CommonLbConfig{HealthyPanicThreshold: &typev3.Percent{Value: 0}}
}

// socketAddress parses host:port into an Envoy socket address; an empty host becomes
// emptyHost, or is an error when emptyHost is empty.
func socketAddress(hostport, emptyHost string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, fmt.Errorf("%q is not host:port", hostport)
	}
	if host == "" {
		host = emptyHost
	}
	if net.ParseIP(host) == nil {
		return nil, fmt.Errorf("%q: host %q is not an IP address", hostport, host)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("%q has port %q, not a number from 0 to 65535", hostport, port)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}, nil
}

// replicaAddress parses a replica's address. The clusters are STATIC, which takes IP addresses
// only: resolving host names would take a DNS cluster per name, so the static bootstrap refuses
// them rather than guess.
func replicaAddress(hostport string) (*corev3.Address, error) {
	addr, err := socketAddress(hostport, "")
	if err != nil {
		return nil, fmt.Errorf("replica address %w (the static Envoy bootstrap needs IP addresses)", err)
	}
	return addr, nil
}

// mustAny packs a message into an Any. Marshalling the generator's own well-formed messages
// cannot fail, so a failure is a bug worth a panic.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(fmt.Sprintf("envoy bootstrap: packing %T: %v", m, err))
	}
	return a
}

// validateClusters is false when the service clusters come over xDS. A request for a cluster
// Envoy has not received yet gets a 503 from Envoy; partroute serves the snapshot before it
// reports ready, so in practice Envoy has the clusters before the first request.
func validateClusters(opts Options) *wrapperspb.BoolValue {
	if opts.fromXDS() {
		return wrapperspb.Bool(false)
	}
	return nil
}

// http2Options makes a cluster speak HTTP/2 to its hosts.
func http2Options() *anypb.Any {
	return mustAny(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}},
	})
}
