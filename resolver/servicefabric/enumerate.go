package servicefabric

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// DefaultEnumerateInterval is how often Run enumerates when the configuration does not say.
const DefaultEnumerateInterval = config.DefaultSFEnumerateInterval

// Enumerate builds the full naming view of every configured service from GetPartitions and
// GetReplicas: what the xDS server turns into Envoy endpoints. Every partition of each
// service's scheme must be found in Service Fabric, and nothing else: a service whose
// partitions differ from partroute.yaml's scheme is an error naming both. The view's Version
// is a hash of its content, so it changes exactly when the content does.
//
// A replica is in the view when its ReplicaStatus is Ready; it is Healthy unless its
// HealthState is Error. Replicas in any other status (InBuild, Standby, Down, Dropped) are left
// out: they do not serve requests, and a down replica's address may already belong to another.
func (s *Source) Enumerate(ctx context.Context, cfg *config.Config) (*resolver.View, error) {
	svs, errs := s.enumerateAll(ctx, cfg)
	if len(errs) > 0 {
		s.m.enumerations.WithLabelValues("error").Inc()
		return nil, joinSorted(errs)
	}
	s.m.enumerations.WithLabelValues("ok").Inc()
	return newView(svs), nil
}

// Refresh enumerates like Enumerate, compares the result with the previous Refresh, and
// invalidates the cache entry of every partition whose id or replicas changed, so that requests
// pick the change up before their entry's TTL runs out. A service that fails to enumerate keeps
// its previous content in the view, and the error says which; the view is nil only when no
// service has content. changed reports whether the view's Version differs from the previous
// one's.
func (s *Source) Refresh(ctx context.Context, cfg *config.Config) (view *resolver.View, changed bool, err error) {
	s.refreshMu.Lock()
	defer s.refreshMu.Unlock()
	svs, errs := s.enumerateAll(ctx, cfg)
	if len(errs) > 0 {
		s.m.enumerations.WithLabelValues("error").Inc()
		err = joinSorted(errs)
		for name := range errs {
			if s.last == nil {
				break
			}
			if old := s.last.Services[name]; old != nil && old.Fits(cfg.Service(name)) {
				svs[name] = old
			}
		}
	} else {
		s.m.enumerations.WithLabelValues("ok").Inc()
	}
	if len(svs) == 0 && err != nil {
		return nil, false, err
	}
	view = newView(svs)
	if s.last != nil {
		for name, sv := range view.Services {
			old, svc := s.last.Services[name], cfg.Service(name)
			if old == nil || svc == nil {
				continue
			}
			for i := range sv.Partitions {
				if i < len(old.Partitions) && samePartition(&old.Partitions[i], &sv.Partitions[i]) {
					continue
				}
				if k, kerr := s.keyOf(svc, i); kerr == nil {
					s.cache.Invalidate(k)
					s.m.changes.Inc()
				}
			}
		}
	}
	changed = s.last == nil || s.last.Version != view.Version
	s.last = view
	return view, changed, err
}

// Run refreshes at once and then every interval (0 means DefaultEnumerateInterval) until ctx
// ends, against the configuration cfg returns at that moment, and calls onView with each view
// whose Version differs from the one before. Failures are logged; the previous content of a
// failing service is kept.
func (s *Source) Run(ctx context.Context, interval time.Duration, cfg func() *config.Config, onView func(*resolver.View)) {
	if interval <= 0 {
		interval = DefaultEnumerateInterval
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		view, changed, err := s.Refresh(ctx, cfg())
		if err != nil && ctx.Err() == nil {
			s.log.Warn("Service Fabric enumeration failed; failing services keep their previous view", "error", err)
		}
		if view != nil && changed && ctx.Err() == nil {
			onView(view)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.refreshNow:
			// A failure signal was accepted: look now rather than at the next tick. The
			// re-resolution rate limit bounds how often this can happen.
		}
	}
}

// enumerateAll enumerates every configured service, returning the views that succeeded and the
// errors of those that did not, by service name.
func (s *Source) enumerateAll(ctx context.Context, cfg *config.Config) (map[string]*resolver.ServiceView, map[string]error) {
	svs := map[string]*resolver.ServiceView{}
	errs := map[string]error{}
	for _, svc := range cfg.Services {
		sv, err := s.enumerateService(ctx, svc)
		if err != nil {
			errs[svc.Name] = err
			continue
		}
		svs[svc.Name] = sv
	}
	return svs, errs
}

