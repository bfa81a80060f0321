package resolver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

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
