package cache

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
)

// FillFunc resolves key from the naming source. The cache calls it on a miss, on expiry and
// after invalidation, at most once at a time per key.
//
// previous and hasPrevious carry the value the cache still holds for key, however old or
// invalidated, so that a source can ask for a newer version than the one it returned last
// (Service Fabric's PreviousRspVersion). previous is shared with readers of the cache and must
// not be modified.
//
// ctx carries the values of the Get that started the fill and ends at ResolveTimeout; it is
// not cancelled when that Get's own context ends. FillFunc must return soon after ctx ends: the
// cache stops waiting for it at the deadline, but it does not start another fill for the same
// key until this one has returned.
type FillFunc[K comparable, V any] func(ctx context.Context, key K, previous V, hasPrevious bool) (V, error)

// Options configures a Cache. The names in validation errors are those of the cache section
// of partroute.yaml.
type Options[K comparable, V any] struct {
	// Size is the most entries the cache holds; the least recently used entry is evicted to
	// make room. It must be at least 1.
	Size int
	// TTL is how long an entry is served as a hit after its fill began. It must be above 0.
	TTL time.Duration
	// StaleIfError is how long past TTL an entry may still be served, as Stale, when its
	// refill fails. 0 means an expired entry is never served.
	StaleIfError time.Duration
	// ResolveTimeout is the deadline for one fill; 0 means config.DefaultResolveTimeout. It is
	// short because a request waits for the fill before it can be routed.
	ResolveTimeout time.Duration
	// Fill resolves a key from the naming source. It is required.
	Fill FillFunc[K, V]
	// Now is the clock; nil means time.Now. Tests inject their own to move time without
	// sleeping.
	Now func() time.Time
	// Metrics receives the cache's collectors; nil means no metrics. To run several caches
	// against one registry, wrap it with prometheus.WrapRegistererWith and a distinguishing
	// label, since the metric names are fixed.
	Metrics prometheus.Registerer
}

// Result says how Get answered.
type Result uint8

const (
	// Error means Get returned no value; its error says why.
	Error Result = iota
	// Hit means the value came from a fresh entry without calling the source.
	Hit
	// Miss means the value came from a fill that this Get started or joined.
	Miss
	// Stale means the fill failed and the value came from an entry past its TTL (or
	// invalidated) but within StaleIfError.
	Stale
)

// String returns the result as it appears in the lookups metric's result label.
func (r Result) String() string {
	switch r {
	case Error:
		return "error"
	case Hit:
		return "hit"
	case Miss:
		return "miss"
	case Stale:
		return "stale"
	default:
		return fmt.Sprintf("Result(%d)", uint8(r))
	}
}

// entry is one cached value. Everything but invalidated is set before the entry is added to the
// LRU and never changed afterwards, so readers need no lock beyond the LRU's own.
type entry[V any] struct {
	value      V
	freshUntil time.Time
	staleUntil time.Time
	// gen is the cache's generation when the fill began; InvalidateAll moves the cache to a
	// new generation, which makes every older entry due for a refill at once.
	gen uint64
	// invalidated is set by Invalidate. It is atomic because hits read it without Cache.mu.
	invalidated atomic.Bool
}

// call is one fill in flight. val, err and timedOut are written before done is closed and only
// read after, so the channel orders them.
type call[V any] struct {
	done chan struct{}
	// ctx is the fill's context; waiters watch it so that they stop at the deadline even when
	// the fill function ignores it.
	ctx      context.Context
	val      V
	err      error
	timedOut bool
	// invalidated and discard are guarded by Cache.mu. invalidated stores the result already
	// invalidated, because Invalidate ran after the fill began and the source may have
	// answered with what the invalidation meant to replace. discard drops the result, because
	// Purge ran after the fill began.
	invalidated bool
	discard     bool
}

// Cache is a bounded, TTL-based cache of values filled from a naming source. Build it with New;
// it is safe for concurrent use.
type Cache[K comparable, V any] struct {
	lru            *lru.Cache[K, *entry[V]]
	fill           FillFunc[K, V]
	now            func() time.Time
	ttl            time.Duration
	staleIfError   time.Duration
	resolveTimeout time.Duration
	m              metrics

	// gen is the current generation; see entry.gen.
	gen atomic.Uint64

	// mu guards calls and the per-call flags, and orders storing a fill's result against
	// Invalidate and Purge. The hit path never takes it.
	mu    sync.Mutex
	calls map[K]*call[V]

	// hookJoined and hookFilled let tests learn, without sleeping, that a Get joined a fill
	// in flight and that a fill finished. They are nil outside tests.
	hookJoined func()
	hookFilled func()
}

