package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/xds"
)

// Run runs partroute until ctx ends, then drains: NOT_SERVING first, so that Envoy stops
// sending, then a graceful stop bounded by the shutdown timeout. It returns an error when the
// options are invalid, when the configuration or the first naming view cannot be loaded or a
// listener cannot be opened (partroute never served), or, as a *ServingError, when a server
// failed while partroute was serving.
func Run(ctx context.Context, o Options) error {
	if err := o.Validate(); err != nil {
		return err
	}
	log, reg := o.Log, o.Registry
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "partroute_build_info",
		Help: "1, labelled with the running build's version and Go version.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(o.Version, runtime.Version()).Set(1)
	reg.MustRegister(buildInfo)

	sources := resolver.NewSourceMetrics(reg)
	cfgWatch := newConfigWatcher(o.ConfigPath, sources, log)
	cfg, err := cfgWatch.load()
	if err != nil {
		return err
	}
	tlsFiles, err := loadTLS(o.ConfigPath, cfg, reg, log)
	if err != nil {
		return err
	}
	src, err := newNamingSource(cfg, o.Poll, sources, reg, log)
	if err != nil {
		return err
	}
	// The source is closed last, after every goroutine that uses it has ended (deferred
	// first, so run last).
	defer func() { _ = src.Close() }()
	snap, err := src.Initial(ctx, cfg)
	if err != nil {
		return err
	}
	res := resolver.New(resolver.StateOf(cfg, snap))
	res.SetHoldMetrics(resolver.NewHoldMetrics(reg))
	// runCtx outlives the signal that starts the drain: while the ext_proc streams finish,
	// partroute keeps following the configuration and naming changes and Envoy keeps its xDS
	// stream, so that no request in the drain is routed by a view older than it should be.
	// It ends when Run returns.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	var xdsSrv *xds.Server
	if cfg.Listen.XDS != "" {
		xdsSrv = xds.New(runCtx, log, reg, xds.Options{BindNodeID: cfg.Listen.TLS.XDS.BindNodeID})
		if _, err := xdsSrv.Update(cfg, snap.View, envoyconfig.Options{}); err != nil {
			return err
		}
	}
	requests := extproc.NewMetrics(reg)
	requests.Init(cfg)
	sources.Served(snap.View, time.Now())
	log.Info("naming view served", "source", cfg.Naming.Source, "version", snap.View.Version, "services", len(snap.View.Services))
	ap := &applier{res: res, xds: xdsSrv, src: src, sources: sources, requests: requests, log: log, ctx: runCtx}

	l, err := listen(cfg)
	if err != nil {
		return err
	}
	// The limits are read from the configuration served, so that a reload changes those that
	// can change without a restart (docs/reliability.md).
	limits := func() *config.Limits { return &res.State().Config.Limits }
	conns := newListenerMetrics(reg)
	extprocLis := limitConnections(l.extproc, listenerExtProc, func() int { return limits().ExtProc.MaxConnections }, conns)
	l.extproc = extprocLis
	l.admin = limitConnections(l.admin, listenerAdmin, func() int { return limits().Admin.MaxConnections }, conns)
	guard := newStreamGuard(func() *config.ExtProcLimits { return &limits().ExtProc }, extprocLis, reg, log)
	gs := grpc.NewServer(withTLS(append(ExtProcServerOptions(o.MaxConnectionAge, o.StreamWorkers), extProcLimitOptions(cfg.Limits.ExtProc)...), tlsFiles.extproc)...)
	extprocv3.RegisterExternalProcessorServer(gs, guard.wrap(extproc.NewHandler(res, requests, log)))
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(gs, healthSrv)
	var ready atomic.Bool
	admin := adminServer(adminMux(reg, res, &ready, src, xdsSrv), cfg.Limits.Admin)
	errc := make(chan error, 3)
	go func() { errc <- gs.Serve(l.extproc) }()
	adminLis := l.admin
	if tlsFiles.admin != nil {
		adminLis = tlsFiles.admin.Listener(l.admin)
	}
	go func() { errc <- admin.Serve(adminLis) }()
	if xdsSrv != nil {
		xdsGRPC := grpc.NewServer(withTLS(xdsServerOptions(cfg.Limits.XDS), tlsFiles.xds)...)
		xdsSrv.Register(xdsGRPC)
		xdsLis := limitConnections(l.xds, listenerXDS, func() int { return limits().XDS.MaxConnections }, conns)
		go func() { errc <- xdsGRPC.Serve(xdsLis) }()
		defer xdsGRPC.Stop()
		log.Info("xds serving", "address", l.xds.Addr().String())
	}

	// The watchers end before the naming source is closed, so that none of them uses a
	// closed source.
	watchCtx, stopWatch := context.WithCancel(runCtx)
	var watchers sync.WaitGroup
	defer func() { stopWatch(); watchers.Wait() }()
	watchers.Go(func() {
		cfgWatch.watch(watchCtx, o.Poll, o.Reload, func(next *config.Config) error {
			return ap.apply(watchCtx, change{config: next})
		})
	})
	watchers.Go(func() {
		src.Watch(watchCtx, func() *config.Config { return res.State().Config }, ap.namingChanged)
	})
	// Idle ext_proc streams are ended during the drain too.
	watchers.Go(func() { guard.sweep(watchCtx) })
	// The certificate files rotate without a restart, though listen.tls itself takes one.
	tlsFiles.watch(watchCtx, o.Poll, watchers.Go)

	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthSrv.SetServingStatus(contract.ExtProcService(), healthpb.HealthCheckResponse_SERVING)
	ready.Store(true)
	log.Info("partroute serving", "extproc", l.extproc.Addr().String(), "admin", l.admin.Addr().String(), "version", o.Version)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}

	log.Info("draining", "drain_delay", o.DrainDelay, "shutdown_timeout", o.ShutdownTimeout)
	ready.Store(false)
	healthSrv.Shutdown() // every service NOT_SERVING
	if runErr == nil {
		// Envoy learns NOT_SERVING at its next health check; until then requests keep coming
		// and are answered normally.
		timer := time.NewTimer(o.DrainDelay)
		<-timer.C
	}
	// Requests held for a failover are answered now, routed or 503, and none is held from
	// here on: the graceful stop below waits for every stream, and the shutdown timeout must
	// not cut a held one off without an answer.
	res.Drain()
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(o.ShutdownTimeout)
	select {
	case <-stopped:
		timer.Stop()
	case <-timer.C:
		log.Warn("streams still open at the shutdown timeout; closing them")
		gs.Stop()
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = admin.Shutdown(shutdownCtx)
	log.Info("partroute stopped")
	if runErr != nil && !errors.Is(runErr, http.ErrServerClosed) && !errors.Is(runErr, grpc.ErrServerStopped) {
		return &ServingError{Err: runErr}
	}
	return nil
}

