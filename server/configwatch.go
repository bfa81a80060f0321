package server

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/filewatch"
	"github.com/partroute/partroute/resolver"
)

// maxRetryWait bounds the wait between offers of a refused configuration: one refused because
// its naming source was briefly unreachable is offered again twice a minute at worst, not at
// every poll.
const maxRetryWait = 30 * time.Second

// configWatcher follows partroute.yaml. A reload that fails validation, or that apply refuses,
// keeps what is served: it is counted once per distinct content and logged once per distinct
// content and error, and a refused one is offered again after a doubling wait.
type configWatcher struct {
	file    *filewatch.File
	metrics *resolver.SourceMetrics
	log     *slog.Logger
	// rejected is the hash of the content last counted as rejected or refused, logged that
	// of the content and error last logged, and invalid the file's hash of the content that
	// last failed validation.
	rejected, logged, invalid [32]byte
	// parse is config.Parse; a test counts its calls.
	parse func(data []byte, path string) (*config.Config, error)
}

func newConfigWatcher(path string, metrics *resolver.SourceMetrics, log *slog.Logger) *configWatcher {
	return &configWatcher{file: filewatch.New(path), metrics: metrics, log: log, parse: config.Parse}
}

// load reads and checks the configuration at start.
func (w *configWatcher) load() (*config.Config, error) {
	data, _, err := w.file.Read(true)
	if err != nil {
		return nil, err
	}
	return w.parse(data, w.file.Path())
}

// watch polls the configuration every poll, and reads it at once on each value of reload (an
// operator's SIGHUP, which also reads the naming file again), handing every valid new
// configuration to apply until ctx ends.
func (w *configWatcher) watch(ctx context.Context, poll time.Duration, reload <-chan struct{}, apply func(*config.Config) error) {
	t := time.NewTicker(poll)
	defer t.Stop()
	var retryAt time.Time
	retryWait := time.Duration(0)
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			force = !retryAt.IsZero() && !now.Before(retryAt)
		case <-reload:
			force = true
			w.log.Info("reloading configuration and naming view on SIGHUP")
		}
		data, changed, err := w.file.Read(force)
		if err != nil {
			w.report(err, []byte(err.Error()))
			continue
		}
		if !changed {
			continue
		}
		sum := w.file.Sum()
		if sum == w.invalid || sha256.Sum256(sum[:]) == w.rejected && !force {
			// Bytes already rejected: parsing them again would cost as much and say nothing.
			// Validation depends on the bytes alone, so content that failed it is never
			// parsed again, even when a retry or a SIGHUP forces the read; content that was
			// refused is offered again when forced, since its refusal may have passed.
			continue
		}
		cfg, err := w.parse(data, w.file.Path())
		if err != nil {
			w.invalid = sum
			w.report(err, sum[:])
			continue
		}
		w.invalid = [32]byte{}
		w.log.Info("configuration loaded", "config", w.file.Path(), "naming_source", cfg.Naming.Source)
		if err := apply(cfg); err != nil {
			w.report(err, sum[:])
			retryWait = min(max(2*retryWait, poll), maxRetryWait)
			retryAt = time.Now().Add(retryWait)
			continue
		}
		retryAt, retryWait = time.Time{}, 0
		w.rejected, w.logged = [32]byte{}, [32]byte{}
	}
}

// report counts a rejected or refused configuration once per distinct content, and logs it
// once per distinct content and error: the same content refused again for another reason is
// news to the operator but no new rejection.
func (w *configWatcher) report(err error, content []byte) {
	rejected := sha256.Sum256(content)
	if rejected != w.rejected {
		w.rejected = rejected
		w.metrics.Failed()
	}
	logged := sha256.Sum256(append([]byte(err.Error()), content...))
	if logged != w.logged {
		w.logged = logged
		w.log.Error("configuration rejected; still serving the previous one", "config", w.file.Path(), "error", err)
	}
}
