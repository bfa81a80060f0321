package servicefabric

import (
	"context"
	"fmt"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
)

// The methods of this file make Source a naming source of partroute's server: decisions come
// from ResolvePartition through the resolution cache, Envoy's endpoints from an enumeration of
// the services' partitions and replicas, repeated every EnumerateInterval.

// initialWaitMax bounds the wait between two attempts of the first enumeration.
const initialWaitMax = 5 * time.Second

// Initial enumerates every mapped service once, retrying with a bounded backoff while ctx
// allows, so that partroute is ready only when the gateway answers and Envoy can be given its
// endpoints.
func (s *Source) Initial(ctx context.Context, cfg *config.Config) (resolver.Snapshot, error) {
	if err := s.Check(cfg); err != nil {
		return resolver.Snapshot{}, err
	}
	wait := 100 * time.Millisecond
	for {
		view, err := s.Enumerate(ctx, cfg)
		if err == nil {
			return s.snapshot(view), nil
		}
		s.log.Warn("waiting for the Service Fabric gateway", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resolver.Snapshot{}, fmt.Errorf("service fabric naming view: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, initialWaitMax)
	}
}

// ForConfig takes the new configuration's service mappings and enumerates at once, so that
// Envoy gets the clusters of added services with the configuration that adds them. When it
// fails, the mappings of the configuration still served are put back.
func (s *Source) ForConfig(ctx context.Context, cfg *config.Config) (_ resolver.Snapshot, err error) {
	previous := s.Services()
	if err := s.SetServices(MappingsFromConfig(cfg)); err != nil {
		return resolver.Snapshot{}, err
	}
	defer func() {
		if err != nil {
			// The previous mappings were valid when they were set, so they still are.
			_ = s.SetServices(previous)
		}
	}()
	if err := s.Check(cfg); err != nil {
		return resolver.Snapshot{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, forConfigTimeout)
	defer cancel()
	view, err := s.Enumerate(ctx, cfg)
	if err != nil {
		return resolver.Snapshot{}, err
	}
	return s.snapshot(view), nil
}

// forConfigTimeout bounds the enumeration of a configuration reload.
const forConfigTimeout = 10 * time.Second

// Watch enumerates every EnumerateInterval (and at once after an accepted failure signal)
// until ctx ends, handing each changed view to changed.
func (s *Source) Watch(ctx context.Context, current func() *config.Config, changed func(resolver.Snapshot) error) {
	s.Run(ctx, s.enumerateEvery, current, func(v *resolver.View) { _ = changed(s.snapshot(v)) })
}

// Status reports the source as current: a failed enumeration keeps the last view, and
// decisions come from ResolvePartition, whose cache has its own staleness limit.
func (s *Source) Status() (current bool, detail string) { return true, "" }

// Close releases nothing: the gateway client's connections close with the process.
func (s *Source) Close() error { return nil }

// snapshot is what the source serves with view: lookups through itself, and itself as the
// listener of upstream responses, which re-resolves a partition whose replica answered as if
// the partition had moved.
func (s *Source) snapshot(view *resolver.View) resolver.Snapshot {
	return resolver.Snapshot{Naming: s, View: view, Upstream: s}
}
