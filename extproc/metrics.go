package extproc

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/resolver"
)

// Metrics are the handler's Prometheus series. Label values are bounded: service names come
// from the configuration and codes from the error table, never from requests.
type Metrics struct {
	requests      *prometheus.CounterVec
	decision      prometheus.Histogram
	activeStreams prometheus.Gauge
	streams       prometheus.Counter

	// byService caches the request counters of each service and code, so that counting a
	// request is a map read and an atomic add rather than a label lookup. It is copied on
	// write, which happens once per service name.
	byService atomic.Pointer[map[string]*[resolver.NumCodes]prometheus.Counter]
	mu        sync.Mutex
}

// unmatchedService is the service label of requests no service matched.
const unmatchedService = "-"

// passthroughCode is the code label of unmatched requests that pass through.
const passthroughCode = "passthrough"

// NewMetrics registers the handler's series with reg; a nil reg keeps them unregistered.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_extproc_requests_total",
			Help: "Requests decided, by service (\"-\" when none matched) and outcome code.",
		}, []string{"service", "code"}),
		decision: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "partroute_extproc_decision_duration_seconds",
			Help:    "Time from receiving a request message to having its response ready.",
			Buckets: []float64{1e-6, 2.5e-6, 5e-6, 10e-6, 25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 10e-3, 50e-3, 100e-3, 200e-3},
		}),
		activeStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "partroute_extproc_active_streams",
			Help: "ext_proc streams open now (one per HTTP request in flight).",
		}),
		streams: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "partroute_extproc_streams_total",
			Help: "ext_proc streams opened.",
		}),
	}
	empty := map[string]*[resolver.NumCodes]prometheus.Counter{}
	m.byService.Store(&empty)
	if reg != nil {
		reg.MustRegister(m.requests, m.decision, m.activeStreams, m.streams)
	}
	return m
}

func (m *Metrics) countRequest(service string, code resolver.Code) {
	byService := *m.byService.Load()
	counters, ok := byService[service]
	if !ok {
		counters = m.addService(service)
	}
	if int(code) < len(counters) {
		counters[code].Inc()
	}
}

func (m *Metrics) countPassthrough() {
	m.requests.WithLabelValues(unmatchedService, passthroughCode).Inc()
}

func (m *Metrics) addService(service string) *[resolver.NumCodes]prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.byService.Load()
	if c, ok := old[service]; ok {
		return c
	}
	counters := new([resolver.NumCodes]prometheus.Counter)
	for _, code := range resolver.Codes() {
		counters[code] = m.requests.WithLabelValues(service, code.String())
	}
	next := make(map[string]*[resolver.NumCodes]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[service] = counters
	m.byService.Store(&next)
	return counters
}
