package servicefabric

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/cache"
	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// DefaultReresolveMinInterval is how often, at most, one partition is re-resolved on failure
// signals or after a failed resolution, when the configuration does not say.
const DefaultReresolveMinInterval = config.DefaultSFReresolveInterval

// ServiceMapping ties a partroute service to the Service Fabric service that runs it.
type ServiceMapping struct {
	// FabricName is the service's full name, fabric:/app/svc.
	FabricName string
	// ListenerName chooses the listener among those a replica publishes; empty means the
	// first http or https listener in name order (see ParseAddress).
	ListenerName string
}

// SourceOptions configures a Source.
type SourceOptions struct {
	// Client calls the gateway. It is required.
	Client *Client
	// Services maps partroute service names (services[].name) to Service Fabric services.
	// SetServices replaces it on a configuration reload.
	Services map[string]ServiceMapping
	// Size, TTL, StaleIfError and ResolveTimeout configure the resolution cache, as the
	// cache section of partroute.yaml does (cache.Options).
	Size                              int
	TTL, StaleIfError, ResolveTimeout time.Duration
	// ReresolveMinInterval is the least time between two re-resolutions of one partition that
	// failure signals (Invalidate) or failed resolutions cause; 0 means
	// DefaultReresolveMinInterval. It is what keeps a burst of 503s from one partition from
	// becoming a burst of calls to the gateway.
	ReresolveMinInterval time.Duration
	// EnumerateInterval is how often Watch enumerates the services for Envoy's endpoints;
	// 0 means config.DefaultSFEnumerateInterval.
	EnumerateInterval time.Duration
	// Metrics receives the source's collectors and the cache's, which carry the label
	// source="servicefabric"; nil means none. A registry takes one Source: keep the Source
	// across configuration reloads rather than building another.
	Metrics prometheus.Registerer
	// Now is the clock; nil means time.Now. Tests inject their own.
	Now func() time.Time
	// Log receives warnings about endpoints that were skipped and enumerations that failed;
	// nil discards them.
	Log *slog.Logger
}

// Source is the Service Fabric naming source. It implements resolver.Naming: Partition answers
// from the resolution cache, which ResolvePartition fills. It is safe for concurrent use.
type Source struct {
	client *Client
	// services maps partroute service names to their Service Fabric services. It is replaced
	// whole by SetServices and read without a lock on the request path.
	services atomic.Pointer[map[string]mapped]
	cache    *cache.Cache[partKey, *resolution]
	now      func() time.Time
	interval time.Duration
	// enumerateEvery is the interval of Watch's enumerations.
	enumerateEvery time.Duration
	log            *slog.Logger
	m              sourceMetrics

	// mu guards the per-partition bookkeeping below, none of which is touched on a cache hit.
	mu sync.Mutex
	// slots maps (service, index), which is all a failure signal names, to the cache key the
	// partition was last resolved under.
	slots map[slot]partKey
	// reresolved holds when each partition's last accepted re-resolution was.
	reresolved map[slot]time.Time
	// failed holds, per partition, the last failed resolution, so that the gateway is asked
	// again no sooner than the interval after it.
	failed map[partKey]failure

	// last is the view of the previous Refresh, guarded by refreshMu, which also keeps two
	// refreshes from running at once.
	refreshMu sync.Mutex
	last      *resolver.View
	// refreshNow asks Run for an enumeration before its next tick: an accepted failure signal
	// means the cluster probably moved a replica, and Envoy's endpoints come from the
	// enumeration. It holds at most one request, so signals coalesce.
	refreshNow chan struct{}
}

var _ resolver.Naming = (*Source)(nil)

type mapped struct {
	ServiceMapping
	serviceID string
}

// partKey identifies a partition in the cache: the service, the Service Fabric service and
// listener it is mapped to, and the partition's place in the configured scheme. Everything a
// configuration reload may change is part of it, so that an entry resolved under the old
// mapping or scheme is never served for the new one; such entries simply age out.
type partKey struct {
	service   string
	serviceID string
	listener  string
	index     int
	kind      keying.SchemeKind
	low, high int64
	name      string
}

// fabricName is the Service Fabric name of the key's service, for messages.
func (k partKey) fabricName() string { return "fabric:/" + strings.ReplaceAll(k.serviceID, "~", "/") }

type slot struct {
	service string
	index   int
}

type failure struct {
	at  time.Time
	err error
}

