package server

import (
	"context"
	"crypto/sha256"
	"errors"
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
	// keys follows the read-your-writes keys file of the configuration served, nil when it
	// has none, and keysSum is the sum of the content that configuration was loaded with.
	// The keys are part of the configuration: a change of the file is a reload of both.
	keys    *filewatch.File
	keysSum [32]byte
	// keysFailing is set while the keys file cannot be read, which is a change once.
	keysFailing bool
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
	cfg, err := w.parse(data, w.file.Path())
	if err == nil {
		w.follow(cfg)
	}
	return cfg, err
}

// follow makes the watcher follow the keys file of cfg, the configuration now served.
func (w *configWatcher) follow(cfg *config.Config) {
	r := &cfg.ReadYourWrites
	switch {
	case r.KeysFile == "":
		w.keys = nil
	case w.keys == nil || w.keys.Path() != r.KeysFile:
		w.keys = filewatch.New(r.KeysFile)
		w.keysFailing = false
	}
	w.keysSum = r.KeysSum
}

// keysMoved reports whether the keys file holds content other than the configuration served
// was loaded with, or has become unreadable: the configuration is then read and checked again.
// A file that stays unreadable is checked again only when forced, at the retries that follow
// the rejection and at a SIGHUP.
func (w *configWatcher) keysMoved(force bool) bool {
	if w.keys == nil {
		return false
	}
	_, changed, err := w.keys.Read(force)
	if err != nil {
		first := !w.keysFailing
		w.keysFailing = true
		return first || force
	}
	w.keysFailing = false
	return changed && w.keys.Sum() != w.keysSum
}

// contentSum is what a configuration's validity depends on: its own bytes and, when it
// follows one, its keys file's.
func (w *configWatcher) contentSum() [32]byte {
	sum := w.file.Sum()
	if w.keys == nil {
		return sum
	}
	keys := w.keys.Sum()
	return sha256.Sum256(append(sum[:], keys[:]...))
}

// keysFileError reports whether err is, or includes, a problem with the read-your-writes keys
// file, which lies outside the configuration's bytes.
func keysFileError(err error) bool {
	errs, ok := errors.AsType[*config.Errors](err)
	if !ok {
		return false
	}
	for _, fe := range errs.List {
		if fe.Path == "readYourWrites.keysFile" {
			return true
		}
	}
	return false
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
		// A rotation of the keys file is a change of the configuration, whose bytes are read
		// again to be checked with the new keys.
		data, changed, err := w.file.Read(force || w.keysMoved(force))
		if err != nil {
			w.report(err, []byte(err.Error()))
			continue
		}
		if !changed {
			continue
		}
		sum := w.contentSum()
		if sum == w.invalid || sha256.Sum256(sum[:]) == w.rejected && !force {
			// Content already rejected: parsing it again would cost as much and say nothing.
			// Validation depends on the bytes of the configuration and of the keys file it
			// follows, so content that failed it is never parsed again, even when a retry or a
			// SIGHUP forces the read; content that was refused is offered again when forced,
			// since its refusal may have passed.
			continue
		}
		cfg, err := w.parse(data, w.file.Path())
		if err != nil {
			w.invalid = sum
			if keysFileError(err) {
				// A keys file the watcher does not follow yet (a new one, or one that cannot
				// be read) may be fixed while the bytes stay as they are: the content is
				// offered again, as a refused one is, and at a SIGHUP.
				w.invalid = [32]byte{}
				retryWait = min(max(2*retryWait, poll), maxRetryWait)
				retryAt = time.Now().Add(retryWait)
			}
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
		w.follow(cfg)
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
