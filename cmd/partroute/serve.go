package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/xds"
)

// extProcServiceName is the gRPC service Envoy's health check asks about.
const extProcServiceName = "envoy.service.ext_proc.v3.ExternalProcessor"

// serveOptions are the flags of `partroute serve`.
type serveOptions struct {
	configPath      string
	logLevel        string
	logFormat       string
	poll            time.Duration
	drainDelay      time.Duration
	shutdownTimeout time.Duration
	maxConnAge      time.Duration
}

func runServe(args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o serveOptions
	fs.StringVar(&o.configPath, "config", "", "partroute.yaml (required)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&o.poll, "poll", time.Second, "how often the configuration and naming files are checked for changes")
	fs.DurationVar(&o.drainDelay, "drain-delay", 2*time.Second, "on SIGTERM, how long to report NOT_SERVING while still answering, so Envoy's health check moves traffic away first")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM, how long streams in flight may take to finish after the drain delay")
	fs.DurationVar(&o.maxConnAge, "max-connection-age", 5*time.Minute, "age at which a gRPC connection is asked to reconnect, so that Envoy rebalances over partroute replicas")
	if err := fs.Parse(args); err != nil {
		return parseExit(err)
	}
	if o.configPath == "" || fs.NArg() != 0 {
		fmt.Fprintln(stderr, "usage: partroute serve -config FILE [flags]")
		return 1
	}
	log, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "partroute serve:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := serve(ctx, o, hup, log); err != nil {
		log.Error("partroute stopped", "error", err)
		return 1
	}
	return 0
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("-log-level %q is not debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("-log-format %q is not text or json", format)
}

// serve runs partroute until ctx ends, then drains: NOT_SERVING first, so that Envoy stops
// sending, then a graceful stop bounded by the shutdown timeout.
func serve(ctx context.Context, o serveOptions, hup <-chan os.Signal, log *slog.Logger) error {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	buildInfo := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "partroute_build_info",
		Help: "1, labelled with the running build's version and Go version.",
	}, []string{"version", "goversion"})
	buildInfo.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(buildInfo)

	sourceMetrics := resolver.NewSourceMetrics(reg)
	src := resolver.NewFileSource(o.configPath, sourceMetrics, log)
	st, view, err := src.Load()
	if err != nil {
		return err
	}
	follower, err := newNamingFollower(st.Config, sourceMetrics, reg, log)
	if err != nil {
		return err
	}
	if follower != nil {
		defer follower.close()
		if st.Naming, view, err = follower.initial(ctx, st.Config); err != nil {
			return err
		}
	}
	res := resolver.New(st)
	var xdsSrv *xds.Server
	if st.Config.Listen.XDS != "" {
		xdsSrv = xds.New(ctx, log, reg)
		if _, err := xdsSrv.Update(st.Config, view, envoyconfig.Options{}); err != nil {
			return err
		}
	}
	handler := extproc.NewHandler(res, extproc.NewMetrics(reg), log)

	gs := grpc.NewServer(
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      o.maxConnAge,
			MaxConnectionAgeGrace: 30 * time.Second,
			Time:                  30 * time.Second,
			Timeout:               10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// One worker per core serves streams without a goroutine per stream, which keeps
		// goroutine stacks warm: measured in docs/benchmarks.md.
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	extprocv3.RegisterExternalProcessorServer(gs, handler)
	healthSrv := health.NewServer()
	healthpb.RegisterHealthServer(gs, healthSrv)

	cfg := st.Config
	grpcLis, err := net.Listen("tcp", cfg.Listen.ExtProc)
	if err != nil {
		return fmt.Errorf("listen.extproc: %w", err)
	}
	adminLis, err := net.Listen("tcp", cfg.Listen.Admin)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("listen.admin: %w", err)
	}
	var ready atomic.Bool
	mux := adminMux(reg, res, &ready)
	errc := make(chan error, 3)
	if xdsSrv != nil {
		xdsLis, err := net.Listen("tcp", cfg.Listen.XDS)
		if err != nil {
			grpcLis.Close()
			adminLis.Close()
			return fmt.Errorf("listen.xds: %w", err)
		}
		// The xDS server has its own gRPC server: its streams live as long as Envoy does and
		// must not be cut by the ext_proc server's connection age.
		xdsGRPC := grpc.NewServer(grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}))
		xdsSrv.Register(xdsGRPC)
		go func() { errc <- xdsGRPC.Serve(xdsLis) }()
		defer xdsGRPC.Stop()
		mux.HandleFunc("/debug/xds", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("content-type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"serving": xdsSrv.Current(), "acknowledged": xdsSrv.Acked()})
		})
		log.Info("xds serving", "address", xdsLis.Addr().String())
	}
	admin := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	go func() { errc <- gs.Serve(grpcLis) }()
	go func() { errc <- admin.Serve(adminLis) }()

	watchCtx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	// apply serves a new state. Envoy's endpoints and partroute's decisions change together:
	// the snapshot first, so that a view Envoy cannot be given is refused whole, then the
	// decisions. Configuration reloads and naming changes arrive from different goroutines;
	// the lock keeps each whole.
	var applyMu sync.Mutex
	apply := func(next func(cur *resolver.State) (*resolver.State, *resolver.View, error)) {
		applyMu.Lock()
		defer applyMu.Unlock()
		st, view, err := next(res.State())
		if err != nil {
			sourceMetrics.Failed()
			log.Error("change refused; still serving the previous configuration and naming view", "error", err)
			return
		}
		if xdsSrv != nil && view != nil {
			if _, err := xdsSrv.Update(st.Config, view, envoyconfig.Options{}); err != nil {
				sourceMetrics.Failed()
				log.Error("naming view refused: no xds snapshot can be built from it; still serving the previous one", "error", err)
				return
			}
		}
		res.Swap(st)
	}
	go src.Watch(watchCtx, o.poll, hup, func(next *resolver.State, view *resolver.View) {
		apply(func(cur *resolver.State) (*resolver.State, *resolver.View, error) {
			if next.Config.Listen != cur.Config.Listen {
				log.Warn("listen addresses changed in the configuration; they take effect on restart")
			}
			if next.Config.Naming.Source != cur.Config.Naming.Source {
				return nil, nil, fmt.Errorf("naming.source changed from %s to %s; that takes a restart", cur.Config.Naming.Source, next.Config.Naming.Source)
			}
			if follower == nil {
				return next, view, nil
			}
			// The configuration changed under a naming source of its own: the source's
			// content must fit the new configuration too.
			naming, view, err := follower.forConfig(next.Config)
			if err != nil {
				return nil, nil, fmt.Errorf("the naming view does not fit the new configuration: %w", err)
			}
			return &resolver.State{Config: next.Config, Naming: naming}, view, nil
		})
	})
	if follower != nil {
		go follower.run(watchCtx, func() *config.Config { return res.State().Config }, func(naming resolver.Naming, view *resolver.View) {
			apply(func(cur *resolver.State) (*resolver.State, *resolver.View, error) {
				return &resolver.State{Config: cur.Config, Naming: naming}, view, nil
			})
		})
		mux.HandleFunc("/debug/naming", func(w http.ResponseWriter, _ *http.Request) {
			current, detail := follower.status()
			w.Header().Set("content-type", "application/json")
			_ = json.NewEncoder(w).Encode(map[string]any{"source": res.State().Config.Naming.Source, "current": current, "detail": detail})
		})
	}

	healthSrv.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthSrv.SetServingStatus(extProcServiceName, healthpb.HealthCheckResponse_SERVING)
	ready.Store(true)
	log.Info("partroute serving", "extproc", grpcLis.Addr().String(), "admin", adminLis.Addr().String(), "version", version)

	var runErr error
	select {
	case <-ctx.Done():
	case runErr = <-errc:
	}

	log.Info("draining", "drain_delay", o.drainDelay, "shutdown_timeout", o.shutdownTimeout)
	ready.Store(false)
	healthSrv.Shutdown() // every service NOT_SERVING
	if runErr == nil {
		// Envoy learns NOT_SERVING at its next health check; until then requests keep coming
		// and are answered normally.
		timer := time.NewTimer(o.drainDelay)
		<-timer.C
	}
	stopped := make(chan struct{})
	go func() { gs.GracefulStop(); close(stopped) }()
	timer := time.NewTimer(o.shutdownTimeout)
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
		return runErr
	}
	return nil
}

// adminMux serves /metrics, /healthz (the process is up), /readyz (a valid configuration and
// naming view are loaded and partroute is not draining) and /debug/resolve.
func adminMux(reg *prometheus.Registry, res *resolver.Resolver, ready *atomic.Bool) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/debug/resolve", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		method, target := q.Get("method"), q.Get("url")
		if method == "" {
			method = http.MethodGet
		}
		if target == "" {
			http.Error(w, "url is required: /debug/resolve?method=GET&url=http://host/path&header=name:value", http.StatusBadRequest)
			return
		}
		// "@file" reads a file in the CLI; over HTTP it is refused before anything is opened,
		// so that a query can never make partroute read (or block on) a file of its host.
		body := q.Get("body")
		if strings.HasPrefix(body, "@") {
			http.Error(w, "bad request: body must be inline, not @file", http.StatusBadRequest)
			return
		}
		req, err := buildRequest(method, target, q["header"], body)
		if err != nil {
			http.Error(w, fmt.Sprintf("bad request: %v", err), http.StatusBadRequest)
			return
		}
		d := res.Resolve(r.Context(), req)
		w.Header().Set("content-type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(d.Report())
	})
	return mux
}
