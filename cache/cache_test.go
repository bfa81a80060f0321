package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
)

// fillCall records what the cache passed to one fill.
type fillCall struct {
	key     string
	prev    string
	hasPrev bool
}

// source is a fake naming source. By default its nth fill of key answers "key#n"; answer, when
// set, replaces that.
type source struct {
	mu     sync.Mutex
	calls  []fillCall
	answer func(ctx context.Context, key string, n int) (string, error)
}

func (s *source) fill(ctx context.Context, key, prev string, hasPrev bool) (string, error) {
	s.mu.Lock()
	s.calls = append(s.calls, fillCall{key: key, prev: prev, hasPrev: hasPrev})
	n, answer := len(s.calls), s.answer
	s.mu.Unlock()
	if answer == nil {
		return fmt.Sprintf("%s#%d", key, n), nil
	}
	return answer(ctx, key, n)
}

func (s *source) setAnswer(f func(ctx context.Context, key string, n int) (string, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.answer = f
}

func (s *source) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls)
}

func (s *source) last() fillCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) == 0 {
		return fillCall{}
	}
	return s.calls[len(s.calls)-1]
}

type fixture struct {
	c     *Cache[string, string]
	clock *testkit.Clock
	src   *source
	reg   *prometheus.Registry
}

const (
	testTTL   = 10 * time.Second
	testStale = time.Minute
)

// newFixture builds a cache over a fake source and clock; edit adjusts the options first.
func newFixture(t *testing.T, edit func(*Options[string, string])) *fixture {
	t.Helper()
	f := &fixture{clock: testkit.NewClock(), src: &source{}, reg: prometheus.NewRegistry()}
	opts := Options[string, string]{
		Size:         100,
		TTL:          testTTL,
		StaleIfError: testStale,
		Fill:         f.src.fill,
		Now:          f.clock.Now,
		Metrics:      f.reg,
	}
	if edit != nil {
		edit(&opts)
	}
	c, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	f.c = c
	return f
}

// get calls Get and fails the test unless it answers want with result.
func (f *fixture) get(t *testing.T, key, want string, result Result) {
	t.Helper()
	got, res, err := f.c.Get(context.Background(), key)
	if err != nil || got != want || res != result {
		t.Fatalf("Get(%q) = %q, %v, %v; want %q, %v, nil", key, got, res, err, want, result)
	}
}

