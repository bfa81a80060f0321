package certreload

import "github.com/prometheus/client_golang/prometheus"

// The results of partroute_tls_reloads_total.
const (
	resultOK    = "ok"
	resultError = "error"
)

// The reasons of partroute_tls_handshake_failures_total.
const (
	// ReasonNoClientCertificate: the listener requires a client certificate and got none.
	ReasonNoClientCertificate = "no_client_certificate"
	// ReasonUnknownAuthority: the client certificate does not chain to the client CA.
	ReasonUnknownAuthority = "unknown_authority"
	// ReasonBadCertificate: the client certificate chains to the client CA but does not
	// verify (expired, not yet valid, not for client authentication).
	ReasonBadCertificate = "bad_certificate"
	// ReasonNotTLS: the client does not speak TLS, such as a plaintext gRPC client.
	ReasonNotTLS = "not_tls"
	// ReasonOther: anything else, such as a client that hung up mid-handshake or refused
	// the listener's certificate.
	ReasonOther = "other"
)

// reasons lists every reason, in the order the documentation gives them.
var reasons = []string{ReasonNoClientCertificate, ReasonUnknownAuthority, ReasonBadCertificate, ReasonNotTLS, ReasonOther}

// Metrics are the TLS series of every listener, registered once per server.
type Metrics struct {
	reloads  *prometheus.CounterVec
	failures *prometheus.CounterVec
}

// NewMetrics registers the TLS series with reg; a nil reg registers nothing.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		reloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_tls_reloads_total",
			Help: "Changes of a listener's TLS files: ok, served to new handshakes; error, rejected (once per distinct content), the previous certificate kept.",
		}, []string{"listener", "result"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "partroute_tls_handshake_failures_total",
			Help: "Failed TLS handshakes on a listener, by reason: no_client_certificate, unknown_authority, bad_certificate, not_tls, other.",
		}, []string{"listener", "reason"}),
	}
	if reg != nil {
		reg.MustRegister(m.reloads, m.failures)
	}
	return m
}

// init gives a listener its series at zero, so that a dashboard and an alert on a rate have
// them from the start.
func (m *Metrics) init(listener string) {
	m.reloads.WithLabelValues(listener, resultOK)
	m.reloads.WithLabelValues(listener, resultError)
	for _, r := range reasons {
		m.failures.WithLabelValues(listener, r)
	}
}