// New validates opts and builds a cache. All invalid options are reported together.
func New[K comparable, V any](opts Options[K, V]) (*Cache[K, V], error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	c := &Cache[K, V]{
		fill:           opts.Fill,
		now:            opts.Now,
		ttl:            opts.TTL,
		staleIfError:   opts.StaleIfError,
		resolveTimeout: opts.ResolveTimeout,
		calls:          make(map[K]*call[V]),
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.resolveTimeout == 0 {
		c.resolveTimeout = config.DefaultResolveTimeout
	}
	l, err := lru.New[K, *entry[V]](opts.Size)
	if err != nil {
		return nil, fmt.Errorf("cache.size: %w", err)
	}
	c.lru = l
	m, err := newMetrics(opts.Metrics, func() float64 { return float64(c.lru.Len()) })
	if err != nil {
		return nil, err
	}
	c.m = m
	return c, nil
}

func (o *Options[K, V]) validate() error {
	var errs []error
	if o.Size < 1 {
		errs = append(errs, fmt.Errorf("cache.size: %d is below 1", o.Size))
	}
	if o.TTL <= 0 {
		errs = append(errs, fmt.Errorf("cache.ttl: %s must be above 0", o.TTL))
	}
	if o.StaleIfError < 0 {
		errs = append(errs, fmt.Errorf("cache.staleIfError: %s is below 0", o.StaleIfError))
	} else if o.TTL > 0 && o.StaleIfError > math.MaxInt64-o.TTL {
		// ttl+staleIfError is computed for every entry and must not wrap around.
		errs = append(errs, fmt.Errorf("cache.staleIfError: %s is too large together with cache.ttl %s", o.StaleIfError, o.TTL))
	}
	if o.ResolveTimeout < 0 {
		errs = append(errs, fmt.Errorf("cache.resolveTimeout: %s is below 0 (0 means the default, %s)", o.ResolveTimeout, config.DefaultResolveTimeout))
	}
	if o.Fill == nil {
		errs = append(errs, errors.New("cache.fill: missing; the cache needs a naming source to fill from"))
	}
	return errors.Join(errs...)
}

// Get returns the value for key: from a fresh entry (Hit), from a fill (Miss), or, when the fill
// fails, from an entry within its stale limit (Stale). With nothing usable it returns an
// *UnavailableError. If ctx ends while Get waits for a fill, Get returns ctx's error, and the
// fill carries on for the other waiters and the next Get.
func (c *Cache[K, V]) Get(ctx context.Context, key K) (V, Result, error) {
	if e, ok := c.lru.Get(key); ok && c.fresh(e, c.now()) {
		c.m.hit.Inc()
		return e.value, Hit, nil
	}
	return c.miss(ctx, key)
}

// fresh reports whether e may be served without asking the source.
func (c *Cache[K, V]) fresh(e *entry[V], now time.Time) bool {
	return now.Before(e.freshUntil) && e.gen == c.gen.Load() && !e.invalidated.Load()
}

// miss joins the fill in flight for key, or starts one.
func (c *Cache[K, V]) miss(ctx context.Context, key K) (V, Result, error) {
	if ctx == nil {
		ctx = context.Background()
	}
	c.mu.Lock()
	cl, joined := c.calls[key]
	if !joined {
		prev, hasPrev := c.lru.Peek(key)
		if hasPrev && c.fresh(prev, c.now()) {
			// A fill stored this entry after the look-up in Get; fills store before they
			// leave calls, so checking again under mu avoids a second fill.
			c.mu.Unlock()
			c.m.hit.Inc()
			return prev.value, Hit, nil
		}
		cl = c.start(ctx, key, prev)
	}
	c.mu.Unlock()
	if joined && c.hookJoined != nil {
		c.hookJoined()
	}
	return c.wait(ctx, key, cl)
}

// start registers and launches a fill for key. c.mu must be held.
//
// The fill runs in its own goroutine under a context that keeps the starting Get's values but
// not its cancellation: the fill is shared, so one waiter leaving must not fail it for the
// others, and its result is worth keeping for the next Get. ResolveTimeout alone bounds it.
func (c *Cache[K, V]) start(ctx context.Context, key K, prev *entry[V]) *call[V] {
	fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.resolveTimeout)
	cl := &call[V]{done: make(chan struct{}), ctx: fctx}
	c.calls[key] = cl
	var (
		prevVal V
		hasPrev bool
	)
	if prev != nil {
		prevVal, hasPrev = prev.value, true
	}
	// The generation and the clock are read when the fill begins: an InvalidateAll during
	// the fill leaves its result due for a refill, and a slow fill does not stretch freshness.
	gen, began := c.gen.Load(), c.now()
	go c.run(fctx, cancel, key, cl, prevVal, hasPrev, gen, began)
	return cl
}