// metric reads one sample from the registry: the metric name and, for labelled metrics, the
// value of its result label.
func (f *fixture) metric(t *testing.T, name, result string) float64 {
	t.Helper()
	families, err := f.reg.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := result == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "result" && l.GetValue() == result {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("metric %s{result=%q} not found", name, result)
	return 0
}

func TestNewRejectsInvalidOptions(t *testing.T) {
	fill := func(context.Context, string, string, bool) (string, error) { return "", nil }
	valid := Options[string, string]{Size: 1, TTL: time.Second, Fill: fill}
	tests := []struct {
		name string
		edit func(*Options[string, string])
		want []string
	}{
		{"size", func(o *Options[string, string]) { o.Size = 0 }, []string{"cache.size: 0 is below 1"}},
		{"negative size", func(o *Options[string, string]) { o.Size = -3 }, []string{"cache.size: -3 is below 1"}},
		{"ttl", func(o *Options[string, string]) { o.TTL = 0 }, []string{"cache.ttl: 0s must be above 0"}},
		{"staleIfError", func(o *Options[string, string]) { o.StaleIfError = -time.Second }, []string{"cache.staleIfError: -1s is below 0"}},
		{"staleIfError overflow", func(o *Options[string, string]) { o.StaleIfError = math.MaxInt64 }, []string{"cache.staleIfError:", "too large"}},
		{"resolveTimeout", func(o *Options[string, string]) { o.ResolveTimeout = -time.Millisecond }, []string{"cache.resolveTimeout: -1ms is below 0"}},
		{"fill", func(o *Options[string, string]) { o.Fill = nil }, []string{"cache.fill: missing"}},
		{"all at once", func(o *Options[string, string]) { *o = Options[string, string]{} }, []string{"cache.size:", "cache.ttl:", "cache.fill:"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := valid
			tt.edit(&opts)
			c, err := New(opts)
			if err == nil || c != nil {
				t.Fatalf("New = %v, %v; want an error", c, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	c, err := New(Options[string, string]{
		Size: 1,
		TTL:  time.Second,
		Fill: func(context.Context, string, string, bool) (string, error) { return "v", nil },
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if c.resolveTimeout != config.DefaultResolveTimeout {
		t.Errorf("resolveTimeout = %v; want %v", c.resolveTimeout, config.DefaultResolveTimeout)
	}
	// Without a clock or a registerer the cache still works: real time, no metrics.
	for _, want := range []Result{Miss, Hit} {
		if v, res, err := c.Get(context.Background(), "k"); v != "v" || res != want || err != nil {
			t.Fatalf("Get = %q, %v, %v; want v, %v, nil", v, res, err, want)
		}
	}
}

func TestHitAndMiss(t *testing.T) {
	f := newFixture(t, nil)
	f.get(t, "a", "a#1", Miss)
	f.get(t, "a", "a#1", Hit)
	f.get(t, "b", "b#2", Miss)
	f.get(t, "a", "a#1", Hit)
	if n := f.src.count(); n != 2 {
		t.Fatalf("fills = %d; want 2", n)
	}
	if c := f.src.last(); c.hasPrev {
		t.Errorf("first fill of b got previous %q; want none", c.prev)
	}
}

func TestExpiry(t *testing.T) {
	f := newFixture(t, nil)
	f.get(t, "a", "a#1", Miss)
	f.clock.Advance(testTTL - time.Nanosecond)
	f.get(t, "a", "a#1", Hit)
	f.clock.Advance(time.Nanosecond)
	f.get(t, "a", "a#2", Miss)
	if c := f.src.last(); !c.hasPrev || c.prev != "a#1" {
		t.Errorf("refill got previous %q, %v; want a#1, true", c.prev, c.hasPrev)
	}
	f.get(t, "a", "a#2", Hit)
}

func TestFreshnessCountsFromFillStart(t *testing.T) {
	f := newFixture(t, nil)
	// The fill takes 4s of the 10s TTL, so the entry stays fresh for 6s after it is stored.
	f.src.setAnswer(func(_ context.Context, key string, n int) (string, error) {
		f.clock.Advance(4 * time.Second)
		return fmt.Sprintf("%s#%d", key, n), nil
	})
	f.get(t, "a", "a#1", Miss)
	f.clock.Advance(6*time.Second - time.Nanosecond)
	f.get(t, "a", "a#1", Hit)
	f.clock.Advance(time.Nanosecond)
	f.get(t, "a", "a#2", Miss)
}

func TestEvictionAtSizeBound(t *testing.T) {
	f := newFixture(t, func(o *Options[string, string]) { o.Size = 2 })
	f.get(t, "a", "a#1", Miss)
	f.get(t, "b", "b#2", Miss)
	f.get(t, "a", "a#1", Hit) // a is now the most recently used, so b goes first.
	if got := f.metric(t, "partroute_cache_evictions_total", ""); got != 0 {
		t.Fatalf("evictions = %v before the bound is reached; want 0", got)
	}
	f.get(t, "c", "c#3", Miss)
	if n := f.c.Len(); n != 2 {
		t.Errorf("Len = %d; want 2", n)
	}
	if got := f.metric(t, "partroute_cache_evictions_total", ""); got != 1 {
		t.Errorf("evictions = %v; want 1", got)
	}
	if got := f.metric(t, "partroute_cache_entries", ""); got != 2 {
		t.Errorf("entries = %v; want 2", got)
	}
	f.get(t, "a", "a#1", Hit)
	f.get(t, "b", "b#4", Miss)
	if c := f.src.last(); c.hasPrev {
		t.Errorf("fill of evicted b got previous %q; want none", c.prev)
	}
	// Refilling a key that is still held replaces it in place and evicts nothing.
	f.c.Invalidate("b")
	f.get(t, "b", "b#5", Miss)
	if got := f.metric(t, "partroute_cache_evictions_total", ""); got != 2 {
		t.Errorf("evictions = %v; want 2", got)
	}
}

// blockingFill makes the source's fills announce themselves on started and wait for release.
func blockingFill(src *source) (started chan string, release chan struct{}) {
	started, release = make(chan string, 16), make(chan struct{})
	src.setAnswer(func(_ context.Context, key string, n int) (string, error) {
		started <- key
		<-release
		return fmt.Sprintf("%s#%d", key, n), nil
	})
	return started, release
}

func TestConcurrentGetsShareOneFill(t *testing.T) {
	const n = 64
	f := newFixture(t, nil)
	started, release := blockingFill(f.src)
	var joined sync.WaitGroup
	joined.Add(n - 1)
	f.c.hookJoined = joined.Done

	type answer struct {
		v   string
		res Result
		err error
	}
	answers := make(chan answer, n)
	for range n {
		go func() {
			v, res, err := f.c.Get(context.Background(), "k")
			answers <- answer{v, res, err}
		}()
	}
	<-started
	joined.Wait() // Every Get is now waiting on the one fill.
	close(release)
	for range n {
		a := <-answers
		if a.v != "k#1" || a.res != Miss || a.err != nil {
			t.Errorf("Get = %q, %v, %v; want k#1, miss, nil", a.v, a.res, a.err)
		}
	}
	if c := f.src.count(); c != 1 {
		t.Errorf("fills = %d; want 1", c)
	}
	if got := f.metric(t, "partroute_cache_lookups_total", "miss"); got != n {
		t.Errorf("miss lookups = %v; want %d", got, n)
	}
	if got := f.metric(t, "partroute_cache_fills_total", "ok"); got != 1 {
		t.Errorf("ok fills = %v; want 1", got)
	}
}

type ctxKey struct{}

func TestCallerLeavingDoesNotCancelSharedFill(t *testing.T) {
	f := newFixture(t, nil)
	started, release := make(chan struct{}), make(chan struct{})
	fillCtxErr, fillCtxValue := make(chan error, 1), make(chan any, 1)
	f.src.setAnswer(func(ctx context.Context, key string, n int) (string, error) {
		close(started)
		<-release
		fillCtxErr <- ctx.Err()
		fillCtxValue <- ctx.Value(ctxKey{})
		return fmt.Sprintf("%s#%d", key, n), nil
	})
	joined := make(chan struct{}, 1)
	f.c.hookJoined = func() { joined <- struct{}{} }

	// The first caller starts the fill, the second joins it, then the first gives up.
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "trace-1"))
	first := make(chan error, 1)
	go func() {
		_, res, err := f.c.Get(ctx, "k")
		if res != Error {
			err = fmt.Errorf("result %v; want error (err %w)", res, err)
		}
		first <- err
	}()
	<-started
	second := make(chan string, 1)
	go func() {
		v, res, err := f.c.Get(context.Background(), "k")
		second <- fmt.Sprintf("%s %v %v", v, res, err)
	}()
	<-joined
	cancel()
	if err := <-first; !errors.Is(err, context.Canceled) {
		t.Fatalf("leaving caller got %v; want context.Canceled", err)
	}
	close(release)
	if got := <-second; got != "k#1 miss <nil>" {
		t.Errorf("remaining caller got %q; want k#1 miss <nil>", got)
	}
	if err := <-fillCtxErr; err != nil {
		t.Errorf("fill context ended with %v after one waiter left; want it alive", err)
	}
	if v := <-fillCtxValue; v != "trace-1" {
		t.Errorf("fill context value = %v; want the starting caller's trace-1", v)
	}
	// The fill's result was kept for the next caller.
	f.get(t, "k", "k#1", Hit)
	if got := f.metric(t, "partroute_cache_lookups_total", "error"); got != 1 {
		t.Errorf("error lookups = %v; want 1", got)
	}
}

func TestStaleIfError(t *testing.T) {
	f := newFixture(t, nil)
	f.get(t, "a", "a#1", Miss)
	boom := errors.New("gateway said no")
	f.src.setAnswer(func(context.Context, string, int) (string, error) { return "", boom })

	f.clock.Advance(testTTL)
	f.get(t, "a", "a#1", Stale)
	f.clock.Advance(testStale - time.Nanosecond)
	f.get(t, "a", "a#1", Stale)
	if c := f.src.last(); c.prev != "a#1" || !c.hasPrev {
		t.Errorf("failing refill got previous %q, %v; want a#1, true", c.prev, c.hasPrev)
	}

	f.clock.Advance(time.Nanosecond) // Now exactly TTL+StaleIfError after the fill began.
	v, res, err := f.c.Get(context.Background(), "a")
	if v != "" || res != Error {
		t.Fatalf("Get past the stale limit = %q, %v; want \"\", error", v, res)
	}
	var unavailable *UnavailableError
	if !errors.As(err, &unavailable) || unavailable.TimedOut {
		t.Fatalf("error %#v; want *UnavailableError that did not time out", err)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, boom) {
		t.Errorf("error %v does not match both ErrUnavailable and the fill's error", err)
	}
	if errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v matches context.DeadlineExceeded; the source answered", err)
	}
	if want := "cache: naming unavailable: gateway said no"; err.Error() != want {
		t.Errorf("message %q; want %q", err, want)
	}
	if got := f.metric(t, "partroute_cache_lookups_total", "stale"); got != 2 {
		t.Errorf("stale lookups = %v; want 2", got)
	}
	if got := f.metric(t, "partroute_cache_fills_total", "error"); got != 3 {
		t.Errorf("failed fills = %v; want 3", got)
	}

	// Once the source recovers, the next Get refills.
	f.src.setAnswer(nil)
	f.get(t, "a", "a#5", Miss)
}

func TestNoStaleIfErrorMeansNoExpiredValues(t *testing.T) {
	f := newFixture(t, func(o *Options[string, string]) { o.StaleIfError = 0 })
	f.get(t, "a", "a#1", Miss)
	f.src.setAnswer(func(context.Context, string, int) (string, error) { return "", errors.New("down") })
	f.clock.Advance(testTTL)
	if _, res, err := f.c.Get(context.Background(), "a"); res != Error || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get = %v, %v; want error, ErrUnavailable", res, err)
	}
}

func TestUnavailableWithNothingCached(t *testing.T) {
	f := newFixture(t, nil)
	f.src.setAnswer(func(context.Context, string, int) (string, error) { return "", errors.New("down") })
	if _, res, err := f.c.Get(context.Background(), "a"); res != Error || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Get = %v, %v; want error, ErrUnavailable", res, err)
	}
	if n := f.c.Len(); n != 0 {
		t.Errorf("Len = %d after a failed fill; want 0", n)
	}
}

func TestResolveTimeout(t *testing.T) {
	const timeout = 20 * time.Millisecond
	f := newFixture(t, func(o *Options[string, string]) { o.ResolveTimeout = timeout })
	filled := make(chan struct{}, 1)
	f.c.hookFilled = func() { filled <- struct{}{} }
	deadline := make(chan time.Duration, 1)
	f.src.setAnswer(func(ctx context.Context, _ string, _ int) (string, error) {
		d, _ := ctx.Deadline()
		deadline <- time.Until(d)
		<-ctx.Done()
		return "", fmt.Errorf("resolving: %w", ctx.Err())
	})

	_, res, err := f.c.Get(context.Background(), "a")
	if res != Error {
		t.Fatalf("result %v; want error", res)
	}
	var unavailable *UnavailableError
	if !errors.As(err, &unavailable) || !unavailable.TimedOut {
		t.Fatalf("error %#v; want *UnavailableError that timed out", err)
	}
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v does not match ErrUnavailable and context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), "resolve timed out") {
		t.Errorf("message %q does not say the resolve timed out", err)
	}
	if d := <-deadline; d <= 0 || d > timeout {
		t.Errorf("fill deadline %v away; want within %v", d, timeout)
	}
	<-filled
	if got := f.metric(t, "partroute_cache_fills_total", "timeout"); got != 1 {
		t.Errorf("timed-out fills = %v; want 1", got)
	}
	if got := f.metric(t, "partroute_cache_fills_total", "error"); got != 0 {
		t.Errorf("failed fills = %v; want 0", got)
	}
}

func TestWaitersStopAtDeadlineWhenFillIgnoresIt(t *testing.T) {
	f := newFixture(t, func(o *Options[string, string]) { o.ResolveTimeout = 10 * time.Millisecond })
	filled := make(chan struct{}, 1)
	f.c.hookFilled = func() { filled <- struct{}{} }
	f.get(t, "a", "a#1", Miss)
	<-filled
	f.clock.Advance(testTTL)

	// This fill never looks at its context.
	started, release := blockingFill(f.src)
	f.get(t, "a", "a#1", Stale) // Returns at the deadline, from the stale entry.
	<-started
	// The hung fill is still the one in flight: a new Get joins it, finds its deadline
	// passed and does not start a second fill.
	f.get(t, "a", "a#1", Stale)
	if n := f.src.count(); n != 2 {
		t.Errorf("fills = %d; want 2", n)
	}
	close(release)
	<-filled
	// The late result is good data, so it was stored.
	f.get(t, "a", "a#2", Hit)

}

func TestInvalidate(t *testing.T) {
	f := newFixture(t, nil)
	f.get(t, "a", "a#1", Miss)
	f.get(t, "b", "b#2", Miss)
	f.c.Invalidate("a")
	f.c.Invalidate("absent") // Nothing to do, and nothing breaks.
	f.get(t, "b", "b#2", Hit)
	f.get(t, "a", "a#3", Miss)
	if c := f.src.last(); c.key != "a" || c.prev != "a#1" || !c.hasPrev {
		t.Errorf("refill got %+v; want key a with previous a#1", c)
	}
	f.get(t, "a", "a#3", Hit)

	// An invalidated value is still there for stale-if-error, even within its TTL.
	f.c.Invalidate("a")
	f.src.setAnswer(func(context.Context, string, int) (string, error) { return "", errors.New("down") })
	f.get(t, "a", "a#3", Stale)
}

func TestInvalidateDuringFill(t *testing.T) {
	f := newFixture(t, nil)
	started, release := blockingFill(f.src)
	done := make(chan string, 1)
	go func() {
		v, res, err := f.c.Get(context.Background(), "a")
		done <- fmt.Sprintf("%s %v %v", v, res, err)
	}()
	<-started
	f.c.Invalidate("a")
	close(release)
	if got := <-done; got != "a#1 miss <nil>" {
		t.Fatalf("waiter got %q; want a#1 miss <nil>", got)
	}
	// The result of a fill that began before Invalidate is not trusted as fresh.
	f.get(t, "a", "a#2", Miss)
	if c := f.src.last(); c.prev != "a#1" {
		t.Errorf("refill got previous %q; want a#1", c.prev)
	}
	f.get(t, "a", "a#2", Hit)
}

func TestInvalidateAll(t *testing.T) {
	f := newFixture(t, nil)
	f.get(t, "a", "a#1", Miss)
	f.get(t, "b", "b#2", Miss)
	f.c.InvalidateAll()
	f.get(t, "a", "a#3", Miss)
	if c := f.src.last(); c.prev != "a#1" || !c.hasPrev {
		t.Errorf("refill got previous %q, %v; want a#1, true", c.prev, c.hasPrev)
	}
	f.get(t, "b", "b#4", Miss)
	f.get(t, "a", "a#3", Hit)
	f.get(t, "b", "b#4", Hit)

	f.c.InvalidateAll()
	f.src.setAnswer(func(context.Context, string, int) (string, error) { return "", errors.New("down") })
	f.get(t, "a", "a#3", Stale)
}

func TestInvalidateAllDuringFill(t *testing.T) {
	f := newFixture(t, nil)
	started, release := blockingFill(f.src)
	done := make(chan string, 1)
	go func() {
		v, res, err := f.c.Get(context.Background(), "a")
		done <- fmt.Sprintf("%s %v %v", v, res, err)
	}()
	<-started
	f.c.InvalidateAll()
	close(release)
	if got := <-done; got != "a#1 miss <nil>" {
		t.Fatalf("waiter got %q; want a#1 miss <nil>", got)
	}
	f.get(t, "a", "a#2", Miss)
	f.get(t, "a", "a#2", Hit)
}

func TestPurge(t *testing.T) {
	f := newFixture(t, nil)
	f.get(t, "a", "a#1", Miss)
	f.c.Purge()
	if n := f.c.Len(); n != 0 {
		t.Fatalf("Len = %d after Purge; want 0", n)
	}
	f.get(t, "a", "a#2", Miss)
	if c := f.src.last(); c.hasPrev {
		t.Errorf("fill after Purge got previous %q; want none", c.prev)
	}
}

func TestPurgeDuringFill(t *testing.T) {
	f := newFixture(t, nil)
	started, release := blockingFill(f.src)
	done := make(chan string, 1)
	go func() {
		v, res, err := f.c.Get(context.Background(), "a")
		done <- fmt.Sprintf("%s %v %v", v, res, err)
	}()
	<-started
	f.c.Purge()
	close(release)
	if got := <-done; got != "a#1 miss <nil>" {
		t.Fatalf("waiter got %q; want a#1 miss <nil>", got)
	}
	if n := f.c.Len(); n != 0 {
		t.Errorf("Len = %d; a fill that began before Purge was stored", n)
	}
}

func TestFillPanicBecomesError(t *testing.T) {
	f := newFixture(t, nil)
	f.src.setAnswer(func(context.Context, string, int) (string, error) { panic("source bug") })
	_, res, err := f.c.Get(context.Background(), "a")
	if res != Error || !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "fill panicked: source bug") {
		t.Fatalf("Get = %v, %v; want error, naming unavailable after the panic", res, err)
	}
	// The key is not stuck: the next Get fills again.
	f.src.setAnswer(nil)
	f.get(t, "a", "a#2", Miss)
}

