package server

import (
	"context"
	"encoding/base64"
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

// The read-your-writes keys file is part of the configuration: a rotation is a reload, a
// broken keys file is rejected (counted and logged once) with the configuration served kept,
// and a keys file that is missing when the configuration names it is picked up once it is
// written, though the configuration's bytes never change.
func TestConfigWatcherFollowsKeysFile(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile(filepath.Join(serveExamples, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	naming, err := filepath.Abs(filepath.Join(serveExamples, "naming.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Replace(string(data), "file: naming.yaml", "file: "+naming, 1) + "\nreadYourWrites: {keysFile: keys.yaml}\n"
	path := filepath.Join(dir, "partroute.yaml")
	// Each file is written whole and renamed into place, as a secret store's agent does.
	write := func(name, s string) {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p+".tmp", []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			t.Fatal(err)
		}
	}
	secret := func(c byte) string { return base64.StdEncoding.EncodeToString([]byte(strings.Repeat(string(c), 32))) }
	keys := func(signing string, ids ...string) string {
		s := "signingKey: " + signing + "\nkeys:\n"
		for _, id := range ids {
			s += "  - {id: " + id + ", secret: " + secret(id[1]) + "}\n"
		}
		return s
	}
	write("keys.yaml", keys("k1", "k1"))
	write("partroute.yaml", text)
	reg := prometheus.NewRegistry()
	logs := &testkit.LogBuffer{}
	w := newConfigWatcher(path, resolver.NewSourceMetrics(reg), slog.New(slog.NewTextHandler(logs, nil)))
	cfg, err := w.load()
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.ReadYourWrites.Keys.SigningKey(); got != "k1" {
		t.Fatalf("signing key %s at start, want k1", got)
	}
	rejected := func() float64 {
		mfs, _ := reg.Gather()
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				if mf.GetName() == "partroute_naming_reloads_total" && m.GetLabel()[0].GetValue() == "error" {
					return m.GetCounter().GetValue()
				}
			}
		}
		return 0
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	applied := make(chan *config.Config, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.watch(ctx, time.Millisecond, nil, func(c *config.Config) error {
			applied <- c
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

	// A rotation: the new key signs, the old one still verifies.
	write("keys.yaml", keys("k2", "k2", "k1"))
	if c := next("a rotation"); c.ReadYourWrites.Keys.SigningKey() != "k2" || strings.Join(c.ReadYourWrites.Keys.KeyIDs(), ",") != "k2,k1" {
		t.Errorf("after the rotation: signing %s, keys %v", c.ReadYourWrites.Keys.SigningKey(), c.ReadYourWrites.Keys.KeyIDs())
	}

	// A broken keys file is rejected once, and the configuration served stays.
	write("keys.yaml", "signingKey: k3\nkeys:\n  - {id: k3, secret: c2hvcnQ=}\n")
	testkit.WaitFor(t, "the broken keys file to be rejected", 10*time.Second, func() bool { return strings.Contains(logs.String(), "below the minimum of 32") })
	write("keys.yaml", keys("k3", "k3", "k2"))
	if c := next("the keys file fixed"); c.ReadYourWrites.Keys.SigningKey() != "k3" {
		t.Errorf("after the fix: signing %s, want k3", c.ReadYourWrites.Keys.SigningKey())
	}
	if got := rejected(); got != 1 {
		t.Errorf("the broken keys file counted %v rejections, want 1", got)
	}
	if n := strings.Count(logs.String(), "below the minimum of 32"); n != 1 {
		t.Errorf("the broken keys file logged %d times, want once", n)
	}

	// A configuration that names a keys file not written yet is rejected; once the file is
	// there it is served, the configuration's bytes unchanged.
	write("partroute.yaml", strings.Replace(text, "keysFile: keys.yaml", "keysFile: new-keys.yaml", 1))
	testkit.WaitFor(t, "the missing keys file to be rejected", 10*time.Second, func() bool { return strings.Contains(logs.String(), "new-keys.yaml: no such file") })
	write("new-keys.yaml", keys("k4", "k4"))
	if c := next("the new keys file written"); c.ReadYourWrites.Keys.SigningKey() != "k4" || c.ReadYourWrites.KeysFile != filepath.Join(dir, "new-keys.yaml") {
		t.Errorf("after the new keys file: %s from %s", c.ReadYourWrites.Keys.SigningKey(), c.ReadYourWrites.KeysFile)
	}

	// The keys file removed: rejected once, however many polls and retries see it missing.
	if err := os.Remove(filepath.Join(dir, "new-keys.yaml")); err != nil {
		t.Fatal(err)
	}
	testkit.WaitFor(t, "the removed keys file to be rejected", 10*time.Second, func() bool {
		return strings.Count(logs.String(), "new-keys.yaml: no such file") == 2
	})
	before := rejected()
	// The retries back off to maxRetryWait; a few polls' worth of them must add nothing.
	deadline := time.Now().Add(200 * time.Millisecond)
	testkit.WaitFor(t, "polls with the keys file missing", time.Second, func() bool { return time.Now().After(deadline) })
	if got := rejected(); got != before {
		t.Errorf("the missing keys file counted %v more rejections over later polls", got-before)
	}
	if n := strings.Count(logs.String(), "new-keys.yaml: no such file"); n != 2 {
		t.Errorf("the missing keys file logged %d times in all, want twice (once per time it went missing)", n)
	}
	cancel()
	<-done
	select {
	case c := <-applied:
		t.Errorf("a configuration was applied with its keys file missing: %v", c.ReadYourWrites)
	default:
	}
}
