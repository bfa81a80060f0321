package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"sync"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/xds"
)

// applier holds what partroute serves, the decisions' state and Envoy's xDS snapshot, and
// changes both together. Configuration reloads and naming changes arrive from different
// goroutines; the lock keeps each change whole.
type applier struct {
	mu       sync.Mutex
	res      *resolver.Resolver
	xds      *xds.Server // nil when partroute serves no xDS
	src      NamingSource
	sources  *resolver.SourceMetrics
	requests *extproc.Metrics
	log      *slog.Logger
	// ctx bounds the waits for Envoy's acknowledgements; cancelPublish ends the wait for the
	// state staged last, when another replaces it.
	ctx           context.Context
	cancelPublish context.CancelFunc
}

// change is a configuration to serve (with the snapshot its naming source gives for it) or a
// naming snapshot to serve with the configuration in force.
type change struct {
	config   *config.Config
	snapshot resolver.Snapshot
}

// errChangeRefused wraps every refusal, so that callers can tell one from other failures.
var errChangeRefused = errors.New("change refused")

// apply is the one step through which a change is served: it is checked, turned into the new
// resolver state and xDS snapshot, and swapped in at once; or it is refused whole, and what
// was served stays. It is also the one place that records a naming view as served.
func (a *applier) apply(ctx context.Context, ch change) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	cur := a.res.State()
	cfg, snap := cur.Config, ch.snapshot
	if ch.config != nil {
		cfg = ch.config
		if cfg.Naming.Source != cur.Config.Naming.Source {
			return fmt.Errorf("%w: naming.source changed from %s to %s; that takes a restart", errChangeRefused, cur.Config.Naming.Source, cfg.Naming.Source)
		}
		s, err := a.src.ForConfig(ctx, cfg)
		if err != nil {
			return fmt.Errorf("%w: the naming view does not fit the new configuration: %w", errChangeRefused, err)
		}
		snap = s
	} else if err := snap.View.Fits(cfg); err != nil {
		// The view was built for the configuration of its time; a reload since may have
		// changed a scheme, and then the reload's own view is the one to keep.
		return fmt.Errorf("%w: %w", errChangeRefused, err)
	}
	var versions xds.Versions
	if a.xds != nil {
		var err error
		if versions, err = a.xds.Update(cfg, snap.View, envoyconfig.Options{}); err != nil {
			if ch.config != nil {
				// The source may have adopted the new configuration; it returns to the one
				// still served.
				if _, rerr := a.src.ForConfig(ctx, cur.Config); rerr != nil {
					a.log.Warn("the naming source could not return to the configuration served", "error", rerr)
				}
			}
			return fmt.Errorf("%w: no xds snapshot can be built from the naming view: %w", errChangeRefused, err)
		}
	}
	st := resolver.StateOf(cfg, snap)
	if a.xds != nil {
		a.stage(st, versions)
	} else {
		a.res.Swap(st)
	}
	a.requests.Init(cfg)
	a.sources.Served(snap.View, time.Now())
	a.log.Info("naming view served", "source", cfg.Naming.Source, "version", snap.View.Version, "services", len(snap.View.Services))
	if ch.config != nil {
		// Warned only for a change that was served: a refused one is offered again, and
		// would warn at every offer.
		warnRestartOnly(a.log, cur.Config, cfg)
	}
	return nil
}

// stage serves st to new requests at once, and publishes it to the requests held for a
// failover once every Envoy connected to the xDS server has acknowledged the snapshot built
// with it (v): a held write released earlier could be sent to a subset Envoy does not have
// yet, or to the primary it still knows, the old one. A state replaced before that is never
// published. a.mu is held.
func (a *applier) stage(st *resolver.State, v xds.Versions) {
	a.res.Stage(st)
	if a.cancelPublish != nil {
		a.cancelPublish()
	}
	ctx := a.ctx
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithCancel(ctx)
	a.cancelPublish = cancel
	go func() {
		defer cancel()
		if a.xds.WaitDelivered(ctx, v) != nil {
			return
		}
		a.mu.Lock()
		defer a.mu.Unlock()
		// Only the state staged last is published: an acknowledgement that arrives as a newer
		// state is staged must not release requests to the older one.
		if a.res.State() == st {
			a.res.Publish(st)
		}
	}()
}

// namingChanged serves a snapshot from the naming source's Watch. A refusal is counted and
// logged here: the source offers each of its changes once (the file source offers a refused
// one again after a backoff, and counts its own rejected content).
func (a *applier) namingChanged(snap resolver.Snapshot) error {
	err := a.apply(context.Background(), change{snapshot: snap})
	if err != nil {
		a.sources.Failed()
		a.log.Error("naming change refused; still serving the previous naming view", "source", a.res.State().Config.Naming.Source, "error", err)
	}
	return err
}

// warnRestartOnly logs each setting that differs between the configuration served and a
// reloaded one but takes effect only on restart: the reload is applied, and without the
// warning the operator would believe the setting was too.
func warnRestartOnly(log *slog.Logger, cur, next *config.Config) {
	for _, s := range []struct {
		field   string
		changed bool
	}{
		{"listen", listenAddresses(cur.Listen) != listenAddresses(next.Listen)},
		// The files listen.tls names are followed without a restart; which files, and
		// whether a listener serves TLS at all, take one.
		{"listen.tls", cur.Listen.TLS != next.Listen.TLS},
		{"cache", cur.Cache != next.Cache},
		{"naming.etcd", !reflect.DeepEqual(cur.Naming.Etcd, next.Naming.Etcd)},
		{"naming.servicefabric", cur.Naming.ServiceFabric != next.Naming.ServiceFabric},
		{"limits.extproc.maxConcurrentStreams", cur.Limits.ExtProc.MaxConcurrentStreams != next.Limits.ExtProc.MaxConcurrentStreams},
		{"limits.xds.maxConcurrentStreams", cur.Limits.XDS.MaxConcurrentStreams != next.Limits.XDS.MaxConcurrentStreams},
		{"limits.admin.readTimeout", cur.Limits.Admin.ReadTimeout != next.Limits.Admin.ReadTimeout},
		{"limits.admin.writeTimeout", cur.Limits.Admin.WriteTimeout != next.Limits.Admin.WriteTimeout},
		{"limits.admin.idleTimeout", cur.Limits.Admin.IdleTimeout != next.Limits.Admin.IdleTimeout},
		{"limits.admin.maxHeaderBytes", cur.Limits.Admin.MaxHeaderBytes != next.Limits.Admin.MaxHeaderBytes},
	} {
		if s.changed {
			log.Warn("a setting changed in the configuration takes effect on restart; the rest of the change is applied", "field", s.field)
		}
	}
}

// listenAddresses is a listen section without its TLS settings, which are warned about apart.
func listenAddresses(l config.Listen) config.Listen {
	l.TLS = config.ListenTLS{}
	return l
}