// run calls the fill function, stores a successful result and wakes the waiters.
func (c *Cache[K, V]) run(ctx context.Context, cancel context.CancelFunc, key K, cl *call[V], prev V, hasPrev bool, gen uint64, began time.Time) {
	// cancel runs after done is closed, so a waiter that sees ctx end before done knows the
	// deadline passed rather than the fill finishing.
	defer cancel()
	val, err := c.callFill(ctx, key, prev, hasPrev)
	timedOut := err != nil && (errors.Is(err, context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded))
	switch {
	case err == nil:
		c.m.fillOK.Inc()
	case timedOut:
		c.m.fillTimeout.Inc()
	default:
		c.m.fillError.Inc()
	}

	c.mu.Lock()
	if err == nil && !cl.discard {
		e := &entry[V]{
			value:      val,
			freshUntil: began.Add(c.ttl),
			staleUntil: began.Add(c.ttl + c.staleIfError),
			gen:        gen,
		}
		e.invalidated.Store(cl.invalidated)
		if c.lru.Add(key, e) {
			c.m.evictions.Inc()
		}
	}
	if c.calls[key] == cl {
		delete(c.calls, key)
	}
	cl.val, cl.err, cl.timedOut = val, err, timedOut
	c.mu.Unlock()
	close(cl.done)
	if c.hookFilled != nil {
		c.hookFilled()
	}
}

// callFill turns a panic in the fill function into an error: the fill runs on a goroutine of
// the cache's own, where a panic would end the process rather than reach a caller.
func (c *Cache[K, V]) callFill(ctx context.Context, key K, prev V, hasPrev bool) (val V, err error) {
	defer func() {
		if r := recover(); r != nil {
			var zero V
			val, err = zero, fmt.Errorf("cache: fill panicked: %v", r)
		}
	}()
	return c.fill(ctx, key, prev, hasPrev)
}

// wait waits for cl on behalf of one Get, until the fill finishes, its deadline passes or the
// caller's ctx ends, whichever comes first.
func (c *Cache[K, V]) wait(ctx context.Context, key K, cl *call[V]) (V, Result, error) {
	select {
	case <-cl.done:
		return c.settle(key, cl)
	case <-cl.ctx.Done():
		select {
		case <-cl.done:
			return c.settle(key, cl)
		default:
			// The fill function has not returned at its deadline; do not wait on it.
			return c.fallback(key, context.DeadlineExceeded, true)
		}
	case <-ctx.Done():
		select {
		case <-cl.done:
			// The result arrived as the caller gave up; it is still worth returning.
			return c.settle(key, cl)
		default:
			c.m.lookupError.Inc()
			var zero V
			return zero, Error, ctx.Err()
		}
	}
}

// settle answers a Get from a finished fill.
func (c *Cache[K, V]) settle(key K, cl *call[V]) (V, Result, error) {
	if cl.err == nil {
		c.m.miss.Inc()
		return cl.val, Miss, nil
	}
	return c.fallback(key, cl.err, cl.timedOut)
}

// fallback answers a Get whose fill failed: from the entry still held for key if it is within
// its stale limit, otherwise with an *UnavailableError.
func (c *Cache[K, V]) fallback(key K, cause error, timedOut bool) (V, Result, error) {
	if e, ok := c.lru.Peek(key); ok && c.now().Before(e.staleUntil) {
		c.m.stale.Inc()
		return e.value, Stale, nil
	}
	c.m.lookupError.Inc()
	var zero V
	return zero, Error, &UnavailableError{Err: cause, TimedOut: timedOut}
}

// Invalidate makes the next Get for key refill, for instance after an upstream failure signal.
// The value stays for stale-if-error and as the fill's previous value. A fill already in flight
// for key stores its result already invalidated, since the source may have answered before the
// failure it was asked about; its waiters still receive that result.
func (c *Cache[K, V]) Invalidate(key K) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if cl, ok := c.calls[key]; ok {
		cl.invalidated = true
	}
	if e, ok := c.lru.Peek(key); ok {
		e.invalidated.Store(true)
	}
}

// InvalidateAll makes the next Get for every key refill, for a naming change. Like Invalidate
// it keeps the values, and it takes constant time whatever the cache holds.
func (c *Cache[K, V]) InvalidateAll() {
	c.gen.Add(1)
}

// Purge forgets every value. Fills in flight still answer their waiters, but their results are
// not stored.
func (c *Cache[K, V]) Purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, cl := range c.calls {
		cl.discard = true
	}
	c.lru.Purge()
}

// Len returns the number of entries held, fresh or not.
func (c *Cache[K, V]) Len() int {
	return c.lru.Len()
}
