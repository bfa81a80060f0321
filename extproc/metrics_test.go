package extproc

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/resolver"
)

// requestSeries gathers partroute_extproc_requests_total from reg, by "service/code".
func requestSeries(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range families {
		if mf.GetName() != "partroute_extproc_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			out[labels["service"]+"/"+labels["code"]] = m.GetCounter().GetValue()
		}
	}
	return out
}

// wantServiceSeries checks that every code of service has a series, with the value want gives
// it or zero.
func wantServiceSeries(t *testing.T, got map[string]float64, service string, want map[string]float64) {
	t.Helper()
	for _, code := range resolver.Codes() {
		key := service + "/" + code.String()
		v, ok := got[key]
		if !ok {
			t.Errorf("no series partroute_extproc_requests_total{service=%q,code=%q}", service, code)
			continue
		}
		if v != want[code.String()] {
			t.Errorf("partroute_extproc_requests_total{service=%q,code=%q} = %v, want %v", service, code, v, want[code.String()])
		}
	}
}

// The series of unmatched requests exist as soon as the metrics do, and those of every
// configured service once the configuration is given: all at zero, before any request, so
// that a dashboard shows them and an alert on a rate has something to evaluate.
func TestRequestSeriesExistBeforeTheFirstRequest(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	got := requestSeries(t, reg)
	wantServiceSeries(t, got, unmatchedService, nil)
	if v, ok := got[unmatchedService+"/"+passthroughCode]; !ok || v != 0 {
		t.Errorf("partroute_extproc_requests_total{service=\"-\",code=\"passthrough\"} = %v (present %v), want 0", v, ok)
	}
	if len(got) != int(resolver.NumCodes)+1 {
		t.Errorf("%d series before a configuration, want those of unmatched requests (%d): %v", len(got), resolver.NumCodes+1, got)
	}

	cfg := loadExampleConfig(t)
	m.Init(cfg)
	got = requestSeries(t, reg)
	for _, svc := range cfg.Services {
		wantServiceSeries(t, got, svc.Name, nil)
	}
	if want := (len(cfg.Services)+1)*int(resolver.NumCodes) + 1; len(got) != want {
		t.Errorf("%d series, want %d: every code of %d services and of unmatched requests, and passthrough", len(got), want, len(cfg.Services))
	}
}

// A reload that adds a service brings its series at zero; one that removes a service deletes
// its series, and a request of the removed service counted after the reload (it was decided
// before) does not bring them back. The services kept keep their counts.
func TestRequestSeriesFollowTheConfiguration(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.Init(loadExampleConfig(t))
	m.countRequest("users", resolver.OK)
	m.countRequest("settings", resolver.OK)

	reloaded := loadExampleConfig(t, "- name: settings", "- name: flags")
	m.Init(reloaded)
	// A swap of the naming view alone gives the same configuration again: nothing changes.
	m.Init(reloaded)
	got := requestSeries(t, reg)
	wantServiceSeries(t, got, "flags", nil)
	wantServiceSeries(t, got, "users", map[string]float64{"ok": 1})
	for key := range got {
		if strings.HasPrefix(key, "settings/") {
			t.Errorf("series of the removed service settings after the reload: %s", key)
		}
	}
	m.countRequest("settings", resolver.OK)
	if v, ok := requestSeries(t, reg)["settings/ok"]; ok {
		t.Errorf("a late request of the removed service brought its series back, at %v", v)
	}

	// Added back, the service starts again from zero.
	m.Init(loadExampleConfig(t))
	got = requestSeries(t, reg)
	wantServiceSeries(t, got, "settings", nil)
	if _, ok := got["flags/ok"]; ok {
		t.Error("series of the removed service flags after the second reload")
	}
	m.countRequest("settings", resolver.OK)
	if got := requestSeries(t, reg); got["settings/ok"] != 1 {
		t.Errorf("settings/ok = %v after a request, want 1", got["settings/ok"])
	}
}