// resolution is a cache entry: the partition as partroute routes to it and the Version to
// pass back as PreviousRspVersion. It is immutable once stored.
type resolution struct {
	partition *resolver.Partition
	version   string
}

// NewSource validates opts and builds the source with its cache. All invalid options are
// reported together.
func NewSource(opts SourceOptions) (*Source, error) {
	var errs []error
	if opts.Client == nil {
		errs = append(errs, errors.New("servicefabric: a Client is required"))
	}
	s := &Source{
		refreshNow:     make(chan struct{}, 1),
		client:         opts.Client,
		now:            opts.Now,
		interval:       opts.ReresolveMinInterval,
		enumerateEvery: opts.EnumerateInterval,
		log:            opts.Log,
		slots:          map[slot]partKey{},
		reresolved:     map[slot]time.Time{},
		failed:         map[partKey]failure{},
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if s.enumerateEvery <= 0 {
		s.enumerateEvery = config.DefaultSFEnumerateInterval
	}
	if s.interval == 0 {
		s.interval = DefaultReresolveMinInterval
	} else if s.interval < 0 {
		errs = append(errs, fmt.Errorf("naming.servicefabric.reresolveMinInterval: %s is below 0", s.interval))
	}
	if err := s.SetServices(opts.Services); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}

	m, err := newSourceMetrics(opts.Metrics)
	if err != nil {
		return nil, err
	}
	s.m = m
	var cacheReg prometheus.Registerer
	if opts.Metrics != nil {
		// The cache's metric names are the same for every cache; the label tells this one
		// apart from the caches of other sources in the same registry.
		cacheReg = prometheus.WrapRegistererWith(prometheus.Labels{"source": "servicefabric"}, opts.Metrics)
	}
	c, err := cache.New(cache.Options[partKey, *resolution]{
		Size:           opts.Size,
		TTL:            opts.TTL,
		StaleIfError:   opts.StaleIfError,
		ResolveTimeout: opts.ResolveTimeout,
		Fill:           s.fill,
		Now:            s.now,
		Metrics:        cacheReg,
	})
	if err != nil {
		m.unregister(opts.Metrics)
		return nil, err
	}
	s.cache = c
	return s, nil
}

// SetServices replaces the mappings, for a configuration reload. It validates every mapping
// first and changes nothing when one is invalid. Entries already cached stay valid for the
// services whose mapping did not change; the others are resolved afresh on their next use.
func (s *Source) SetServices(services map[string]ServiceMapping) error {
	m := make(map[string]mapped, len(services))
	var errs []error
	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		sm := services[name]
		id, err := ServiceID(sm.FabricName)
		if err != nil {
			errs = append(errs, fmt.Errorf("service %s: fabric.name: %w", name, err))
			continue
		}
		m[name] = mapped{ServiceMapping: sm, serviceID: id}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	s.services.Store(&m)
	return nil
}

// Services returns a copy of the current mappings, as SetServices takes them.
func (s *Source) Services() map[string]ServiceMapping {
	cur := *s.services.Load()
	out := make(map[string]ServiceMapping, len(cur))
	for name, m := range cur {
		out[name] = m.ServiceMapping
	}
	return out
}

// mapping returns the current mapping of a service.
func (s *Source) mapping(service string) (mapped, bool) {
	m, ok := (*s.services.Load())[service]
	return m, ok
}

// Check reports every mismatch between the mappings and a configuration: a configured service
// with no Service Fabric service, or a mapping for a service the configuration does not have.
// The configuration loader calls it so that such a mistake stops a start or a reload.
func (s *Source) Check(cfg *config.Config) error {
	var errs []error
	services := *s.services.Load()
	for _, svc := range cfg.Services {
		if _, ok := services[svc.Name]; !ok {
			errs = append(errs, fmt.Errorf("service %s: has no fabric.name, which the servicefabric naming source needs", svc.Name))
		}
	}
	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if cfg.Service(name) == nil {
			errs = append(errs, fmt.Errorf("service %s: mapped to %s but not configured", name, services[name].FabricName))
		}
	}
	return errors.Join(errs...)
}

// Partition returns the partition that key maps to, with its replicas, from the cache or from
// a ResolvePartition call. Its errors wrap the cache's: errors.Is(err, cache.ErrUnavailable)
// holds when the gateway could not be reached and nothing usable was cached.
func (s *Source) Partition(ctx context.Context, svc *config.Service, key keying.Key) (*resolver.Partition, error) {
	k, err := s.keyOf(svc, key.Index)
	if err != nil {
		return nil, err
	}
	r, _, err := s.cache.Get(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("service %s (%s) partition %s: %w", svc.Name, k.fabricName(), describeKey(k), err)
	}
	return r.partition, nil
}

