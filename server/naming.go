package server

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/servicefabric"
)

// NamingSource is where the naming views partroute serves come from: the naming file
// (resolver.FileNaming), etcd (etcdsource.Source) or a Service Fabric cluster
// (servicefabric.Source). The server holds one source for its lifetime; a change of
// naming.source takes a restart.
//
// A Snapshot a source returns is immutable and built for the configuration it was asked for.
// Its Naming answers lookups concurrently from every ext_proc stream; its View is what Envoy's
// endpoints are built from; its Upstream, when set, hears how routed requests were answered.
//
// Calls, and the goroutines they come from:
//   - Initial is called once, before anything is served, from the goroutine of Run. It may
//     wait for the source to become reachable while ctx allows; an error ends Run.
//   - ForConfig is called from the configuration watcher's goroutine when a new configuration
//     is about to be applied, under the server's apply lock (so never concurrently with itself),
//     possibly while Watch runs. It returns the snapshot for that configuration, or an error
//     when the source's content does not fit it: the configuration is then refused whole. When
//     the server refuses the change for another reason after ForConfig succeeded, it calls
//     ForConfig again with the configuration it keeps serving, so that a source that adopted
//     the new configuration returns to the old one. ctx bounds the call.
//   - Watch is called once, on a goroutine of its own, and follows the source until ctx ends.
//     It calls changed, from that goroutine, with each new snapshot, built for the
//     configuration current returns at the time. changed returns an error when the server
//     refuses the snapshot (it no longer fits the configuration, or Envoy could not be given
//     it); the source may offer the same content again later (the file source does, after a
//     backoff), or wait for its next change. changed blocks while the change is applied.
//   - Status may be called from any goroutine, at any time: whether the view served is
//     current, and why not. A stale view does not make partroute unready.
//   - Close is called once, after Watch has returned.
type NamingSource interface {
	Initial(ctx context.Context, cfg *config.Config) (resolver.Snapshot, error)
	ForConfig(ctx context.Context, cfg *config.Config) (resolver.Snapshot, error)
	Watch(ctx context.Context, current func() *config.Config, changed func(resolver.Snapshot) error)
	Status() (current bool, detail string)
	Close() error
}

// newNamingSource returns the source that cfg names.
func newNamingSource(cfg *config.Config, poll time.Duration, metrics *resolver.SourceMetrics, reg prometheus.Registerer, log *slog.Logger) (NamingSource, error) {
	switch cfg.Naming.Source {
	case config.SourceFile:
		return resolver.NewFileNaming(poll, metrics, log), nil
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
		return src, nil
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
		return src, nil
	}
	return nil, fmt.Errorf("naming.source %s is not supported by partroute serve", cfg.Naming.Source)
}

// The sources implement the contract directly.
var (
	_ NamingSource = (*resolver.FileNaming)(nil)
	_ NamingSource = (*etcdsource.Source)(nil)
	_ NamingSource = (*servicefabric.Source)(nil)
)
