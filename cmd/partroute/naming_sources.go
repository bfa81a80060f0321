package main

import (
	"context"
	"fmt"
	"log/slog"
	"reflect"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/servicefabric"
)

// namingFollower keeps the naming view of a source other than the configuration's own file
// current. The file source needs none: its view is reloaded together with the configuration.
type namingFollower interface {
	// initial returns the first naming for cfg, waiting for the source while ctx allows.
	initial(ctx context.Context, cfg *config.Config) (resolver.Naming, *resolver.View, error)
	// forConfig returns the naming for a new configuration, or an error when the source's
	// content does not fit it (the configuration is then refused).
	forConfig(cfg *config.Config) (resolver.Naming, *resolver.View, error)
	// run follows the source until ctx ends, calling apply with every change.
	run(ctx context.Context, cfg func() *config.Config, apply func(resolver.Naming, *resolver.View))
	// status says whether the naming being served is current, for /debug/naming. It does not
	// make partroute unready: a stale view is still the best one there is.
	status() (current bool, detail string)
	// upstream is the listener that hears how the replicas it resolved answered, or nil.
	upstream() resolver.UpstreamListener
	close()
}

// newNamingFollower returns the follower of cfg's naming source, or nil for the file source.
func newNamingFollower(cfg *config.Config, metrics *resolver.SourceMetrics, reg prometheus.Registerer, log *slog.Logger) (namingFollower, error) {
	switch cfg.Naming.Source {
	case config.SourceEtcd:
		src, err := etcdsource.New(etcdsource.Options{
			Endpoints:   cfg.Naming.Etcd.Endpoints,
			DialTimeout: cfg.Naming.Etcd.DialTimeout,
			Prefix:      cfg.Naming.Etcd.Prefix,
			Metrics:     metrics,
			Registerer:  reg,
			Log:         log,
		})
		if err != nil {
			return nil, fmt.Errorf("naming.etcd: %w", err)
		}
		return &etcdFollower{src: src, log: log}, nil
	case config.SourceServiceFabric:
		copts := servicefabric.ClientOptionsFromConfig(cfg.Naming.ServiceFabric)
		copts.Metrics = reg
		client, err := servicefabric.NewClient(copts)
		if err != nil {
			return nil, fmt.Errorf("naming.servicefabric: %w", err)
		}
		sopts := servicefabric.SourceOptionsFromConfig(cfg, client)
		sopts.Metrics, sopts.Log = reg, log
		src, err := servicefabric.NewSource(sopts)
		if err != nil {
			return nil, fmt.Errorf("naming.servicefabric: %w", err)
		}
		return &fabricFollower{src: src, interval: cfg.Naming.ServiceFabric.EnumerateInterval, log: log}, nil
	case config.SourceFile:
		return nil, nil
	}
	return nil, fmt.Errorf("naming.source %s is not supported by partroute serve", cfg.Naming.Source)
}

type etcdFollower struct {
	src *etcdsource.Source
	log *slog.Logger
}

// initial reads the view, retrying with a bounded backoff: partroute started before etcd is
// reachable waits, unready, rather than exiting.
func (f *etcdFollower) initial(ctx context.Context, cfg *config.Config) (resolver.Naming, *resolver.View, error) {
	wait := 100 * time.Millisecond
	for {
		view, _, err := f.src.Load(ctx, cfg)
		if err == nil {
			return view, view, nil
		}
		f.log.Warn("waiting for the etcd naming view", "prefix", f.src.Prefix(), "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("etcd naming view: %w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

func (f *etcdFollower) forConfig(cfg *config.Config) (resolver.Naming, *resolver.View, error) {
	view, err := f.src.Rebuild(cfg)
	if err != nil {
		return nil, nil, err
	}
	return view, view, nil
}

func (f *etcdFollower) run(ctx context.Context, cfg func() *config.Config, apply func(resolver.Naming, *resolver.View)) {
	f.src.Run(ctx, cfg, func(v *resolver.View) { apply(v, v) })
}

func (f *etcdFollower) status() (bool, string) {
	if f.src.Stale() {
		return false, "naming view stale: etcd unreachable or the watch is down; serving the last view"
	}
	return true, ""
}

func (f *etcdFollower) upstream() resolver.UpstreamListener { return nil }

func (f *etcdFollower) close() { _ = f.src.Close() }

// fabricFollower serves decisions from Service Fabric's ResolvePartition, through the
// resolution cache, and Envoy's endpoints from a periodic enumeration of the services'
// partitions and replicas.
type fabricFollower struct {
	src      *servicefabric.Source
	interval time.Duration
	log      *slog.Logger
}

// initial enumerates every mapped service once, retrying with a bounded backoff, so that
// partroute is ready only when the gateway answers and Envoy can be given its endpoints.
func (f *fabricFollower) initial(ctx context.Context, cfg *config.Config) (resolver.Naming, *resolver.View, error) {
	if err := f.src.Check(cfg); err != nil {
		return nil, nil, err
	}
	wait := 100 * time.Millisecond
	for {
		view, err := f.src.Enumerate(ctx, cfg)
		if err == nil {
			return f.src, view, nil
		}
		f.log.Warn("waiting for the Service Fabric gateway", "error", err, "retry_in", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, nil, fmt.Errorf("service fabric naming view: %w (last error: %v)", ctx.Err(), err)
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// forConfig takes the new configuration's service mappings and enumerates at once, so that
// Envoy gets the clusters of added services with the configuration that adds them. When the
// new configuration is refused, the mappings of the one still served are put back.
func (f *fabricFollower) forConfig(cfg *config.Config) (_ resolver.Naming, _ *resolver.View, err error) {
	previous := f.src.Services()
	if err := f.src.SetServices(servicefabric.MappingsFromConfig(cfg)); err != nil {
		return nil, nil, err
	}
	defer func() {
		if err != nil {
			// The previous mappings were valid when they were set, so they still are.
			_ = f.src.SetServices(previous)
		}
	}()
	if err := f.src.Check(cfg); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	view, err := f.src.Enumerate(ctx, cfg)
	if err != nil {
		return nil, nil, err
	}
	return f.src, view, nil
}

func (f *fabricFollower) run(ctx context.Context, cfg func() *config.Config, apply func(resolver.Naming, *resolver.View)) {
	f.src.Run(ctx, f.interval, cfg, func(v *resolver.View) { apply(f.src, v) })
}

func (f *fabricFollower) status() (bool, string) { return true, "" }

// upstream is the source itself: it re-resolves a partition whose replica answered as if the
// partition had moved.
func (f *fabricFollower) upstream() resolver.UpstreamListener { return f.src }

func (f *fabricFollower) close() {}

// warnRestartOnly logs each setting that differs between the configuration served and a
// reloaded one but takes effect only on restart: the reload is applied, and without the
// warning the operator would believe the setting was too.
func warnRestartOnly(log *slog.Logger, cur, next *config.Config) {
	for _, s := range []struct {
		field   string
		changed bool
	}{
		{"listen", cur.Listen != next.Listen},
		{"cache", cur.Cache != next.Cache},
		{"naming.etcd", !reflect.DeepEqual(cur.Naming.Etcd, next.Naming.Etcd)},
		{"naming.servicefabric", cur.Naming.ServiceFabric != next.Naming.ServiceFabric},
	} {
		if s.changed {
			log.Warn("a setting changed in the configuration takes effect on restart; the rest of the change is applied", "field", s.field)
		}
	}
}
