package server

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/certreload"
)

// listenerTLS holds the TLS of each listener that serves it; nil for a plaintext one.
type listenerTLS struct {
	extproc, xds, admin *certreload.Reloader
}

// loadTLS reads the files of every listener that serves TLS. A file that does not load is
// reported as a configuration error at its field (listen.tls.extproc.cert, ...) of
// configPath, so that partroute serve prints it as it prints the file's other problems.
func loadTLS(configPath string, cfg *config.Config, reg prometheus.Registerer, log *slog.Logger) (*listenerTLS, error) {
	metrics := certreload.NewMetrics(reg)
	errs := &config.Errors{File: configPath}
	var out listenerTLS
	for _, l := range []struct {
		name       string
		tls        config.ServerTLS
		nextProtos []string
		into       **certreload.Reloader
	}{
		// gRPC's credentials offer h2 themselves; the admin listener serves HTTP/1.1 (see
		// certreload.Reloader.Listener).
		{"extproc", cfg.Listen.TLS.ExtProc, nil, &out.extproc},
		{"xds", cfg.Listen.TLS.XDS, nil, &out.xds},
		{"admin", cfg.Listen.TLS.Admin, []string{"http/1.1"}, &out.admin},
	} {
		if !l.tls.On() {
			continue
		}
		files := certreload.Files{Cert: l.tls.Cert, Key: l.tls.Key, ClientCA: l.tls.ClientCA, RequireClientCert: l.tls.RequireClientCert}
		r, err := certreload.New(l.name, files, l.nextProtos, metrics, log)
		if fe, ok := errors.AsType[*certreload.FileError](err); ok {
			errs.Add("listen.tls."+l.name+"."+fe.Field, 0, "%v", fe)
			continue
		}
		if err != nil {
			return nil, err
		}
		*l.into = r
		clientCert := "none"
		switch {
		case files.RequireClientCert:
			clientCert = "required"
		case files.ClientCA != "":
			clientCert = "verified when given"
		}
		log.Info("TLS configured", "listener", l.name, "cert", files.Cert, "client_certificate", clientCert)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return &out, nil
}

// CheckTLS reads the files of every listener of cfg that serves TLS, as partroute serve does
// at start, and reports those that do not load as errors at their fields of configPath:
// partroute validate's check of listen.tls.
func CheckTLS(configPath string, cfg *config.Config) error {
	_, err := loadTLS(configPath, cfg, nil, slog.New(slog.DiscardHandler))
	return err
}

// watch follows the files of every listener that serves TLS until ctx ends.
func (t *listenerTLS) watch(ctx context.Context, poll time.Duration, start func(func())) {
	for _, r := range []*certreload.Reloader{t.extproc, t.xds, t.admin} {
		if r != nil {
			start(func() { r.Watch(ctx, poll) })
		}
	}
}
