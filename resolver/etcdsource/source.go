package etcdsource

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
)

// Defaults of the Options that may be left zero.
const (
	DefaultRequestTimeout = 2 * time.Second
	DefaultProbeInterval  = 2 * time.Second
	DefaultBackoffMin     = 100 * time.Millisecond //nolint:revive // Min is minimum, not minutes: the default of Options.BackoffMin is named after it
	DefaultBackoffMax     = 5 * time.Second
)

// Options configure a Source.
type Options struct {
	// Client is the etcd client to use. The Source does not close it. When nil, the Source
	// dials Endpoints itself and Close closes that client.
	Client      *clientv3.Client
	Endpoints   []string
	DialTimeout time.Duration
	// Prefix is the key prefix of the view; config.DefaultEtcdPrefix when empty.
	Prefix string
	// Metrics are the naming source series shared with the file source, so that an operator
	// watches one set of series whatever the source. Nil keeps them unregistered.
	Metrics *resolver.SourceMetrics
	// Registerer takes the etcd source's own series (up, stale seconds, revision); nil leaves
	// them unregistered.
	Registerer prometheus.Registerer
	Log        *slog.Logger
	// RequestTimeout bounds each read of etcd. ProbeInterval is how often a Source that is
	// following the view checks that etcd still answers: a watch on an unreachable etcd simply
	// goes quiet, so without a probe an outage would look like a view that never changes.
	RequestTimeout time.Duration
	ProbeInterval  time.Duration
	// BackoffMin and BackoffMax bound the wait between attempts to reach etcd again.
	BackoffMin, BackoffMax time.Duration
}

// Source is the etcd naming source. Load reads the view once; Run follows it. Healthy, Stale
// and View may be called from any goroutine.
type Source struct {
	client    *clientv3.Client
	ownClient bool
	prefix    string
	metrics   *resolver.SourceMetrics
	log       *slog.Logger
	opts      Options
	collector []prometheus.Collector

	mu sync.Mutex
	// kvs is the content under the prefix at revision rev, keys relative to the prefix. listed
	// says it is current as of a full read, so Run may watch from rev+1 rather than read again.
	kvs    map[string][]byte
	rev    int64
	listed bool
	// view is the last valid view, the one being served.
	view *resolver.View
	// inSync is set while the source has read etcd and its watch has not been lost since.
	// staleSince is when it last stopped being in sync; zero while in sync.
	inSync     bool
	staleSince time.Time
	// badVersion is the version of the invalid content last logged, and countedVersion that
	// of the invalid content last counted, so that content that stays invalid is logged and
	// counted once, not on every event or read. They differ only after a configuration
	// reload's check, which logs but does not count.
	badVersion, countedVersion string
}

// New returns a source for opts. It does not contact etcd: a partroute that starts while etcd
// is down serves once it comes up.
func New(opts Options) (*Source, error) {
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = config.DefaultEtcdDialTimeout
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	if opts.ProbeInterval <= 0 {
		opts.ProbeInterval = DefaultProbeInterval
	}
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = DefaultBackoffMin
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(DefaultBackoffMax, opts.BackoffMin)
	}
	s := &Source{prefix: NormalizePrefix(opts.Prefix), metrics: opts.Metrics, log: opts.Log, opts: opts, client: opts.Client}
	if s.metrics == nil {
		s.metrics = resolver.NewSourceMetrics(nil)
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.client == nil {
		if len(opts.Endpoints) == 0 {
			return nil, errors.New("etcd naming source: no client and no endpoints")
		}
		c, err := Dial(opts.Endpoints, opts.DialTimeout)
		if err != nil {
			return nil, err
		}
		s.client, s.ownClient = c, true
	}
	s.collector = []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "partroute_naming_source_up",
			Help: "1 while the naming source is in sync with its store (etcd answers and the watch is live), else 0.",
		}, func() float64 {
			if s.Healthy() {
				return 1
			}
			return 0
		}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "partroute_naming_stale_seconds",
			Help: "How long the naming view being served has gone unconfirmed because its store is unreachable; 0 while in sync.",
		}, func() float64 { return s.staleFor().Seconds() }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "partroute_naming_etcd_revision",
			Help: "The etcd revision the naming source has read up to.",
		}, func() float64 { return float64(s.Revision()) }),
	}
	if opts.Registerer != nil {
		for i, c := range s.collector {
			if err := opts.Registerer.Register(c); err != nil {
				for _, done := range s.collector[:i] {
					opts.Registerer.Unregister(done)
				}
				s.Close()
				return nil, fmt.Errorf("etcd naming source metrics: %w", err)
			}
		}
	}
	return s, nil
}

