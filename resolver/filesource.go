package resolver

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
)

// FileSource loads the configuration and its file naming view, and reloads both when either
// file changes. A reload that fails validation keeps the state that was serving: the error is
// counted once per distinct broken content, and logged once per distinct content and error.
type FileSource struct {
	configPath string
	log        *slog.Logger
	metrics    *SourceMetrics

	// What was last read of each file, to tell a real change from a touch.
	cfgFile, namingFile fileStamp
	// configOnly is set while the configuration names another naming source: the file source
	// then follows the configuration alone, and States it returns carry no Naming.
	configOnly bool
	// lastError is the hash of the error and broken content last logged, and lastRejected
	// that of the content last counted, so that a broken file that stays broken, or a state
	// refused again when it is offered again, is logged and counted once rather than on every
	// poll or offer.
	lastError, lastRejected [32]byte
	// serving is set once a state has been served: until then there is no previous state to
	// keep, and a rejected load is the caller's to report.
	serving bool
	// retryAt is when a state the caller refused is offered again, and retryWait the wait
	// before it; both are zero when nothing was refused.
	retryAt   time.Time
	retryWait time.Duration
}

// maxRetryWait bounds the wait between offers of a refused state: a naming source that stays
// unreachable is asked again twice a minute, not at every poll.
const maxRetryWait = 30 * time.Second

type fileStamp struct {
	path    string
	modTime time.Time
	size    int64
	sum     [32]byte
	// readAt is when the file was read: a stamp read soon after the file last changed is
	// not trusted (see racyWindow).
	readAt time.Time
}

// racyWindow is how long after a file changes its modification time and size stop proving
// that it did not change again. File systems keep coarse timestamps (a clock tick, up to two
// seconds on some), so a second write within that time may leave both as they were; until
// the window has passed, every poll reads and hashes the file instead of trusting the stamp.
const racyWindow = 2 * time.Second

// SourceMetrics are a naming source's series.
type SourceMetrics struct {
	reloads    *prometheus.CounterVec
	version    *prometheus.GaugeVec
	lastReload prometheus.Gauge
}

// NewSourceMetrics registers the naming source series with reg; nil leaves them unregistered.
func NewSourceMetrics(reg prometheus.Registerer) *SourceMetrics {
	m := &SourceMetrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_naming_reloads_total",
			Help: "Naming view and configuration loads that changed something, by result: ok (served) or error (rejected or refused, once per distinct content).",
		}, []string{"result"}),
		version: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "partroute_naming_view_info",
			Help: "The naming view being served: 1 for its version, which changes exactly when its content does.",
		}, []string{"version"}),
		lastReload: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "partroute_naming_last_reload_timestamp_seconds",
			Help: "When the naming view being served was loaded, in Unix seconds.",
		}),
	}
	for _, r := range []string{"ok", "error"} {
		m.reloads.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.version, m.lastReload)
	}
	return m
}

// Served records that view is now being served.
func (m *SourceMetrics) Served(view *View, at time.Time) {
	m.reloads.WithLabelValues("ok").Inc()
	m.version.Reset() // one series only: the version label never accumulates
	m.version.WithLabelValues(view.Version).Set(1)
	m.lastReload.Set(float64(at.UnixNano()) / 1e9)
}

// Failed records a load that was rejected or refused. A source calls it once per content it
// rejects, not at every read of the same content.
func (m *SourceMetrics) Failed() { m.reloads.WithLabelValues("error").Inc() }

// NewFileSource returns a source for the configuration at configPath, whose naming.file is
// the view.
func NewFileSource(configPath string, metrics *SourceMetrics, log *slog.Logger) *FileSource {
	// An absolute path keeps naming.file resolving against the configuration's directory even
	// if the working directory changes.
	if abs, err := filepath.Abs(configPath); err == nil {
		configPath = abs
	}
	return &FileSource{configPath: configPath, metrics: metrics, log: log}
}

// Load reads both files and returns the state they describe. When the configuration names
// another naming source, only the configuration is read, and the State has no Naming. A
// rejected first load is counted but not logged: nothing is being served yet, so there is no
// previous state to fall back on, and the caller reports the error.
func (s *FileSource) Load() (*State, *View, error) {
	st, view, _, err := s.load(true)
	if err == nil {
		s.served(view)
	}
	return st, view, err
}

// Reload reads the files again when either changed (or always, when force is set, as on
// SIGHUP) and returns the new state, or nil when nothing changed or the new content is
// invalid. A check that finds nothing new is not counted: it is no reload. Invalid content is
// logged and counted; the caller keeps serving what it has. The
// state returned is counted as served: a caller that may still refuse it uses Watch.
func (s *FileSource) Reload(force bool) (*State, *View) {
	st, view := s.reload(force)
	if st != nil {
		s.served(view)
	}
	return st, view
}

func (s *FileSource) reload(force bool) (*State, *View) {
	st, view, changed, err := s.load(force)
	if err != nil || !changed {
		return nil, nil
	}
	return st, view
}

