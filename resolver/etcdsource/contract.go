package etcdsource

import (
	"context"
	"fmt"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
)

// The methods of this file make Source a naming source of partroute's server: the view is
// read from etcd once, then followed with a watch.

// Initial reads the view, retrying with a bounded backoff while ctx allows: a partroute started
// before etcd is reachable waits, unready, rather than exiting.
func (s *Source) Initial(ctx context.Context, cfg *config.Config) (resolver.Snapshot, error) {
	wait := s.opts.BackoffMin
	for {
		view, _, err := s.Load(ctx, cfg)
		if err == nil {
			return resolver.Snapshot{Naming: view, View: view}, nil
		}
		s.log.Warn("waiting for the etcd naming view", "prefix", s.prefix, "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return resolver.Snapshot{}, fmt.Errorf("etcd naming view: %w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, s.opts.BackoffMax)
	}
}

// ForConfig checks the content last read against a new configuration.
func (s *Source) ForConfig(_ context.Context, cfg *config.Config) (resolver.Snapshot, error) {
	view, err := s.Rebuild(cfg)
	if err != nil {
		return resolver.Snapshot{}, err
	}
	return resolver.Snapshot{Naming: view, View: view}, nil
}

// Watch follows the view (Run) until ctx ends, handing each new valid view to changed.
func (s *Source) Watch(ctx context.Context, current func() *config.Config, changed func(resolver.Snapshot) error) {
	s.Run(ctx, current, func(v *resolver.View) { _ = changed(resolver.Snapshot{Naming: v, View: v}) })
}

// Status says whether the view served is current. A stale view does not make partroute
// unready: it is still the best one there is.
func (s *Source) Status() (current bool, detail string) {
	if s.Stale() {
		return false, "naming view stale: etcd unreachable or the watch is down; serving the last view"
	}
	return true, ""
}