// keyOf builds the cache key of partition index of svc's scheme.
func (s *Source) keyOf(svc *config.Service, index int) (partKey, error) {
	ms, ok := s.mapping(svc.Name)
	if !ok {
		return partKey{}, fmt.Errorf("service %s is not mapped to a Service Fabric service", svc.Name)
	}
	scheme := svc.Scheme()
	if index < 0 || index >= scheme.Count() {
		return partKey{}, fmt.Errorf("service %s has no partition %d", svc.Name, index)
	}
	k := partKey{service: svc.Name, serviceID: ms.serviceID, listener: ms.ListenerName, index: index, kind: scheme.Kind()}
	switch k.kind {
	case keying.UniformInt64:
		k.low, k.high = scheme.Bounds(index)
	case keying.Named:
		k.name = scheme.Names()[index]
	}
	return k, nil
}

func describeKey(k partKey) string {
	switch k.kind {
	case keying.UniformInt64:
		return fmt.Sprintf("%d [%d, %d]", k.index, k.low, k.high)
	case keying.Named:
		return fmt.Sprintf("%d %s", k.index, quote(k.name))
	}
	return "0 (singleton)"
}

// fill resolves one partition for the cache. The key value sent is the one that identifies the
// partition whatever key the request carried: the partition's LowKey, its name, or none for a
// singleton, so that every key of the partition shares one entry. The previous entry's Version
// goes along as PreviousRspVersion, which makes the gateway answer with a resolution at least as
// new as the one held: an answer with the same Version keeps the entry already held.
func (s *Source) fill(ctx context.Context, k partKey, prev *resolution, hasPrev bool) (*resolution, error) {
	now := s.now()
	s.mu.Lock()
	s.slots[slot{k.service, k.index}] = k
	if f, ok := s.failed[k]; ok && now.Sub(f.at) < s.interval {
		s.mu.Unlock()
		s.m.resolves.WithLabelValues("suppressed").Inc()
		return nil, fmt.Errorf("not asking the gateway again within %s of a failed resolution: %w", s.interval, f.err)
	}
	s.mu.Unlock()

	var kind PartitionKind
	value := ""
	switch k.kind {
	case keying.UniformInt64:
		kind, value = KindInt64Range, strconv.FormatInt(k.low, 10)
	case keying.Named:
		kind, value = KindNamed, k.name
	default:
		kind = KindSingleton
	}
	previous := ""
	if hasPrev {
		previous = prev.version
	}
	res, err := s.client.ResolvePartition(ctx, k.serviceID, kind, value, previous)
	var part *resolver.Partition
	if err == nil {
		part, err = s.convert(k, res)
	}
	s.mu.Lock()
	if err != nil {
		// Failures older than the interval no longer suppress anything; dropping them here
		// keeps the map from holding keys of schemes a reload has replaced.
		for fk, f := range s.failed {
			if now.Sub(f.at) >= s.interval {
				delete(s.failed, fk)
			}
		}
		s.failed[k] = failure{at: now, err: err}
	} else {
		delete(s.failed, k)
	}
	s.mu.Unlock()
	if err != nil {
		s.m.resolves.WithLabelValues("error").Inc()
		return nil, err
	}
	if hasPrev && res.Version != "" && res.Version == prev.version && prev.partition.ID == part.ID {
		s.m.resolves.WithLabelValues("unchanged").Inc()
		return prev, nil
	}
	s.m.resolves.WithLabelValues("ok").Inc()
	return &resolution{partition: part, version: res.Version}, nil
}

