package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"strconv"
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
	// streamWorkers is the number of gRPC stream workers; 0 means DefaultStreamWorkers.
	streamWorkers int
}

func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newCmdFlags("serve", "partroute serve -config FILE [flags]")
	var o serveOptions
	fs.StringVar(&o.configPath, "config", "", "partroute.yaml (required)")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&o.poll, "poll", time.Second, "how often the configuration and naming files are checked for changes")
	fs.DurationVar(&o.drainDelay, "drain-delay", 2*time.Second, "on SIGTERM, how long to report NOT_SERVING while still answering, so Envoy's health check moves traffic away first")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 10*time.Second, "on SIGTERM, how long streams in flight may take to finish after the drain delay")
	fs.DurationVar(&o.maxConnAge, "max-connection-age", 5*time.Minute, "age at which a gRPC connection is asked to reconnect, so that Envoy rebalances over partroute replicas")
	fs.IntVar(&o.streamWorkers, "stream-workers", DefaultStreamWorkers, "goroutines that serve ext_proc streams; size it to the requests Envoy has in flight at once (more streams than workers still work, a little slower)")
	var tune runtimeTuning
	tune.register(fs.FlagSet)
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return code
	}
	if o.configPath == "" {
		return fs.fail(stderr, "-config is required")
	}
	log, err := newLogger(stderr, o.logLevel, o.logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "partroute serve:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := tune.apply(ctx); err != nil {
		fmt.Fprintln(stderr, "partroute serve:", err)
		return 1
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := serve(ctx, o, hup, log); err != nil {
		// A failure while serving is logged like everything else partroute did meanwhile. A
		// failure to start (a broken configuration, a port in use) ends the command before it
		// served anything: it is said in plain text, so that each problem of a file stays on a
		// line of its own.
		var failed servingError
		if errors.As(err, &failed) {
			log.Error("partroute stopped", "error", failed.err)
		} else {
			fmt.Fprintln(stderr, "partroute serve:", err)
		}
		return 1
	}
	return 0
}

// servingError is an error that stopped partroute after it had started serving.
type servingError struct{ err error }