// Dial returns a client of endpoints ("host:port" or URLs). etcd's own client logging is off:
// the Source and the CLI report what matters in their own words. The client connects lazily, so
// an unreachable etcd shows up as the first request's error.
func Dial(endpoints []string, dialTimeout time.Duration) (*clientv3.Client, error) {
	c, err := clientv3.New(clientv3.Config{Endpoints: endpoints, DialTimeout: dialTimeout, Logger: zap.NewNop()})
	if err != nil {
		return nil, fmt.Errorf("etcd %v: %w", endpoints, err)
	}
	return c, nil
}

// Close releases the client when the Source dialled it, and unregisters its series.
func (s *Source) Close() error {
	if s.opts.Registerer != nil {
		for _, c := range s.collector {
			s.opts.Registerer.Unregister(c)
		}
	}
	if s.ownClient {
		return s.client.Close()
	}
	return nil
}

// Prefix returns the key prefix the source reads.
func (s *Source) Prefix() string { return s.prefix }

// Healthy reports whether the source is in sync with etcd: it has read the view and its watch
// has not been lost since.
func (s *Source) Healthy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inSync
}

// Stale reports whether the view being served may be out of date because etcd cannot be
// reached: there is a view, and the source is not in sync. A partroute keeps serving a stale
// view; readiness may choose not to.
func (s *Source) Stale() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view != nil && !s.inSync
}

// View returns the view being served, or nil before the first valid one.
func (s *Source) View() *resolver.View {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.view
}

// Revision returns the etcd revision the source has read up to.
func (s *Source) Revision() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rev
}

func (s *Source) staleFor() time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staleSince.IsZero() {
		return 0
	}
	return time.Since(s.staleSince)
}

// Load reads the whole view and returns it with the revision it was read at. Content that
// fails the checks is an error, and counted once however often it is read again; Run then
// follows from that revision all the same, so that a later fix is picked up.
func (s *Source) Load(ctx context.Context, cfg *config.Config) (*resolver.View, int64, error) {
	if err := s.list(ctx); err != nil {
		s.markDown(err)
		return nil, 0, err
	}
	s.mu.Lock()
	rev := s.rev
	s.mu.Unlock()
	view, _, err := s.rebuild(cfg, true)
	if err != nil {
		return nil, rev, err
	}
	return view, rev, nil
}

// Rebuild checks the content last read against cfg, as on a configuration reload, and returns
// the view it gives. A valid view becomes the one the source serves. An error is logged but not
// counted: it refuses the configuration, and the caller that refuses it counts the refusal.
func (s *Source) Rebuild(cfg *config.Config) (*resolver.View, error) {
	view, _, err := s.rebuild(cfg, false)
	return view, err
}

