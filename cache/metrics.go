package cache

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the counters the cache updates. The labelled children are resolved once here, so
// that counting a hit is one atomic add and no allocation. Without a registerer the collectors
// are still built but never registered, which keeps the hot path free of nil checks.
type metrics struct {
	hit, miss, stale, lookupError  prometheus.Counter
	fillOK, fillError, fillTimeout prometheus.Counter
	evictions                      prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, entries func() float64) (metrics, error) {
	lookups := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "partroute_cache_lookups_total",
		Help: "Cache look-ups by how they were answered: hit, miss (filled), stale (fill failed, stale entry served) or error.",
	}, []string{"result"})
	fills := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "partroute_cache_fills_total",
		Help: "Fills from the naming source by outcome: ok, error or timeout.",
	}, []string{"result"})
	evictions := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "partroute_cache_evictions_total",
		Help: "Entries evicted to keep the cache within its size.",
	})
	gauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "partroute_cache_entries",
		Help: "Entries held by the cache, fresh or not.",
	}, entries)

	m := metrics{
		hit:         lookups.WithLabelValues(Hit.String()),
		miss:        lookups.WithLabelValues(Miss.String()),
		stale:       lookups.WithLabelValues(Stale.String()),
		lookupError: lookups.WithLabelValues(Error.String()),
		fillOK:      fills.WithLabelValues("ok"),
		fillError:   fills.WithLabelValues("error"),
		fillTimeout: fills.WithLabelValues("timeout"),
		evictions:   evictions,
	}
	if reg == nil {
		return m, nil
	}
	collectors := []prometheus.Collector{lookups, fills, evictions, gauge}
	for i, col := range collectors {
		if err := reg.Register(col); err != nil {
			// Leave the registry as it was, so that a failed New has no side effects.
			for _, done := range collectors[:i] {
				reg.Unregister(done)
			}
			return metrics{}, fmt.Errorf("cache: registering metrics: %w", err)
		}
	}
	return m, nil
}
