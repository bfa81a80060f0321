package e2e

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/server"
	"github.com/partroute/partroute/xds"
)

// partrouteProcess is partroute serve running in-process for a test.
type partrouteProcess struct {
	t      *testing.T
	cancel context.CancelFunc
	served chan error
	log    *testkit.LogBuffer
}

// embeddedOptions are the server's options for a test that runs partroute in-process: no drain
// delay, a short shutdown, connections that live as long as the test.
func embeddedOptions(cfgPath string, poll time.Duration, log *slog.Logger) server.Options {
	o := server.DefaultOptions(cfgPath, log)
	o.Poll, o.DrainDelay, o.ShutdownTimeout, o.MaxConnectionAge = poll, 0, time.Second, time.Hour
	return o
}

// runPartroute runs serve on cfgPath until the test ends (or Stop), and waits until the admin
// listener at admin reports ready. Its log is printed when the test fails.
func runPartroute(t *testing.T, cfgPath, admin string, poll time.Duration) *partrouteProcess {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	p := &partrouteProcess{t: t, cancel: cancel, served: make(chan error, 1), log: &testkit.LogBuffer{}}
	logger := slog.New(slog.NewTextHandler(p.log, &slog.HandlerOptions{Level: slog.LevelDebug}))
	go func() {
		o := embeddedOptions(cfgPath, poll, logger)
		o.ShutdownTimeout = 2 * time.Second
		p.served <- server.Run(ctx, o)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("partroute log (%s):\n%s", filepath.Base(cfgPath), p.log.String())
		}
	})
	client := &http.Client{Timeout: time.Second}
	testkit.WaitFor(t, "partroute to be ready on "+admin, 15*time.Second, func() bool {
		select {
		case err := <-p.served:
			p.served <- err
			t.Fatalf("partroute stopped before it was ready: %v", err)
		default:
		}
		resp, err := client.Get("http://" + admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// Stop ends partroute and checks that it stopped cleanly. Calling it again does nothing.
func (p *partrouteProcess) Stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	if err := <-p.served; err != nil {
		p.t.Errorf("serve: %v", err)
	}
}

// runEnvoy writes the bootstrap of cfg and view with opts into dir, runs a real Envoy on it
// until the test ends, and waits until Envoy is ready with every host of the named clusters
// healthy. A missing Envoy fails the test: end-to-end tests never skip. It returns Envoy's
// log, which a test may judge with checkEnvoyLog.
func runEnvoy(t *testing.T, dir string, cfg *config.Config, view *resolver.View, opts envoyconfig.Options, clusters ...string) *testkit.LogBuffer {
	t.Helper()
	bin, err := envoyconfig.FindEnvoy()
	if err != nil {
		t.Fatalf("end-to-end tests need Envoy: %v", err)
	}
	boot, err := envoyconfig.Bootstrap(cfg, view, opts)
	if err != nil {
		t.Fatal(err)
	}
	y, err := envoyconfig.MarshalYAML(boot)
	if err != nil {
		t.Fatal(err)
	}
	bootPath := filepath.Join(dir, "envoy.yaml")
	write(t, bootPath, string(y))
	envoyLog := &testkit.LogBuffer{}
	envoy, err := envoyconfig.StartEnvoy(bin, bootPath, opts.AdminAddress, envoyLog)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = envoy.Stop(5 * time.Second)
		if t.Failed() {
			t.Logf("envoy log:\n%s", envoyLog.String())
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := envoy.WaitReady(ctx, clusters...); err != nil {
		t.Fatal(err)
	}
	return envoyLog
}

// allowedEnvoyLog lists the warning, error and critical lines Envoy may log while it runs in
// an end-to-end test, each with why it is expected (testkit.UnexpectedEnvoyLogLines).
var allowedEnvoyLog = []testkit.EnvoyLogAllowance{
	{Line: regexp.MustCompile(`^\[main\] There is no configured limit to the number of allowed active downstream connections\. `),
		Why: "Envoy says this of every bootstrap without an overload manager, which the generator leaves to the operator (docs/envoy.md)"},
}

// checkEnvoyLog fails the test on any line of Envoy's log so far at warning level or above
// that allowedEnvoyLog does not allow: Envoy reports a configuration it accepts but does not
// apply as written only there.
func checkEnvoyLog(t *testing.T, log *testkit.LogBuffer) {
	t.Helper()
	if bad := testkit.UnexpectedEnvoyLogLines(log.String(), allowedEnvoyLog); len(bad) > 0 {
		t.Errorf("Envoy logged %d line(s) that allowedEnvoyLog does not allow:\n  %s", len(bad), strings.Join(bad, "\n  "))
	}
}

// debugXDS reads partroute's /debug/xds at admin: the versions it serves and those each
// Envoy node acknowledged. ok is false when it does not answer.
func debugXDS(client *http.Client, admin string) (serving xds.Versions, acked map[string]xds.Versions, ok bool) {
	resp, err := client.Get("http://" + admin + "/debug/xds")
	if err != nil {
		return xds.Versions{}, nil, false
	}
	defer resp.Body.Close()
	var st struct {
		Serving      xds.Versions
		Acknowledged map[string]xds.Versions
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return xds.Versions{}, nil, false
	}
	return st.Serving, st.Acknowledged, true
}