// Run follows the view until ctx ends, calling onView with each new valid view, from Run's
// goroutine. It watches from the revision last read; when the watch falls behind a compaction
// or is lost it reads the whole view again and watches anew. While etcd cannot be reached it
// keeps the last view, marks the source stale, and tries again with a bounded backoff.
func (s *Source) Run(ctx context.Context, cfg func() *config.Config, onView func(*resolver.View)) {
	attempt := 0
	for ctx.Err() == nil {
		s.mu.Lock()
		listed := s.listed
		s.mu.Unlock()
		if !listed {
			// Every attempt after the first in a row waits, so that a store that fails at
			// once is never hammered.
			if attempt > 0 && !s.wait(ctx, s.backoff(attempt)) {
				return
			}
			attempt++
			if err := s.list(ctx); err != nil {
				if ctx.Err() == nil {
					s.markDown(err)
				}
				continue
			}
			s.apply(cfg(), onView)
		}
		started := time.Now()
		progressed, err := s.follow(ctx, cfg, onView)
		s.mu.Lock()
		s.listed = false
		s.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		// Only a watch that was created and then lasted resets the backoff: one that etcd ends
		// as soon as it starts must not turn into a tight loop of reads and watches.
		if progressed && time.Since(started) >= s.opts.BackoffMax {
			attempt = 0
		}
		var compacted *compactedError
		if errors.As(err, &compacted) {
			s.log.Info("naming watch fell behind an etcd compaction; reading the whole view again", "prefix", s.prefix, "compact_revision", compacted.rev)
			continue
		}
		s.markDown(err)
	}
}

// follow watches the prefix from the revision after the one last read and applies each batch
// of events, until the watch ends, a probe fails, or ctx ends. progressed reports whether the
// watch got as far as being created.
func (s *Source) follow(ctx context.Context, cfg func() *config.Config, onView func(*resolver.View)) (progressed bool, err error) {
	s.mu.Lock()
	from := s.rev + 1
	s.mu.Unlock()
	// WithRequireLeader ends the watch when its etcd member loses the cluster's leader, rather
	// than leaving it open on a member that can no longer see writes.
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	// The probe runs beside the watch, not in its loop: opening a watch blocks for as long as
	// etcd is unreachable, and a failed probe is what cancels it.
	probeErr := make(chan error, 1)
	probing := make(chan struct{})
	go func() {
		defer close(probing)
		probeErr <- s.probe(wctx)
		cancel()
	}()
	defer func() {
		cancel()
		<-probing
	}()
	wch := s.client.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(from), clientv3.WithCreatedNotify())
	for {
		select {
		case err := <-probeErr:
			if err == nil {
				err = ctx.Err()
			}
			return progressed, err
		case resp, ok := <-wch:
			if !ok {
				if ctx.Err() != nil {
					return progressed, ctx.Err()
				}
				select {
				case err := <-probeErr:
					if err != nil {
						return progressed, err
					}
				default:
				}
				return progressed, errors.New("the watch ended")
			}
			if resp.CompactRevision != 0 {
				return progressed, &compactedError{rev: resp.CompactRevision}
			}
			if err := resp.Err(); err != nil {
				return progressed, err
			}
			if resp.Created {
				progressed = true
				s.markUp()
				continue
			}
			if len(resp.Events) == 0 {
				continue // a progress notification
			}
			s.mu.Lock()
			for _, ev := range resp.Events {
				rel := string(ev.Kv.Key[len(s.prefix):])
				if ev.Type == clientv3.EventTypeDelete {
					delete(s.kvs, rel)
				} else {
					s.kvs[rel] = ev.Kv.Value
				}
			}
			s.rev = resp.Header.Revision
			s.mu.Unlock()
			s.apply(cfg(), onView)
		}
	}
}

// probe reads one key every ProbeInterval until a read fails or ctx ends; it returns the
// failure, or nil when ctx ended. A linearizable read goes through the leader, so it fails when
// etcd is down or this member is cut off, which a watch alone never reports: the client quietly
// retries a broken watch stream, and an outage would look like a view that never changes.
func (s *Source) probe(ctx context.Context) error {
	t := time.NewTicker(s.opts.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		pctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		_, err := s.client.Get(pctx, s.prefix, clientv3.WithCountOnly())
		cancel()
		if err != nil && ctx.Err() == nil {
			return fmt.Errorf("etcd did not answer a probe within %v: %w", s.opts.RequestTimeout, err)
		}
	}
}