// convert checks that a resolution is the partition the configuration expects and turns its
// endpoints into replicas. An endpoint whose address cannot be used is skipped and reported;
// when none can be used the resolution fails, so that stale-if-error keeps serving the last
// good one.
func (s *Source) convert(k partKey, res *Resolution) (*resolver.Partition, error) {
	p := res.Partition
	if err := matchScheme(k, p); err != nil {
		return nil, err
	}
	part := &resolver.Partition{ID: p.ID, Index: k.index, LowKey: p.LowKey, HighKey: p.HighKey, Name: p.Name}
	seen := map[string]int{}
	var bad []error
	for i, e := range res.Endpoints {
		role, ok := endpointRole(e.Kind)
		if !ok {
			continue
		}
		a, err := ParseAddress(e.Address, k.listener)
		if err != nil {
			bad = append(bad, fmt.Errorf("endpoint %d (%s): %w", i, e.Kind, err))
			continue
		}
		if j, dup := seen[a.HostPort]; dup {
			// Two endpoints at one address happen while a replica changes role; the
			// primary is kept, since writes need it.
			if role == resolver.RolePrimary {
				part.Replicas[j].Role = role
			}
			continue
		}
		seen[a.HostPort] = len(part.Replicas)
		part.Replicas = append(part.Replicas, resolver.Replica{Address: a.HostPort, Role: role, Healthy: true})
	}
	for _, err := range bad {
		s.m.badAddresses.Inc()
		s.log.Warn("Service Fabric endpoint skipped", "service", k.service, "fabricName", k.fabricName(), "partition", p.ID, "error", err)
	}
	if len(part.Replicas) == 0 && len(bad) > 0 {
		return nil, fmt.Errorf("the Service Fabric partition %s has no usable endpoint: %w", p.ID, errors.Join(bad...))
	}
	sortReplicas(part.Replicas)
	return part, nil
}

// endpointRole maps a resolved endpoint's kind to the role partroute routes by. A stateless
// instance serves reads and writes alike, so it is a primary: the [partition, role=primary]
// subset that writes use must contain it, and reads under the any or secondary policies reach
// it too, the latter by falling back to the primary when no secondary exists.
func endpointRole(k EndpointKind) (resolver.Role, bool) {
	switch k {
	case EndpointStatefulPrimary, EndpointStateless:
		return resolver.RolePrimary, true
	case EndpointStatefulSecondary:
		return resolver.RoleSecondary, true
	}
	return 0, false
}

// matchScheme checks that what the gateway resolved is the partition the configuration
// describes. A difference means partroute.yaml's partitioning does not match the service's,
// and routing by it would send keys to the wrong partition.
func matchScheme(k partKey, p PartitionInformation) error {
	switch k.kind {
	case keying.UniformInt64:
		if p.Kind != KindInt64Range {
			return fmt.Errorf("partroute.yaml says uniformInt64 but Service Fabric has a %s partition; the partitioning must match the service's", p.Kind)
		}
		if p.LowKey != k.low || p.HighKey != k.high {
			return fmt.Errorf("partroute.yaml has [%d, %d] but Service Fabric's partition %s holding key %d covers [%d, %d]; the partitioning must match the service's", k.low, k.high, p.ID, k.low, p.LowKey, p.HighKey)
		}
	case keying.Named:
		if p.Kind != KindNamed {
			return fmt.Errorf("partroute.yaml says named but Service Fabric has a %s partition; the partitioning must match the service's", p.Kind)
		}
		if p.Name != k.name {
			return fmt.Errorf("partroute.yaml has %s but Service Fabric resolved it to partition %s named %s", quote(k.name), p.ID, quote(p.Name))
		}
	default:
		if p.Kind != KindSingleton {
			return fmt.Errorf("partroute.yaml says singleton but Service Fabric has a %s partition; the partitioning must match the service's", p.Kind)
		}
	}
	return nil
}

func sortReplicas(rs []resolver.Replica) {
	sort.Slice(rs, func(i, j int) bool {
		if rs[i].Role != rs[j].Role {
			return rs[i].Role < rs[j].Role
		}
		return rs[i].Address < rs[j].Address
	})
}

// Invalidate asks for partition index of service to be resolved again on its next use,
// because a request to it failed in a way that means its replicas moved (see
// ShouldReresolve). It is rate-limited per partition: it is accepted at most once per
// ReresolveMinInterval, and reports whether it was. A partition that was never resolved has
// nothing to re-resolve and is not accepted.
func (s *Source) Invalidate(service string, index int) bool {
	sl := slot{service, index}
	now := s.now()
	s.mu.Lock()
	k, ok := s.slots[sl]
	if !ok {
		s.mu.Unlock()
		return false
	}
	if last, seen := s.reresolved[sl]; seen && now.Sub(last) < s.interval {
		s.mu.Unlock()
		s.m.reresolves.WithLabelValues("limited").Inc()
		return false
	}
	s.reresolved[sl] = now
	s.mu.Unlock()
	s.cache.Invalidate(k)
	s.m.reresolves.WithLabelValues("accepted").Inc()
	select {
	case s.refreshNow <- struct{}{}:
	default:
	}
	return true
}

