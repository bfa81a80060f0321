package main

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
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
	// status says whether the naming being served is current, for /readyz.
	status() (current bool, detail string)
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

func (f *etcdFollower) close() { _ = f.src.Close() }