// list reads the whole prefix and replaces the content with it.
func (s *Source) list(ctx context.Context) error {
	rctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.client.Get(rctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return fmt.Errorf("reading etcd prefix %s: %w", s.prefix, err)
	}
	kvs := make(map[string][]byte, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		kvs[string(kv.Key[len(s.prefix):])] = kv.Value
	}
	s.mu.Lock()
	s.kvs, s.rev, s.listed = kvs, resp.Header.Revision, true
	s.mu.Unlock()
	s.markUp()
	return nil
}

// apply checks the content against cfg and, when it is a valid view of another version than
// the one served, serves it and hands it to onView.
func (s *Source) apply(cfg *config.Config, onView func(*resolver.View)) {
	if view, changed, err := s.rebuild(cfg, true); err == nil && changed {
		onView(view)
	}
}

// rebuild assembles the content against cfg. An invalid view is logged once per distinct
// content, and counted then when count is set, and leaves the view served as it was. Content
// read again unchanged (after a reconnection, or at every retry of the first load) is the
// same rejection, and neither logged nor counted again.
func (s *Source) rebuild(cfg *config.Config, count bool) (view *resolver.View, changed bool, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	source := fmt.Sprintf("etcd prefix %s at revision %d", s.prefix, s.rev)
	view, err = Assemble(s.kvs, cfg, source)
	if err != nil {
		ver := contentVersion(s.kvs)
		if count && ver != s.countedVersion {
			s.countedVersion = ver
			s.metrics.Failed()
		}
		if ver != s.badVersion {
			s.badVersion = ver
			msg := "naming view in etcd rejected; still serving the previous one"
			if s.view == nil {
				// Nothing was served yet: there is no previous view to keep.
				msg = "naming view in etcd rejected; waiting for a valid one"
			}
			s.log.Error(msg, "error", err)
		}
		return nil, false, err
	}
	s.badVersion, s.countedVersion = "", ""
	if s.view != nil && s.view.Version == view.Version {
		return s.view, false, nil
	}
	s.view = view
	s.log.Info("naming view loaded", "source", "etcd", "prefix", s.prefix, "revision", s.rev, "version", view.Version, "services", len(view.Services))
	return view, true, nil
}

// contentVersion hashes content as stored, to tell one broken content from another.
func contentVersion(kvs map[string][]byte) string {
	h := sha256.New()
	for _, k := range sortedKeys(kvs) {
		hashPair(h, k, kvs[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// markUp records that etcd answered and the source is in sync.
func (s *Source) markUp() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.inSync && !s.staleSince.IsZero() {
		s.log.Info("etcd naming source back in sync", "prefix", s.prefix, "revision", s.rev, "stale_for", time.Since(s.staleSince).Round(time.Millisecond))
	}
	s.inSync, s.staleSince = true, time.Time{}
}

// markDown records that the source lost etcd. The first loss of a stretch is logged; the
// retries that follow are not, so that a long outage is one line and one line for recovery.
func (s *Source) markDown(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.staleSince.IsZero() {
		s.staleSince = time.Now()
		s.log.Warn("etcd naming source out of sync; serving the last view until etcd answers again", "prefix", s.prefix, "revision", s.rev, "error", err)
	}
	s.inSync = false
}

// backoff returns the wait before the attempt-th retry in a row: doubling from BackoffMin up
// to BackoffMax, less up to a fifth at random so that many partroute replicas that lost etcd
// together do not come back in step.
func (s *Source) backoff(attempt int) time.Duration {
	d := s.opts.BackoffMin
	for i := 1; i < attempt && d < s.opts.BackoffMax; i++ {
		d *= 2
	}
	d = min(d, s.opts.BackoffMax)
	return d - time.Duration(rand.Int64N(int64(d)/5+1)) //nolint:gosec // jitter only spreads retries out: it needs no unpredictability
}

// wait waits d or until ctx ends, and reports whether to go on.
func (s *Source) wait(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// compactedError is a watch that started before etcd's compacted revision: the events it
// missed are gone, so only a full read can catch up.
type compactedError struct{ rev int64 }

func (e *compactedError) Error() string {
	return fmt.Sprintf("etcd compacted its history up to revision %d", e.rev)
}
