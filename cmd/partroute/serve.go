package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/server"
)

// runServe is `partroute serve`: its flags, the process's signals and GC settings, and
// server.Run.
func runServe(args []string, stdout, stderr io.Writer) int {
	fs := newCmdFlags("serve", "partroute serve -config FILE [flags]")
	var o server.Options
	var logLevel, logFormat string
	fs.StringVar(&o.ConfigPath, "config", "", "partroute.yaml (required)")
	fs.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&logFormat, "log-format", "text", "text or json")
	fs.DurationVar(&o.Poll, "poll", server.DefaultPoll, "how often the configuration and naming files are checked for changes")
	fs.DurationVar(&o.DrainDelay, "drain-delay", server.DefaultDrainDelay, "on SIGTERM, how long to report NOT_SERVING while still answering, so Envoy's health check moves traffic away first")
	fs.DurationVar(&o.ShutdownTimeout, "shutdown-timeout", server.DefaultShutdownTimeout, "on SIGTERM, how long streams in flight may take to finish after the drain delay")
	fs.DurationVar(&o.MaxConnectionAge, "max-connection-age", server.DefaultMaxConnectionAge, "age at which a gRPC connection is asked to reconnect, so that Envoy rebalances over partroute replicas")
	fs.IntVar(&o.StreamWorkers, "stream-workers", server.DefaultStreamWorkers, "goroutines that serve ext_proc streams; size it to the requests Envoy has in flight at once (more streams than workers still work, a little slower)")
	var tune gcFlags
	tune.register(fs.FlagSet)
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return code
	}
	if o.ConfigPath == "" {
		return fs.fail(stderr, "-config is required")
	}
	log, err := newLogger(stderr, logLevel, logFormat)
	if err != nil {
		fmt.Fprintln(stderr, "partroute serve:", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := tune.tuning().Apply(ctx); err != nil {
		fmt.Fprintln(stderr, "partroute serve:", err)
		return 1
	}
	o.Log, o.Registry, o.Version = log, prometheus.NewRegistry(), version
	o.Reload = sighup(ctx)
	if err := server.Run(ctx, o); err != nil {
		// A failure while serving is logged like everything else partroute did meanwhile. A
		// failure to start (a broken configuration, a port in use) ends the command before it
		// served anything: it is said in plain text, so that each problem of a file stays on a
		// line of its own.
		var failed *server.ServingError
		if errors.As(err, &failed) {
			log.Error("partroute stopped", "error", failed.Err)
		} else {
			fmt.Fprintln(stderr, "partroute serve:", err)
		}
		return 1
	}
	return 0
}

// sighup delivers a value for every SIGHUP until ctx ends.
func sighup(ctx context.Context) <-chan struct{} {
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGHUP)
	out := make(chan struct{}, 1)
	go func() {
		defer signal.Stop(sig)
		for {
			select {
			case <-ctx.Done():
				return
			case <-sig:
				select {
				case out <- struct{}{}:
				default: // a reload is already pending
				}
			}
		}
	}()
	return out
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

// gcFlags are the garbage collector's flags of a server command.
type gcFlags struct {
	gogc     int
	headroom byteSize
	memLimit byteSize
}

func (t *gcFlags) register(fs *flag.FlagSet) {
	t.headroom = server.DefaultGCHeadroom
	fs.IntVar(&t.gogc, "gogc", 0, "garbage collector target percentage; 0 (the default) adapts it to the live heap (see -gc-headroom), unless $GOGC is set")
	fs.Var(&t.headroom, "gc-headroom", "with -gogc 0: how far the heap may grow past live data before a collection, at least as far as GOGC=100 lets it (e.g. 64MiB)")
	fs.Var(&t.memLimit, "memory-limit", "soft memory limit (e.g. 450MiB), near which the collector works harder; 0 keeps $GOMEMLIMIT or none")
}

func (t *gcFlags) tuning() server.GCTuning {
	return server.GCTuning{GOGC: t.gogc, Headroom: int64(t.headroom), MemoryLimit: int64(t.memLimit)}
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
