package resolver

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
)

// publication is a state published to held requests, and the channel closed when the next one
// is published or the resolver drains. Held requests wait on it: a view change releases them
// at once, with no polling.
type publication struct {
	state *State
	next  chan struct{}
}

// Publish releases the requests held for a failover to st, which must be the state staged
// last: the caller publishes a state once Envoy has its endpoints (with partroute's xDS server,
// once every Envoy connected to it has acknowledged the update built from it). A held request
// is decided only with a state that is both staged and published, so that a write is never
// sent to a primary whose endpoints Envoy does not have yet.
func (r *Resolver) Publish(st *State) {
	r.holds.mu.Lock()
	defer r.holds.mu.Unlock()
	old := r.pub.Load()
	if old.state == st {
		return
	}
	r.pub.Store(&publication{state: st, next: make(chan struct{})})
	close(old.next)
}

// Published returns the state last published.
func (r *Resolver) Published() *State { return r.pub.Load().state }

// Drain answers every held request at once, and every request after it without holding it:
// each gets the decision of the state served then, routed or 503. partroute drains before it
// stops serving, so that no held request is left without an answer.
func (r *Resolver) Drain() { r.holds.drainOnce.Do(func() { close(r.holds.drain) }) }

// SetHoldMetrics makes the resolver record its held requests in m.
func (r *Resolver) SetHoldMetrics(m *HoldMetrics) {
	r.holds.mu.Lock()
	defer r.holds.mu.Unlock()
	r.holds.metrics = m
}

// Await holds a request whose decision d has Wait set, until a published state gives the
// partition a primary (the request is routed there), the wait passes, the resolver drains or
// ctx ends; then it answers with the state served, 503 partition_unavailable when it still has
// no primary. hold is called once, when the request is held, before it waits: the ext_proc
// handler extends Envoy's message timeout there. Over the limits of held requests
// (limits.failover), or while draining, the request is decided at once and hold is not
// called. A decision without Wait is returned as it is.
func (r *Resolver) Await(ctx context.Context, req *keying.Request, d Decision, hold func()) Decision {
	if d.Wait <= 0 || d.Service == nil || d.Partition == nil {
		return d
	}
	select {
	case <-r.holds.drain:
		return r.settle(ctx, req, "partroute is shutting down")
	default:
	}
	k := holdKey{service: d.Service.Name, partition: d.Partition.Index}
	m, over := r.holds.acquire(k, &d.Config.Limits.Failover)
	if over != "" {
		m.refused.WithLabelValues(over).Inc()
		return r.settle(ctx, req, "too many requests are waiting for a primary ("+over+")")
	}
	defer r.holds.release(k)
	hold()
	began := time.Now()
	timer := time.NewTimer(d.Wait)
	defer timer.Stop()
	end := func(how string) { m.duration.WithLabelValues(how).Observe(time.Since(began).Seconds()) }
	for {
		pub := r.pub.Load()
		if pub.state == r.state.Load() {
			nd := r.resolve(ctx, pub.state, req)
			if nd.Wait == 0 {
				end(endPublished)
				return nd
			}
		}
		select {
		case <-pub.next:
		case <-timer.C:
			end(endTimeout)
			return r.settle(ctx, req, "no primary appeared within the failover wait of "+d.Wait.String()+" (replicas.failoverWait)")
		case <-r.holds.drain:
			end(endDrain)
			return r.settle(ctx, req, "partroute is shutting down")
		case <-ctx.Done():
			end(endCanceled)
			return r.settle(ctx, req, "the request went away")
		}
	}
}

// settle is the decision of a request that waits no more: that of the state served, as without
// a failover wait. A partition still without a primary gets 503, its message saying why the
// wait ended.
func (r *Resolver) settle(ctx context.Context, req *keying.Request, why string) Decision {
	d := r.resolve(ctx, r.state.Load(), req)
	d.Wait = 0
	if d.Err != nil && d.Err.Code == PartitionUnavailable {
		d.Err = &Error{Code: PartitionUnavailable, Message: d.Err.Message + "; " + why}
	}
	return d
}

// The ways a held request's wait ends, the values of the end label of
// partroute_failover_hold_duration_seconds.
const (
	// endPublished: a published state decided it (routed, most often).
	endPublished = "published"
	endTimeout   = "timeout"
	endDrain     = "drain"
	// endCanceled: Envoy reset the stream (its client went away, or Envoy gave up).
	endCanceled = "canceled"
)

// holdKey names a partition for the per-partition limit: by index, which a new view of the
// same scheme keeps.
type holdKey struct {
	service   string
	partition int
}

// holds counts the requests held, for the limits, under a lock taken only on the hold path.
type holds struct {
	mu        sync.Mutex
	total     int
	perPart   map[holdKey]int
	metrics   *HoldMetrics
	drain     chan struct{}
	drainOnce sync.Once
}

func (h *holds) init() {
	h.perPart = map[holdKey]int{}
	h.drain = make(chan struct{})
	h.metrics = NewHoldMetrics(nil)
}

// acquire counts one more request held for k, or returns the limit it would exceed. It returns
// the metrics to record the hold in.
func (h *holds) acquire(k holdKey, l *config.FailoverLimits) (*HoldMetrics, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.total >= l.MaxHeld:
		return h.metrics, limitMaxHeld
	case h.perPart[k] >= l.MaxHeldPerPartition:
		return h.metrics, limitMaxHeldPerPartition
	}
	h.total++
	h.perPart[k]++
	h.metrics.held.Inc()
	return h.metrics, ""
}

func (h *holds) release(k holdKey) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.total--
	h.perPart[k]--
	if h.perPart[k] == 0 {
		delete(h.perPart, k)
	}
	h.metrics.held.Dec()
}

// Held returns the number of requests held now.
func (r *Resolver) Held() int {
	r.holds.mu.Lock()
	defer r.holds.mu.Unlock()
	return r.holds.total
}

// The limits a held request may exceed, the values of the limit label of
// partroute_failover_refused_requests_total.
const (
	limitMaxHeld             = "limits.failover.maxHeld"
	limitMaxHeldPerPartition = "limits.failover.maxHeldPerPartition"
)

// HoldMetrics are the series of requests held for a failover. Their labels are fixed sets:
// how a wait ended, which limit refused a request; never a service, partition or key.
type HoldMetrics struct {
	held     prometheus.Gauge
	duration *prometheus.HistogramVec
	refused  *prometheus.CounterVec
}

// NewHoldMetrics registers the series of held requests with reg; nil leaves them unregistered.
func NewHoldMetrics(reg prometheus.Registerer) *HoldMetrics {
	m := &HoldMetrics{
		held: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "partroute_failover_held_requests",
			Help: "Requests held now, waiting for their partition's new primary (replicas.failoverWait).",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "partroute_failover_hold_duration_seconds",
			Help:    "How long requests were held for a failover, by how the wait ended: published (a new view decided it), timeout, drain or canceled.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10},
		}, []string{"end"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_failover_refused_requests_total",
			Help: "Requests that would have been held for a failover but were decided at once, by the limit they met.",
		}, []string{"limit"}),
	}
	for _, e := range []string{endPublished, endTimeout, endDrain, endCanceled} {
		m.duration.WithLabelValues(e)
	}
	for _, l := range []string{limitMaxHeld, limitMaxHeldPerPartition} {
		m.refused.WithLabelValues(l)
	}
	if reg != nil {
		reg.MustRegister(m.held, m.duration, m.refused)
	}
	return m
}
