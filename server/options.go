package server

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Defaults of the Options, which the binary's flags also take.
const (
	DefaultPoll             = time.Second
	DefaultDrainDelay       = 2 * time.Second
	DefaultShutdownTimeout  = 10 * time.Second
	DefaultMaxConnectionAge = 5 * time.Minute
	DefaultStreamWorkers    = 128
)

// Options are what Run needs. Zero values are refused by Validate where there is no safe
// default to assume; the binary sets each from a flag.
type Options struct {
	// ConfigPath is partroute.yaml; its listen, naming and services sections say what to
	// serve. Required.
	ConfigPath string
	// Log receives partroute's log. Required.
	Log *slog.Logger
	// Registry receives every metric partroute exports, and /metrics serves it. Required: a
	// process that runs several servers (a test, the demo) gives each its own.
	Registry *prometheus.Registry
	// Version is the build's version, for the log and partroute_build_info.
	Version string
	// Poll is how often the configuration and naming files are checked for changes.
	Poll time.Duration
	// Reload asks for the configuration and naming files to be read again at once (SIGHUP);
	// nil means never.
	Reload <-chan struct{}
	// DrainDelay is how long, once ctx ends, partroute reports NOT_SERVING while still
	// answering, so that Envoy's health check moves traffic away first.
	DrainDelay time.Duration
	// ShutdownTimeout is how long streams in flight may take to finish after the drain delay.
	ShutdownTimeout time.Duration
	// MaxConnectionAge is the age at which a gRPC connection is asked to reconnect, so that
	// Envoy rebalances over partroute instances.
	MaxConnectionAge time.Duration
	// StreamWorkers is the number of goroutines that serve ext_proc streams; 0 means
	// DefaultStreamWorkers.
	StreamWorkers int
}

// Validate reports every problem of the options together.
func (o Options) Validate() error {
	var errs []error
	if o.ConfigPath == "" {
		errs = append(errs, errors.New("the configuration path is required"))
	}
	if o.Log == nil {
		errs = append(errs, errors.New("a logger is required"))
	}
	if o.Registry == nil {
		errs = append(errs, errors.New("a metrics registry is required"))
	}
	if o.Poll <= 0 {
		errs = append(errs, fmt.Errorf("poll interval %v must be above 0", o.Poll))
	}
	if o.DrainDelay < 0 {
		errs = append(errs, fmt.Errorf("drain delay %v must not be negative", o.DrainDelay))
	}
	if o.ShutdownTimeout <= 0 {
		errs = append(errs, fmt.Errorf("shutdown timeout %v must be above 0", o.ShutdownTimeout))
	}
	if o.MaxConnectionAge <= 0 {
		errs = append(errs, fmt.Errorf("maximum connection age %v must be above 0", o.MaxConnectionAge))
	}
	if o.StreamWorkers < 0 {
		errs = append(errs, fmt.Errorf("stream workers %d must not be negative (0 means %d)", o.StreamWorkers, DefaultStreamWorkers))
	}
	return errors.Join(errs...)
}

// DefaultOptions are the options of `partroute serve` with its default flags, for the
// configuration at configPath, logging to log, with a registry of their own. Code that embeds
// the server (the demo, the load test, tests) starts from them.
func DefaultOptions(configPath string, log *slog.Logger) Options {
	return Options{
		ConfigPath:       configPath,
		Log:              log,
		Registry:         prometheus.NewRegistry(),
		Version:          "dev",
		Poll:             DefaultPoll,
		DrainDelay:       DefaultDrainDelay,
		ShutdownTimeout:  DefaultShutdownTimeout,
		MaxConnectionAge: DefaultMaxConnectionAge,
	}
}