// Watch polls the files every interval, and reloads at once on each value from hup (SIGHUP),
// calling apply with every valid new state until ctx ends. apply may still refuse a state (it
// does not fit the naming source, or Envoy could not be given it): the refusal is logged and
// counted like invalid content, once for the files' content however often it is refused, and
// the files are read and offered again after a wait that
// starts at interval and doubles up to maxRetryWait, so that a refusal caused by something
// passing (a naming source briefly unreachable) does not leave the change unapplied until the
// files next change. A change of the files is offered at once, as always.
func (s *FileSource) Watch(ctx context.Context, interval time.Duration, hup <-chan os.Signal, apply func(*State, *View) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		force := false
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			force = !s.retryAt.IsZero() && !now.Before(s.retryAt)
		case <-hup:
			force = true
			s.log.Info("reloading configuration and naming view on SIGHUP")
		}
		st, view := s.reload(force)
		if st == nil {
			continue
		}
		if err := apply(st, view); err != nil {
			// The files' hashes name the content refused: a retry of the same content is
			// not counted again, a change of either file is.
			s.report(err, append(s.cfgFile.sum[:], s.namingFile.sum[:]...))
			s.retryWait = min(max(2*s.retryWait, interval), maxRetryWait)
			s.retryAt = time.Now().Add(s.retryWait)
			continue
		}
		s.retryAt, s.retryWait = time.Time{}, 0
		s.served(view)
	}
}

func (s *FileSource) load(force bool) (*State, *View, bool, error) {
	if !force && !s.movedOnDisk() {
		return nil, nil, false, nil
	}
	cfgStamp, cfgData, err := read(s.configPath)
	if err != nil {
		return nil, nil, false, s.fail(err, nil)
	}
	cfg, err := config.Parse(cfgData, s.configPath)
	if err != nil {
		return nil, nil, false, s.fail(err, cfgData)
	}
	if cfg.Naming.Source != config.SourceFile {
		changed := force || cfgStamp.sum != s.cfgFile.sum || !s.configOnly
		s.cfgFile, s.namingFile, s.configOnly = cfgStamp, fileStamp{}, true
		if !changed {
			return nil, nil, false, nil
		}
		s.log.Info("configuration loaded", "config", s.configPath, "naming_source", cfg.Naming.Source)
		return &State{Config: cfg}, nil, true, nil
	}
	s.configOnly = false
	namingStamp, namingData, err := read(cfg.Naming.File)
	if err != nil {
		return nil, nil, false, s.fail(err, cfgData)
	}
	// A touch or a rewrite with the same bytes moves the modification time but changes
	// nothing: the content hashes decide.
	changed := force || cfgStamp.sum != s.cfgFile.sum || namingStamp.sum != s.namingFile.sum || namingStamp.path != s.namingFile.path
	s.cfgFile, s.namingFile = cfgStamp, namingStamp
	if !changed {
		return nil, nil, false, nil
	}
	view, err := ParseView(namingData, namingStamp.path, cfg)
	if err != nil {
		return nil, nil, false, s.fail(err, append(cfgData, namingData...))
	}
	return &State{Config: cfg, Naming: view}, view, true, nil
}

// served records that a loaded state is now being served. Only then: the metrics and the log
// say what partroute serves, not what it read.
func (s *FileSource) served(view *View) {
	s.lastError, s.lastRejected = [32]byte{}, [32]byte{}
	s.serving = true
	if view == nil {
		// The configuration alone: its naming comes from another source, which counts it.
		return
	}
	s.metrics.Served(view, time.Now())
	s.log.Info("naming view loaded", "config", s.configPath, "naming", s.namingFile.path, "version", view.Version, "services", len(view.Services))
}

// movedOnDisk reports whether either file's modification time or size differs from when it
// was last read, or was read too soon after it changed for those to be trusted: a cheap stat
// per poll instead of reading and hashing both files.
func (s *FileSource) movedOnDisk() bool {
	stamps := []fileStamp{s.cfgFile, s.namingFile}
	if s.configOnly {
		stamps = stamps[:1]
	}
	for _, f := range stamps {
		if f.path == "" {
			return true
		}
		fi, err := os.Stat(f.path)
		if err != nil || !fi.ModTime().Equal(f.modTime) || fi.Size() != f.size || f.readAt.Sub(f.modTime) < racyWindow {
			return true
		}
	}
	return false
}

// fail counts a rejected load and logs it once per distinct content, and forgets the stamps.
func (s *FileSource) fail(err error, content []byte) error {
	s.report(err, content)
	// The stamps are forgotten so that the next poll reads the files again even if their
	// modification time does not move (a fix written within the same clock tick).
	s.cfgFile, s.namingFile = fileStamp{}, fileStamp{}
	return err
}

// report counts a rejected or refused load once per distinct content, and logs it once per
// distinct error and content: the same content refused again for another reason (a naming
// source that failed differently) is news to the operator but no new rejection. A file that
// could not be read has no content; its error stands for it.
func (s *FileSource) report(err error, content []byte) {
	rejected := sha256.Sum256(content)
	if content == nil {
		rejected = sha256.Sum256([]byte(err.Error()))
	}
	if rejected != s.lastRejected {
		s.lastRejected = rejected
		s.metrics.Failed()
	}
	if !s.serving {
		return
	}
	sum := sha256.Sum256(append([]byte(err.Error()), content...))
	if sum != s.lastError {
		s.lastError = sum
		s.log.Error("configuration or naming view rejected; still serving the previous one", "error", err)
	}
}

// read returns a file's content and its stamp.
func read(path string) (fileStamp, []byte, error) {
	readAt := time.Now()
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}, nil, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fileStamp{}, nil, err
	}
	return fileStamp{path: path, modTime: fi.ModTime(), size: fi.Size(), sum: sha256.Sum256(data), readAt: readAt}, data, nil
}
