package extproc

import (
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/readyourwrites"
	"github.com/partroute/partroute/resolver"
)

// Metrics are the handler's Prometheus series. Label values are bounded: service names come
// from the configuration and codes from the error table, never from requests.
type Metrics struct {
	requests      *prometheus.CounterVec
	passthrough   prometheus.Counter
	decision      prometheus.Histogram
	activeStreams prometheus.Gauge
	streams       prometheus.Counter

	// byService caches the request counters of each service and code, so that counting a
	// request is a map read and an atomic add rather than a label lookup. It is copied on
	// write, which happens at each Init and once per service name Init was not given.
	byService atomic.Pointer[map[string]*[resolver.NumCodes]prometheus.Counter]
	// mu serialises the writers of byService. cfg is the configuration Init was last given,
	// and retired holds the services whose series that Init deleted: their counters stay in
	// byService, detached from the registry, until Init is given another configuration.
	mu      sync.Mutex
	cfg     *config.Config
	retired map[string]bool

	// tokens counts read-your-writes tokens; byToken caches its counters of each service
	// with the window on, as byService does, from the first Init on.
	tokens  *prometheus.CounterVec
	byToken atomic.Pointer[map[string]*[readyourwrites.NumOutcomes]prometheus.Counter]
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
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_readyourwrites_tokens_total",
			Help: "Read-your-writes tokens, by service and outcome: minted for a write, or what a read's token was found to be (accepted, expired, foreign, forged, unknown_key, malformed).",
		}, []string{"service", "outcome"}),
	}
	// The series of unmatched requests exist from the start: they need no configuration.
	m.passthrough = m.requests.WithLabelValues(unmatchedService, passthroughCode)
	initial := map[string]*[resolver.NumCodes]prometheus.Counter{unmatchedService: m.newCounters(unmatchedService)}
	m.byService.Store(&initial)
	if reg != nil {
		reg.MustRegister(m.requests, m.decision, m.activeStreams, m.streams, m.tokens)
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

func (m *Metrics) countPassthrough() { m.passthrough.Inc() }

// Init creates the request series of every service cfg configures, one per code of the error
// table, at zero, so that dashboards and alerts see them before the first request does; and it
// deletes the series of the services a previous Init was given that cfg no longer has, so that
// a removed service leaves no series behind. Whoever swaps a configuration in calls it with
// each one, after the swap: the work is done then, not per request. Given the configuration
// it was given last (a swap that changed only the naming view), Init does nothing.
//
// A request decided with the previous configuration just before the swap may be counted after
// it under a removed service. It is counted by the removed service's counters, kept until the
// next configuration but no longer exported, so that it does not bring the deleted series back.
func (m *Metrics) Init(cfg *config.Config) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cfg == m.cfg {
		return
	}
	m.cfg = cfg
	old := *m.byService.Load()
	next := make(map[string]*[resolver.NumCodes]prometheus.Counter, len(cfg.Services)+1)
	next[unmatchedService] = old[unmatchedService]
	for _, svc := range cfg.Services {
		if c, ok := old[svc.Name]; ok && !m.retired[svc.Name] {
			next[svc.Name] = c
		} else {
			next[svc.Name] = m.newCounters(svc.Name)
		}
	}
	retired := map[string]bool{}
	for name, c := range old {
		if _, kept := next[name]; kept || m.retired[name] {
			continue
		}
		for _, code := range resolver.Codes() {
			m.requests.DeleteLabelValues(name, code.String())
		}
		next[name], retired[name] = c, true
	}
	m.retired = retired
	m.byService.Store(&next)
	m.initTokens(cfg)
}

// initTokens creates the token series of every service of cfg with read-your-writes on, at
// zero, and deletes those of the services that no longer have it. m.mu is held.
func (m *Metrics) initTokens(cfg *config.Config) {
	var old map[string]*[readyourwrites.NumOutcomes]prometheus.Counter
	if p := m.byToken.Load(); p != nil {
		old = *p
	}
	next := map[string]*[readyourwrites.NumOutcomes]prometheus.Counter{}
	for _, svc := range cfg.Services {
		if svc.ReadYourWrites <= 0 {
			continue
		}
		if c, ok := old[svc.Name]; ok {
			next[svc.Name] = c
			continue
		}
		c := new([readyourwrites.NumOutcomes]prometheus.Counter)
		for _, o := range readyourwrites.Outcomes() {
			c[o] = m.tokens.WithLabelValues(svc.Name, o.String())
		}
		next[svc.Name] = c
	}
	for name := range old {
		if _, kept := next[name]; !kept {
			m.tokens.DeletePartialMatch(prometheus.Labels{"service": name})
		}
	}
	m.byToken.Store(&next)
}

// countToken counts a read-your-writes token of service. Before the first Init it counts by
// label; after it, only for the services the configuration served has with the window on, so
// that a request decided just before a reload does not bring a deleted series back.
func (m *Metrics) countToken(service string, o readyourwrites.Outcome) {
	p := m.byToken.Load()
	if p == nil {
		m.tokens.WithLabelValues(service, o.String()).Inc()
		return
	}
	if c, ok := (*p)[service]; ok && o < readyourwrites.NumOutcomes && c[o] != nil {
		c[o].Inc()
	}
}

// addService creates the counters of a service Init was not given: a handler whose metrics are
// never given a configuration still counts every request.
func (m *Metrics) addService(service string) *[resolver.NumCodes]prometheus.Counter {
	m.mu.Lock()
	defer m.mu.Unlock()
	old := *m.byService.Load()
	if c, ok := old[service]; ok {
		return c
	}
	counters := m.newCounters(service)
	next := make(map[string]*[resolver.NumCodes]prometheus.Counter, len(old)+1)
	for k, v := range old {
		next[k] = v
	}
	next[service] = counters
	m.byService.Store(&next)
	return counters
}

// newCounters creates the series of service, one per code, at zero.
func (m *Metrics) newCounters(service string) *[resolver.NumCodes]prometheus.Counter {
	counters := new([resolver.NumCodes]prometheus.Counter)
	for _, code := range resolver.Codes() {
		counters[code] = m.requests.WithLabelValues(service, code.String())
	}
	return counters
}