func (e servingError) Error() string { return e.err.Error() }
func (e servingError) Unwrap() error { return e.err }

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
		sourceMetrics.Served(view, time.Now())
	}
	res := resolver.New(st)
	// runCtx outlives the signal that starts the drain: while the ext_proc streams finish,
	// partroute keeps following the configuration and naming changes and Envoy keeps its xDS
	// stream, so that no request in the drain is routed by a view older than it should be.
	// It ends when serve returns.
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	defer stopRun()
	var xdsSrv *xds.Server
	if st.Config.Listen.XDS != "" {
		xdsSrv = xds.New(runCtx, log, reg)
		if _, err := xdsSrv.Update(st.Config, view, envoyconfig.Options{}); err != nil {
			return err
		}
	}
	requestMetrics := extproc.NewMetrics(reg)
	requestMetrics.Init(st.Config)
	handler := extproc.NewHandler(res, requestMetrics, log)

	gs := grpc.NewServer(extProcServerOptions(o.maxConnAge, o.streamWorkers)...)
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

	watchCtx, stopWatch := context.WithCancel(runCtx)
	defer stopWatch()
	// apply serves a new state. Envoy's endpoints and partroute's decisions change together:
	// the snapshot first, so that a view Envoy cannot be given is refused whole, then the
	// decisions. Configuration reloads and naming changes arrive from different goroutines;
	// the lock keeps each whole. A refusal is returned to the caller, which counts and logs it.
	var applyMu sync.Mutex
	apply := func(next func(cur *resolver.State) (*resolver.State, *resolver.View, error)) error {
		applyMu.Lock()
		defer applyMu.Unlock()
		st, view, err := next(res.State())
		if err != nil {
			return fmt.Errorf("change refused: %w", err)
		}
		if xdsSrv != nil && view != nil {
			if _, err := xdsSrv.Update(st.Config, view, envoyconfig.Options{}); err != nil {
				return fmt.Errorf("naming view refused: no xds snapshot can be built from it: %w", err)
			}
		}
		res.Swap(st)
		requestMetrics.Init(st.Config)
		if follower != nil && view != nil {
			// The file source counts its own views; another source's are counted here, once
			// served, so that the metrics never show a view that was refused.
			sourceMetrics.Served(view, time.Now())
		}
		return nil
	}
	// The watchers end before the naming follower is closed (deferred earlier, so run later),
	// so that none of them uses a closed source.
	var watchers sync.WaitGroup
	defer func() { stopWatch(); watchers.Wait() }()
	watchers.Go(func() {
		src.Watch(watchCtx, o.poll, hup, func(next *resolver.State, view *resolver.View) error {
			return apply(func(cur *resolver.State) (*resolver.State, *resolver.View, error) {
				if next.Config.Naming.Source != cur.Config.Naming.Source {
					return nil, nil, fmt.Errorf("naming.source changed from %s to %s; that takes a restart", cur.Config.Naming.Source, next.Config.Naming.Source)
				}
				if follower != nil {
					// The configuration changed under a naming source of its own: the
					// source's content must fit the new configuration too.
					naming, fitted, err := follower.forConfig(next.Config)
					if err != nil {
						return nil, nil, fmt.Errorf("the naming view does not fit the new configuration: %w", err)
					}
					next, view = &resolver.State{Config: next.Config, Naming: naming}, fitted
				}
				// Warned only for a change that passed its checks: a refused one is offered
				// again, and would warn at every offer.
				warnRestartOnly(log, cur.Config, next.Config)
				return next, view, nil
			})
		})
	})
	if follower != nil {
		watchers.Go(func() {
			follower.run(watchCtx, func() *config.Config { return res.State().Config }, func(naming resolver.Naming, view *resolver.View) {
				err := apply(func(cur *resolver.State) (*resolver.State, *resolver.View, error) {
					// The view was built for the configuration of its time; a reload since may
					// have changed a scheme, and then the reload's own view is the one to keep.
					if err := view.Fits(cur.Config); err != nil {
						return nil, nil, err
					}
					return &resolver.State{Config: cur.Config, Naming: naming}, view, nil
				})
				if err != nil {
					sourceMetrics.Failed()
					log.Error("naming change refused; still serving the previous naming view", "source", res.State().Config.Naming.Source, "error", err)
				}
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
		return servingError{runErr}
	}
	return nil
}

// DefaultStreamWorkers is the default of -stream-workers.
const DefaultStreamWorkers = 128

// extProcServerOptions are the ext_proc gRPC server's options. The load test's no-op baseline
// is served with the same ones, so that a comparison differs in the handler alone.
func extProcServerOptions(maxConnAge time.Duration, streamWorkers int) []grpc.ServerOption {
	if streamWorkers <= 0 {
		streamWorkers = DefaultStreamWorkers
	}
	return []grpc.ServerOption{
		grpc.KeepaliveParams(keepalive.ServerParameters{
			MaxConnectionAge:      maxConnAge,
			MaxConnectionAgeGrace: 30 * time.Second,
			Time:                  30 * time.Second,
			Timeout:               10 * time.Second,
		}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Responses are marshalled with go-control-plane's generated code when the binary has
		// it (build tag vtprotobuf): a routed response in 1.5 µs rather than 5.7 µs.
		grpc.ForceServerCodecV2(extproc.NewCodec()),
		// Envoy opens a stream per HTTP request, so there are as many streams in flight as
		// requests. A stream served by a long-lived worker runs on a stack that has already grown
		// to fit the handler; a stream without a free worker gets a new goroutine, whose stack
		// is grown (copied) again for every request. With workers for every stream in flight,
		// server CPU per request fell by 15% (docs/benchmarks.md).
		grpc.NumStreamWorkers(uint32(streamWorkers)),
	}
}

// runtimeTuning is the garbage collector's settings for a server process.
type runtimeTuning struct {
	gogc     int
	headroom byteSize
	memLimit byteSize
}

func (t *runtimeTuning) register(fs *flag.FlagSet) {
	t.headroom = DefaultGCHeadroom
	fs.IntVar(&t.gogc, "gogc", 0, "garbage collector target percentage; 0 (the default) adapts it to the live heap (see -gc-headroom), unless $GOGC is set")
	fs.Var(&t.headroom, "gc-headroom", "with -gogc 0: how far the heap may grow past live data before a collection, at least as far as GOGC=100 lets it (e.g. 64MiB)")
	fs.Var(&t.memLimit, "memory-limit", "soft memory limit (e.g. 450MiB), near which the collector works harder; 0 keeps $GOMEMLIMIT or none")
}

// DefaultGCHeadroom is the default of -gc-headroom.
const DefaultGCHeadroom = 64 << 20

// apply sets the process's GC settings until ctx ends. Only a server command calls it: it
// changes the whole process, so code that embeds the server (tests, the demo) keeps its own.
//
// partroute's live heap is small (a few MiB, plus the naming view) and every request allocates
// about 5 KB in gRPC and protobuf, so with Go's default GOGC=100 the collector runs every few
// hundred requests: 35 cycles a second at 14k requests a second, a quarter of the CPU per
// request. Letting the heap grow by a fixed headroom instead (GOGC = 100 × headroom / live,
// never below 100) runs it about once a second at that rate for at most 64 MiB more memory,
// and leaves a large heap (a view of a million partitions) at Go's default.
func (t *runtimeTuning) apply(ctx context.Context) error {
	if t.gogc < 0 || t.headroom < 0 || t.memLimit < 0 {
		return fmt.Errorf("-gogc %d, -gc-headroom %d and -memory-limit %d must not be negative", t.gogc, t.headroom, t.memLimit)
	}
	if t.memLimit > 0 {
		debug.SetMemoryLimit(int64(t.memLimit))
	}
	switch {
	case t.gogc > 0:
		debug.SetGCPercent(t.gogc)
	case os.Getenv("GOGC") != "" || t.headroom == 0:
		// The operator's $GOGC stands; a zero headroom asks for Go's own setting.
	default:
		go tuneGC(ctx, uint64(t.headroom), time.Second)
	}
	return nil
}

// tuneGC sets GOGC from the live heap every interval, so that a collection comes after the
// heap has grown by headroom or doubled, whichever is more.
func tuneGC(ctx context.Context, headroom uint64, interval time.Duration) {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	current := -1
	for {
		metrics.Read(sample)
		if sample[0].Value.Kind() == metrics.KindUint64 {
			if pct := gcPercent(sample[0].Value.Uint64(), headroom); pct != current {
				debug.SetGCPercent(pct)
				current = pct
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// gcPercent is the GOGC that lets a heap of live bytes grow by headroom, at least 100 and at
// most 10000, rounded to a multiple of 50 so that small changes of the live heap do not move it.
func gcPercent(live, headroom uint64) int {
	live = max(live, 1<<20)
	pct := min(max(headroom*100/live, 100), 10000)
	return int(pct / 50 * 50)
}

// byteSize is a flag holding a number of bytes, written with an optional KiB, MiB or GiB suffix.
type byteSize int64

func (b *byteSize) String() string {
	if b == nil {
		return "0"
	}
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}} {
		if *b != 0 && int64(*b)%(1<<u.shift) == 0 {
			return strconv.FormatInt(int64(*b)>>u.shift, 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(*b), 10)
}

func (b *byteSize) Set(s string) error {
	shift := uint(0)
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, shift = rest, u.shift
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64>>shift {
		return fmt.Errorf("%q is not a size in bytes (a number with an optional KiB, MiB or GiB suffix)", s)
	}
	*b = byteSize(n << shift)
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