func (s *Source) enumerateService(ctx context.Context, svc *config.Service) (*resolver.ServiceView, error) {
	ms, ok := s.mapping(svc.Name)
	if !ok {
		return nil, fmt.Errorf("service %s is not mapped to a Service Fabric service", svc.Name)
	}
	where := fmt.Sprintf("service %s (%s)", svc.Name, ms.FabricName)
	parts, err := s.client.Partitions(ctx, ms.serviceID)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	scheme := svc.Scheme()
	sv := &resolver.ServiceView{Name: svc.Name, Kind: scheme.Kind(), Partitions: make([]resolver.Partition, scheme.Count())}
	found := make([]bool, scheme.Count())
	for _, p := range parts {
		i, err := indexOf(scheme, p.Partition)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		if found[i] {
			return nil, fmt.Errorf("%s: Service Fabric lists partroute.yaml's partition %s twice", where, describeIndex(scheme, i))
		}
		found[i] = true
		sv.Partitions[i] = resolver.Partition{ID: p.Partition.ID, Index: i, LowKey: p.Partition.LowKey, HighKey: p.Partition.HighKey, Name: p.Partition.Name}
	}
	var missing []string
	for i, ok := range found {
		if !ok {
			missing = append(missing, describeIndex(scheme, i))
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%s: Service Fabric has no partition for partroute.yaml's %s; the partitioning must match the service's", where, strings.Join(missing, ", "))
	}

	// The replica lists are fetched side by side; the client's own limit bounds how many
	// requests that puts in flight.
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(cap(s.client.sem))
	for i := range sv.Partitions {
		p := &sv.Partitions[i]
		g.Go(func() error {
			reps, err := s.client.Replicas(gctx, p.ID)
			if err != nil {
				return fmt.Errorf("%s partition %s: %w", where, p.ID, err)
			}
			p.Replicas = s.replicasOf(svc.Name, ms, p.ID, reps)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	return sv, nil
}

// replicasOf turns a partition's replicas into the ones partroute routes to.
func (s *Source) replicasOf(service string, ms mapped, partitionID string, reps []ReplicaInfo) []resolver.Replica {
	out := make([]resolver.Replica, 0, len(reps))
	at := map[string]int{}
	for _, r := range reps {
		if !strings.EqualFold(r.ReplicaStatus, "Ready") {
			continue
		}
		role, ok := replicaRole(r)
		if !ok {
			continue
		}
		a, err := ParseAddress(r.Address, ms.ListenerName)
		if err != nil {
			s.m.badAddresses.Inc()
			s.log.Warn("Service Fabric replica skipped", "service", service, "fabricName", ms.FabricName, "partition", partitionID, "replica", r.ID, "node", r.NodeName, "error", err)
			continue
		}
		healthy := !strings.EqualFold(r.HealthState, "Error")
		if j, dup := at[a.HostPort]; dup {
			// Two replicas at one address: the primary role and good health win, so that
			// the address stays reachable for what either could serve.
			if role == resolver.RolePrimary {
				out[j].Role = role
			}
			out[j].Healthy = out[j].Healthy || healthy
			continue
		}
		at[a.HostPort] = len(out)
		out = append(out, resolver.Replica{Address: a.HostPort, Role: role, Healthy: healthy})
	}
	sortReplicas(out)
	return out
}

// replicaRole maps a listed replica to the role partroute routes by: the primary and the
// active secondaries of a stateful service, and every instance of a stateless one (as a
// primary, for the reason endpointRole gives). Idle secondaries are still being built and
// auxiliary replicas serve no requests, so they are not routed to.
func replicaRole(r ReplicaInfo) (resolver.Role, bool) {
	if strings.EqualFold(r.ServiceKind, "Stateless") || r.ServiceKind == "" && r.ReplicaRole == "" {
		return resolver.RolePrimary, true
	}
	switch {
	case strings.EqualFold(r.ReplicaRole, "Primary"):
		return resolver.RolePrimary, true
	case strings.EqualFold(r.ReplicaRole, "ActiveSecondary"):
		return resolver.RoleSecondary, true
	}
	return 0, false
}

// indexOf finds the place in the configured scheme of a partition Service Fabric listed.
func indexOf(scheme *keying.Scheme, p PartitionInformation) (int, error) {
	want := map[keying.SchemeKind]PartitionKind{keying.UniformInt64: KindInt64Range, keying.Named: KindNamed, keying.Singleton: KindSingleton}[scheme.Kind()]
	if p.Kind != want {
		return 0, fmt.Errorf("partroute.yaml says %s but the Service Fabric partition %s is %s; the partitioning must match the service's", scheme.Kind(), p.ID, p.Kind)
	}
	switch scheme.Kind() {
	case keying.UniformInt64:
		i, ok := scheme.PartitionOfInt64(p.LowKey)
		if lo, hi := scheme.Bounds(i); !ok || lo != p.LowKey || hi != p.HighKey {
			return 0, fmt.Errorf("the Service Fabric partition %s covers [%d, %d], which is not a partition of partroute.yaml's scheme %s; the partitioning must match the service's", p.ID, p.LowKey, p.HighKey, describeScheme(scheme))
		}
		return i, nil
	case keying.Named:
		i, ok := scheme.PartitionOfName(p.Name)
		if !ok {
			return 0, fmt.Errorf("the Service Fabric partition %s is named %s, which partroute.yaml's names %s do not include; the partitioning must match the service's", p.ID, quote(p.Name), describeScheme(scheme))
		}
		return i, nil
	}
	return 0, nil
}

func describeIndex(s *keying.Scheme, i int) string {
	switch s.Kind() {
	case keying.UniformInt64:
		lo, hi := s.Bounds(i)
		return fmt.Sprintf("[%d, %d]", lo, hi)
	case keying.Named:
		return quote(s.Names()[i])
	}
	return "singleton partition"
}

func describeScheme(s *keying.Scheme) string {
	const show = 8
	parts := make([]string, 0, show+1)
	for i := 0; i < s.Count(); i++ {
		if i == show {
			parts = append(parts, fmt.Sprintf("... (%d in all)", s.Count()))
			break
		}
		parts = append(parts, describeIndex(s, i))
	}
	return strings.Join(parts, " ")
}

func samePartition(a, b *resolver.Partition) bool {
	if a.ID != b.ID || a.LowKey != b.LowKey || a.HighKey != b.HighKey || a.Name != b.Name || len(a.Replicas) != len(b.Replicas) {
		return false
	}
	for i := range a.Replicas {
		if a.Replicas[i] != b.Replicas[i] {
			return false
		}
	}
	return true
}

// newView assembles a view and its Version: 16 hex digits of a hash of every field (the form
// every naming source's version takes), services in name order, partitions in index order and
// replicas in the sorted order they are kept in.
func newView(svs map[string]*resolver.ServiceView) *resolver.View {
	names := make([]string, 0, len(svs))
	for name := range svs {
		names = append(names, name)
	}
	sort.Strings(names)
	h := sha256.New()
	for _, name := range names {
		sv := svs[name]
		fmt.Fprintf(h, "service %q %d %d\n", name, sv.Kind, len(sv.Partitions))
		for i := range sv.Partitions {
			p := &sv.Partitions[i]
			fmt.Fprintf(h, "partition %d %q %d %d %q %d\n", p.Index, p.ID, p.LowKey, p.HighKey, p.Name, len(p.Replicas))
			for _, r := range p.Replicas {
				fmt.Fprintf(h, "replica %q %d %t\n", r.Address, r.Role, r.Healthy)
			}
		}
	}
	sum := h.Sum(nil)
	return &resolver.View{Version: hex.EncodeToString(sum[:8]), Services: svs}
}

// joinSorted joins per-service errors in service name order, so that messages are stable.
func joinSorted(errs map[string]error) error {
	names := make([]string, 0, len(errs))
	for name := range errs {
		names = append(names, name)
	}
	sort.Strings(names)
	list := make([]error, 0, len(names))
	for _, name := range names {
		list = append(list, errs[name])
	}
	return errors.Join(list...)
}