// InvalidateAll makes every partition resolve again on its next use, without rate limit. It is
// meant for a configuration reload or an operator's request, not for failure signals.
func (s *Source) InvalidateAll() { s.cache.InvalidateAll() }

// ShouldReresolve reports whether an upstream answer means the partition's replicas may have
// moved, so that its resolution should be refreshed: 503 (the replica is not, or no longer, the
// one for this role), 410 (the replica is gone), or 404 without the header
// X-ServiceFabric: ResourceNotFound, with which a service says that the resource, not the
// replica, is missing. This is the rule of Service Fabric's reverse proxy.
func ShouldReresolve(status int, header http.Header) bool {
	notFound := false
	for _, v := range header.Values("X-ServiceFabric") {
		notFound = notFound || isResourceNotFound(v)
	}
	return reresolveOn(status, notFound)
}

// ObserveUpstream implements resolver.UpstreamListener: it applies ShouldReresolve to the
// response of a request routed to partition index of svc and, when the rule holds, calls
// Invalidate, whose rate limit applies. It reports whether a re-resolution was accepted.
func (s *Source) ObserveUpstream(svc *config.Service, index, status int, headers keying.Headers) bool {
	if svc == nil || status < 400 {
		return false
	}
	notFound := false
	if headers != nil {
		for i, n := 0, headers.Len(); i < n; i++ {
			if name, v := headers.At(i); strings.EqualFold(name, "x-servicefabric") {
				notFound = notFound || isResourceNotFound(v)
			}
		}
	}
	if !reresolveOn(status, notFound) {
		return false
	}
	return s.Invalidate(svc.Name, index)
}

var _ resolver.UpstreamListener = (*Source)(nil)

func reresolveOn(status int, resourceNotFound bool) bool {
	switch status {
	case http.StatusServiceUnavailable, http.StatusGone:
		return true
	case http.StatusNotFound:
		return !resourceNotFound
	}
	return false
}

func isResourceNotFound(v string) bool {
	return strings.EqualFold(strings.TrimSpace(v), "ResourceNotFound")
}

type sourceMetrics struct {
	reresolves   *prometheus.CounterVec
	resolves     *prometheus.CounterVec
	badAddresses prometheus.Counter
	enumerations *prometheus.CounterVec
	changes      prometheus.Counter
}

func newSourceMetrics(reg prometheus.Registerer) (sourceMetrics, error) {
	m := sourceMetrics{
		reresolves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_servicefabric_reresolves_total",
			Help: "Failure-driven re-resolutions of a partition, by whether the per-partition rate limit accepted or limited them.",
		}, []string{"result"}),
		resolves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_servicefabric_resolves_total",
			Help: "Partition resolutions for the cache, by result: ok (a new version), unchanged (the version held), error, or suppressed (within reresolveMinInterval of a failure).",
		}, []string{"result"}),
		badAddresses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_servicefabric_bad_addresses_total",
			Help: "Endpoint addresses skipped because no http or https host:port could be taken from them.",
		}),
		enumerations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_servicefabric_enumerations_total",
			Help: "Full enumerations of the mapped services for the naming view, by result (ok, error).",
		}, []string{"result"}),
		changes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_servicefabric_partition_changes_total",
			Help: "Partitions whose replicas changed between two enumerations; each one's cache entry is invalidated.",
		}),
	}
	for _, r := range []string{"accepted", "limited"} {
		m.reresolves.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "unchanged", "error", "suppressed"} {
		m.resolves.WithLabelValues(r)
	}
	for _, r := range []string{"ok", "error"} {
		m.enumerations.WithLabelValues(r)
	}
	if reg == nil {
		return m, nil
	}
	collectors := m.collectors()
	for i, c := range collectors {
		if err := reg.Register(c); err != nil {
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return m, fmt.Errorf("servicefabric: registering metrics: %w", err)
		}
	}
	return m, nil
}

func (m sourceMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.reresolves, m.resolves, m.badAddresses, m.enumerations, m.changes}
}

// unregister leaves reg as it was before newSourceMetrics, so that a failed NewSource has no
// side effects.
func (m sourceMetrics) unregister(reg prometheus.Registerer) {
	if reg == nil {
		return
	}
	for _, c := range m.collectors() {
		reg.Unregister(c)
	}
}