func TestNilContext(t *testing.T) {
	f := newFixture(t, nil)
	var ctx context.Context // A nil context must not crash the miss path.
	if v, res, err := f.c.Get(ctx, "a"); v != "a#1" || res != Miss || err != nil {
		t.Fatalf("Get(nil ctx) = %q, %v, %v; want a#1, miss, nil", v, res, err)
	}
}

func TestMetrics(t *testing.T) {
	f := newFixture(t, func(o *Options[string, string]) { o.StaleIfError = testTTL })
	f.get(t, "a", "a#1", Miss)
	f.get(t, "a", "a#1", Hit)
	f.get(t, "b", "b#2", Miss)
	f.src.setAnswer(func(context.Context, string, int) (string, error) { return "", errors.New("down") })
	f.clock.Advance(testTTL + testTTL/2)
	f.get(t, "a", "a#1", Stale)
	f.clock.Advance(testTTL)
	if _, res, _ := f.c.Get(context.Background(), "a"); res != Error {
		t.Fatalf("result %v; want error", res)
	}

	want := `
# HELP partroute_cache_entries Entries held by the cache, fresh or not.
# TYPE partroute_cache_entries gauge
partroute_cache_entries 2
# HELP partroute_cache_evictions_total Entries evicted to keep the cache within its size.
# TYPE partroute_cache_evictions_total counter
partroute_cache_evictions_total 0
# HELP partroute_cache_fills_total Fills from the naming source by outcome: ok, error or timeout.
# TYPE partroute_cache_fills_total counter
partroute_cache_fills_total{result="error"} 2
partroute_cache_fills_total{result="ok"} 2
partroute_cache_fills_total{result="timeout"} 0
# HELP partroute_cache_lookups_total Cache look-ups by how they were answered: hit, miss (filled), stale (fill failed, stale entry served) or error.
# TYPE partroute_cache_lookups_total counter
partroute_cache_lookups_total{result="error"} 1
partroute_cache_lookups_total{result="hit"} 1
partroute_cache_lookups_total{result="miss"} 2
partroute_cache_lookups_total{result="stale"} 1
`
	if err := testutil.GatherAndCompare(f.reg, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.GatherAndLint(f.reg)
	if err != nil || len(problems) != 0 {
		t.Errorf("metric lint: %v, %v", problems, err)
	}
	// The children the hot path uses are the registered ones.
	if got := testutil.ToFloat64(f.c.m.hit); got != 1 {
		t.Errorf("hit counter = %v; want 1", got)
	}
}

func TestMetricsRegistration(t *testing.T) {
	fill := func(context.Context, string, string, bool) (string, error) { return "v", nil }
	reg := prometheus.NewRegistry()
	opts := Options[string, string]{Size: 1, TTL: time.Second, Fill: fill, Metrics: reg}
	if _, err := New(opts); err != nil {
		t.Fatalf("first New: %v", err)
	}
	// The same names twice on one registry is an error, reported by New.
	if _, err := New(opts); err == nil || !strings.Contains(err.Error(), "registering metrics") {
		t.Fatalf("second New on the same registry = %v; want a registration error", err)
	}
	// A failed New leaves nothing behind: a fresh registry takes a cache after one failed.
	reg2 := prometheus.NewRegistry()
	if err := reg2.Register(prometheus.NewCounter(prometheus.CounterOpts{Name: "partroute_cache_evictions_total", Help: "taken"})); err != nil {
		t.Fatal(err)
	}
	opts.Metrics = reg2
	if _, err := New(opts); err == nil {
		t.Fatal("New with a clashing collector succeeded")
	}
	families, err := reg2.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != "partroute_cache_evictions_total" {
			t.Errorf("failed New left %s registered", mf.GetName())
		}
	}
	// Several caches share a registry when each is wrapped with its own label.
	shared := prometheus.NewRegistry()
	for _, name := range []string{"etcd", "servicefabric"} {
		opts.Metrics = prometheus.WrapRegistererWith(prometheus.Labels{"source": name}, shared)
		if _, err := New(opts); err != nil {
			t.Errorf("New with a wrapped registerer (%s): %v", name, err)
		}
	}
}

func TestResultString(t *testing.T) {
	for r, want := range map[Result]string{Error: "error", Hit: "hit", Miss: "miss", Stale: "stale", Result(9): "Result(9)"} {
		if got := r.String(); got != want {
			t.Errorf("Result(%d).String() = %q; want %q", uint8(r), got, want)
		}
	}
}

func TestUnavailableErrorWithoutCause(t *testing.T) {
	err := &UnavailableError{}
	if got := err.Error(); got != "cache: naming unavailable" {
		t.Errorf("Error() = %q", got)
	}
	if !errors.Is(err, ErrUnavailable) {
		t.Error("does not match ErrUnavailable")
	}
}

func TestHitDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	c := newBenchCache(t)
	ctx := context.Background()
	k := partitionKey{service: "users", partition: "p-2"}
	if _, res, err := c.Get(ctx, k); res != Miss || err != nil {
		t.Fatalf("Get = %v, %v", res, err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, res, _ := c.Get(ctx, k); res != Hit {
			t.Fatalf("result %v; want hit", res)
		}
	})
	if allocs != 0 {
		t.Errorf("a hit allocates %v times; want 0", allocs)
	}
}
