package main

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/server"
)

// requestSeriesLine is the exposition line of a request counter of service and code at zero.
func requestSeriesLine(service string, code string) string {
	return `partroute_extproc_requests_total{code="` + code + `",service="` + service + `"} 0`
}

// A server just started exposes the request series of every configured service at zero,
// before any request; a reload that adds a service brings its series, and one that removes a
// service takes its series away.
func TestServeMetricsRequestSeriesBeforeTheFirstRequest(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"partroute.yaml", "naming.yaml"} {
		data, err := os.ReadFile(filepath.Join(serveExamples, name))
		if err != nil {
			t.Fatal(err)
		}
		text := strings.NewReplacer("127.0.0.1:50051", "127.0.0.1:0", "127.0.0.1:9901", "127.0.0.1:0").Replace(string(data))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	logs := &serveLog{}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	hup := make(chan struct{}, 1)
	go func() {
		o := embeddedOptions(filepath.Join(dir, "partroute.yaml"), time.Hour, slog.New(slog.NewTextHandler(logs, nil)))
		o.Reload = hup
		served <- server.Run(ctx, o)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
		if t.Failed() {
			t.Logf("partroute log:\n%s", logs)
		}
	})
	var adminAddr string
	serveWaitFor(t, "serve to report its addresses", 10*time.Second, func() bool {
		select {
		case err := <-served:
			t.Fatalf("serve returned %v before serving; log:\n%s", err, logs)
		default:
		}
		m := serveAddrs.FindStringSubmatch(logs.String())
		if m != nil {
			adminAddr = m[2]
		}
		return m != nil
	})
	httpc := &http.Client{Timeout: 5 * time.Second}
	metrics := func() string {
		t.Helper()
		resp, err := httpc.Get("http://" + adminAddr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return string(body)
	}

	body := metrics()
	for _, service := range []string{"users", "sessions", "regions", "settings", "-"} {
		for _, code := range resolver.Codes() {
			if line := requestSeriesLine(service, code.String()); !strings.Contains(body, "\n"+line+"\n") {
				t.Errorf("/metrics lacks %s before any request", line)
			}
		}
	}
	if line := requestSeriesLine("-", "passthrough"); !strings.Contains(body, "\n"+line+"\n") {
		t.Errorf("/metrics lacks %s before any request", line)
	}

	// settings becomes flags in both files, swapped in together on SIGHUP.
	for name, edit := range map[string][2]string{"partroute.yaml": {"- name: settings", "- name: flags"}, "naming.yaml": {"\n  settings:\n", "\n  flags:\n"}} {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(data), edit[0]) {
			t.Fatalf("%q is not in %s", edit[0], name)
		}
		if err := os.WriteFile(path, []byte(strings.Replace(string(data), edit[0], edit[1], 1)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hup <- struct{}{}
	added := requestSeriesLine("flags", resolver.OK.String())
	serveWaitFor(t, "the series of the added service", 10*time.Second, func() bool { return strings.Contains(metrics(), "\n"+added+"\n") })
	body = metrics()
	for _, code := range resolver.Codes() {
		if line := requestSeriesLine("flags", code.String()); !strings.Contains(body, "\n"+line+"\n") {
			t.Errorf("/metrics lacks %s after the reload that added flags", line)
		}
	}
	if strings.Contains(body, `service="settings"`) {
		t.Errorf("/metrics still has series of settings after the reload that removed it:\n%s", body)
	}
}