// ServingError is a failure that stopped partroute after it had started serving, as opposed to
// one that kept it from starting (a broken configuration, a port in use). The binary logs the
// first kind like everything partroute did meanwhile, and prints the second in plain text, a
// problem a line.
type ServingError struct{ Err error }

func (e *ServingError) Error() string { return e.Err.Error() }
func (e *ServingError) Unwrap() error { return e.Err }

// unixSocketMode is the mode of partroute's unix domain socket: its owner and group may
// connect, so a colocated Envoy in partroute's group can, and other local users cannot.
const unixSocketMode = 0o660

// listenOn opens a TCP listener on host:port, or a unix domain socket on "unix:/path". A socket
// file left at the path by a partroute that did not stop cleanly is removed first; any other
// file there is an error, never removed.
func listenOn(addr string) (net.Listener, error) {
	path, ok := config.UnixSocketPath(addr)
	if !ok {
		return net.Listen("tcp", addr)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("%s exists and is not a socket", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing the stale socket: %w", err)
		}
	}
	lis, err := net.Listen("unix", path)
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(path, unixSocketMode); err != nil {
		lis.Close()
		return nil, err
	}
	return lis, nil
}

// listeners are the sockets Run serves on.
type listeners struct {
	extproc, admin, xds net.Listener
}

// listen opens the listeners of cfg's listen section, closing those it opened when one fails.
func listen(cfg *config.Config) (*listeners, error) {
	var l listeners
	var opened []net.Listener
	open := func(field, addr string, into *net.Listener) error {
		lis, err := listenOn(addr)
		if err != nil {
			for _, o := range opened {
				o.Close()
			}
			return fmt.Errorf("listen.%s: %w", field, err)
		}
		opened = append(opened, lis)
		*into = lis
		return nil
	}
	if err := open("extproc", cfg.Listen.ExtProc, &l.extproc); err != nil {
		return nil, err
	}
	if err := open("admin", cfg.Listen.Admin, &l.admin); err != nil {
		return nil, err
	}
	if cfg.Listen.XDS != "" {
		if err := open("xds", cfg.Listen.XDS, &l.xds); err != nil {
			return nil, err
		}
	}
	return &l, nil
}
