package server

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
)

// TestConfigWatcher follows partroute.yaml through the cases a reload meets: a change, broken
// content (counted and logged once over many polls), a refusal (offered again after a wait,
// counted once), and SIGHUP (read again although nothing changed).
func TestConfigWatcher(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(serveExamples, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	naming, err := filepath.Abs(filepath.Join(serveExamples, "naming.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "file: naming.yaml", "file: "+naming, 1)
	path := filepath.Join(dir, "partroute.yaml")
	// Each version is written whole and renamed into place, as editors and configuration
	// managers do: a poll must never see half a file.
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(text)
	reg := prometheus.NewRegistry()
	metrics := resolver.NewSourceMetrics(reg)
	logs := &testkit.LogBuffer{}
	w := newConfigWatcher(path, metrics, slog.New(slog.NewTextHandler(logs, nil)))
	if _, err := w.load(); err != nil {
		t.Fatal(err)
	}
	errorsCounted := func() float64 {
		n, err := testutil.GatherAndCount(reg, "partroute_naming_reloads_total")
		if err != nil || n == 0 {
			t.Fatalf("no reload series: %v", err)
		}
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			if mf.GetName() != "partroute_naming_reloads_total" {
				continue
			}
			for _, m := range mf.GetMetric() {
				if m.GetLabel()[0].GetValue() == "error" {
					return m.GetCounter().GetValue()
				}
			}
		}
		return -1
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{})
	applied := make(chan *config.Config, 16)
	var refuse sync.Mutex
	refusing := false
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.watch(ctx, time.Millisecond, reload, func(c *config.Config) error {
			refuse.Lock()
			defer refuse.Unlock()
			applied <- c
			if refusing {
				return errors.New("refused for the test")
			}
			return nil
		})
	}()
	next := func(what string) *config.Config {
		t.Helper()
		select {
		case c := <-applied:
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("no configuration applied: %s", what)
		}
		return nil
	}

	write(strings.Replace(text, "unmatched: passthrough", "unmatched: reject", 1))
	if c := next("a change"); c.Unmatched != config.Reject {
		t.Errorf("applied %v, want the changed configuration", c.Unmatched)
	}

	write(strings.Replace(text, "count: 4", "count: 40", 1))
	testkit.WaitFor(t, "the broken configuration to be logged", 10*time.Second, func() bool { return strings.Contains(logs.String(), "configuration rejected") })
	if got := errorsCounted(); got != 1 {
		t.Errorf("broken configuration counted %v errors, want 1", got)
	}
	if n := strings.Count(logs.String(), "configuration rejected"); n != 1 {
		t.Errorf("broken configuration logged %d times, want once", n)
	}

	refuse.Lock()
	refusing = true
	refuse.Unlock()
	write(text)
	next("a configuration then refused")
	next("the refused configuration offered again")
	if got := errorsCounted(); got != 2 {
		t.Errorf("one refused configuration offered twice counted %v errors in all, want 2", got)
	}
	refuse.Lock()
	refusing = false
	refuse.Unlock()
	next("the refused configuration accepted at last")

	reload <- struct{}{}
	next("SIGHUP")
	cancel()
	<-done
}

// Content that failed validation is parsed once, however often it is read again: not at each
// retry of a configuration refused before it, nor at each SIGHUP. A file whose YAML aliases
// take a second to expand would otherwise cost a core at the default poll.
func TestConfigWatcherParsesInvalidContentOnce(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(serveExamples, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	naming, err := filepath.Abs(filepath.Join(serveExamples, "naming.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "file: naming.yaml", "file: "+naming, 1)
	path := filepath.Join(dir, "partroute.yaml")
	write := func(s string) {
		t.Helper()
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Fatal(err)
		}
	}
	write(text)
	logs := &testkit.LogBuffer{}
	w := newConfigWatcher(path, resolver.NewSourceMetrics(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(logs, nil)))
	if _, err := w.load(); err != nil {
		t.Fatal(err)
	}
	broken := strings.Replace(text, "count: 4", "count: 40", 1)
	var mu sync.Mutex
	parses := 0
	w.parse = func(data []byte, path string) (*config.Config, error) {
		if string(data) == broken {
			mu.Lock()
			parses++
			mu.Unlock()
		}
		return config.Parse(data, path)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	reload := make(chan struct{})
	applied := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Every configuration is refused, so that a retry is always due.
		w.watch(ctx, time.Millisecond, reload, func(*config.Config) error {
			applied <- struct{}{}
			return errors.New("refused for the test")
		})
	}()
	write(strings.Replace(text, "unmatched: passthrough", "unmatched: reject", 1))
	<-applied
	write(broken)
	testkit.WaitFor(t, "the broken configuration to be parsed", 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return parses > 0
	})
	// Each SIGHUP is taken when the watcher has finished with the previous one, so after the
	// last send all but it have been handled; polls with a retry due run in between.
	for range 20 {
		reload <- struct{}{}
	}
	cancel()
	<-done
	if parses != 1 {
		t.Errorf("invalid content parsed %d times over 20 SIGHUPs and the retries between them, want once", parses)
	}
}
