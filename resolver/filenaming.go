package resolver

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/filewatch"
)

// FileNaming is the file naming source: the YAML view named by the configuration's
// naming.file, read again when it changes. Content that fails its checks is logged and counted
// once however often it is polled, and never parsed again while its bytes stay the same: the
// view served stays as it was.
//
// It implements the naming-source contract of package server: Initial and ForConfig may be
// called from any goroutine, Watch runs on one goroutine of its own, Status and Close from any.
type FileNaming struct {
	poll    time.Duration
	metrics *SourceMetrics
	log     *slog.Logger

	// mu guards file, the naming file being followed, and rejected, the hash of the content
	// last rejected, with the configuration it was checked against and why: Watch polls them
	// while a configuration reload reads them.
	mu          sync.Mutex
	file        *filewatch.File
	rejected    [32]byte
	rejectedFor *config.Config
	rejectedErr error
	// serving is set once a view has been served: until then a rejection has no previous
	// view to fall back on, and is not logged as if it had.
	serving bool
}

// maxRetryWait bounds the wait between offers of a refused change: a change refused for a
// passing reason is offered again twice a minute at worst, not at every poll.
const maxRetryWait = 30 * time.Second

// NewFileNaming returns the file naming source, polling its file every poll.
func NewFileNaming(poll time.Duration, metrics *SourceMetrics, log *slog.Logger) *FileNaming {
	return &FileNaming{poll: poll, metrics: metrics, log: log}
}

// Initial reads the naming file of cfg. A rejection is counted but not logged: nothing is
// served yet, so there is no previous view to keep, and the caller reports the error.
func (f *FileNaming) Initial(_ context.Context, cfg *config.Config) (Snapshot, error) {
	snap, err := f.read(cfg, true)
	if err == nil {
		f.mu.Lock()
		f.serving = true
		f.mu.Unlock()
	}
	return snap, err
}

// ForConfig reads the naming file of a new configuration (its path may have changed) and
// parses it against that configuration, as the configuration reload needs: an operator who
// adds a service edits both files, and the reload must see both.
func (f *FileNaming) ForConfig(_ context.Context, cfg *config.Config) (Snapshot, error) {
	return f.read(cfg, true)
}

// Watch polls the naming file of the configuration current returns every poll, until ctx
// ends, and hands every valid new view to changed. A view that changed refuses (it does not
// fit a configuration reloaded since, or Envoy could not be given it) is offered again after a
// wait that starts at one poll and doubles up to maxRetryWait; a new change of the file is
// offered at once.
func (f *FileNaming) Watch(ctx context.Context, current func() *config.Config, changed func(Snapshot) error) {
	t := time.NewTicker(f.poll)
	defer t.Stop()
	var retryAt time.Time
	retryWait := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			force := !retryAt.IsZero() && !now.Before(retryAt)
			snap, err := f.read(current(), force)
			if err != nil || snap.View == nil {
				continue
			}
			if err := changed(snap); err != nil {
				retryWait = min(max(2*retryWait, f.poll), maxRetryWait)
				retryAt = time.Now().Add(retryWait)
				continue
			}
			retryAt, retryWait = time.Time{}, 0
		}
	}
}

// Status reports the file source as always current: the file is the view.
func (f *FileNaming) Status() (current bool, detail string) { return true, "" }

// Close releases nothing: the source holds no connection.
func (f *FileNaming) Close() error { return nil }

// read returns the view of cfg's naming file: a zero Snapshot without error when the file has
// not changed since the last read (unless force), an error when it cannot be read or parsed.
func (f *FileNaming) read(cfg *config.Config, force bool) (Snapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.file == nil || f.file.Path() != cfg.Naming.File {
		f.file = filewatch.New(cfg.Naming.File)
	}
	data, changed, err := f.file.Read(force)
	if err != nil {
		err = fmt.Errorf("naming.file: %w", err)
		f.reject(err, [32]byte{1})
		return Snapshot{}, err
	}
	if !changed {
		return Snapshot{}, nil
	}
	sum := f.file.Sum()
	if sum == f.rejected && cfg == f.rejectedFor {
		// The same bytes were rejected already against the same configuration: parsing them
		// again would cost as much and say nothing new, however often a retry or a reload
		// asks. A forced read gets the rejection again; a poll sees nothing new.
		if force {
			return Snapshot{}, f.rejectedErr
		}
		return Snapshot{}, nil
	}
	view, err := ParseView(data, cfg.Naming.File, cfg)
	if err != nil {
		f.reject(err, sum)
		f.rejectedFor, f.rejectedErr = cfg, err
		return Snapshot{}, err
	}
	f.rejected, f.rejectedFor, f.rejectedErr = [32]byte{}, nil, nil
	return Snapshot{Naming: view, View: view}, nil
}

// reject counts and logs rejected content once per distinct content.
func (f *FileNaming) reject(err error, sum [32]byte) {
	if sum == f.rejected {
		return
	}
	f.rejected = sum
	f.metrics.Failed()
	if !f.serving {
		return
	}
	f.log.Error("naming view rejected; still serving the previous one", "naming", f.file.Path(), "error", err)
}
