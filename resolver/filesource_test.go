package resolver_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
)

// fsExamples is the directory of the example files that the file source tests copy.
const fsExamples = "../envoy-config/examples"

// fsLog collects a source's log; Watch logs from its own goroutine.
type fsLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *fsLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *fsLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// fsFixture is a file source over copies of the example files in a temporary directory.
type fsFixture struct {
	cfgPath, namingPath string
	cfgText, namingText string
	src                 *resolver.FileSource
	reg                 *prometheus.Registry
	log                 *fsLog
}

func newFSFixture(t *testing.T) *fsFixture {
	t.Helper()
	dir := t.TempDir()
	f := &fsFixture{
		cfgPath:    filepath.Join(dir, "partroute.yaml"),
		namingPath: filepath.Join(dir, "naming.yaml"),
		reg:        prometheus.NewRegistry(),
		log:        &fsLog{},
	}
	for _, c := range []struct {
		name string
		dst  *string
	}{{"partroute.yaml", &f.cfgText}, {"naming.yaml", &f.namingText}} {
		data, err := os.ReadFile(filepath.Join(fsExamples, c.name))
		if err != nil {
			t.Fatal(err)
		}
		*c.dst = string(data)
	}
	fsWrite(t, f.cfgPath, f.cfgText)
	fsWrite(t, f.namingPath, f.namingText)
	log := slog.New(slog.NewTextHandler(f.log, nil))
	f.src = resolver.NewFileSource(f.cfgPath, resolver.NewSourceMetrics(f.reg), log)
	return f
}

// load loads the files and fails the test if they are rejected.
func (f *fsFixture) load(t *testing.T) *resolver.View {
	t.Helper()
	st, view, err := f.src.Load()
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if st == nil || st.Config == nil || view == nil || st.Naming != resolver.Naming(view) {
		t.Fatalf("Load returned state %v and view %v", st, view)
	}
	return view
}

// editNaming rewrites naming.yaml with old replaced by new in the example text.
func (f *fsFixture) editNaming(t *testing.T, old, new string) string {
	t.Helper()
	if !strings.Contains(f.namingText, old) {
		t.Fatalf("%q is not in naming.yaml", old)
	}
	text := strings.Replace(f.namingText, old, new, 1)
	fsWrite(t, f.namingPath, text)
	return text
}

// editConfig rewrites partroute.yaml with old replaced by new in the example text.
func (f *fsFixture) editConfig(t *testing.T, old, new string) {
	t.Helper()
	if !strings.Contains(f.cfgText, old) {
		t.Fatalf("%q is not in partroute.yaml", old)
	}
	fsWrite(t, f.cfgPath, strings.Replace(f.cfgText, old, new, 1))
}

// reloads returns partroute_naming_reloads_total{result}.
func (f *fsFixture) reloads(t *testing.T, result string) float64 {
	t.Helper()
	return fsGauge(t, f.reg, "partroute_naming_reloads_total", "result", result)
}

// wantReloads checks partroute_naming_reloads_total: ok and errors as given, and no result
// besides those two.
func (f *fsFixture) wantReloads(t *testing.T, ok, errors float64) {
	t.Helper()
	if got := f.reloads(t, "ok"); got != ok {
		t.Errorf("reloads_total{result=\"ok\"} = %v, want %v", got, ok)
	}
	if got := f.reloads(t, "error"); got != errors {
		t.Errorf("reloads_total{result=\"error\"} = %v, want %v", got, errors)
	}
	if n, err := testutil.GatherAndCount(f.reg, "partroute_naming_reloads_total"); err != nil || n != 2 {
		t.Errorf("partroute_naming_reloads_total has %d series (%v), want 2 (ok and error)", n, err)
	}
}

// rejections counts the rejection lines in the log.
func (f *fsFixture) rejections() int { return strings.Count(f.log.String(), "rejected") }

// versionOf is the version the source must give the naming text under the example
// configuration.
func (f *fsFixture) versionOf(t *testing.T, naming string) string {
	t.Helper()
	st, _, err := resolver.NewFileSource(f.cfgPath, resolver.NewSourceMetrics(nil), slog.New(slog.DiscardHandler)).Load()
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.ParseView([]byte(naming), f.namingPath, st.Config)
	if err != nil {
		t.Fatal(err)
	}
	return view.Version
}

func fsWrite(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fsGauge returns the value of the series of name whose label has value, or -1 when there is
// none.
func fsGauge(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			match := label == ""
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label && lp.GetValue() == value {
					match = true
				}
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// The replica of users-3, which a change can move without changing the file's size.
const (
	fsReplica      = "{address: 127.0.0.1:8088, role: primary}"
	fsMoved        = "{address: 127.0.0.1:8089, role: primary}"
	fsMovedAgain   = "{address: 127.0.0.1:8090, role: primary}"
	fsBrokenRole   = "{address: 127.0.0.1:8088, role: leader}"
	fsUsersCount   = "highKey: 33, count: 4"
	fsUsersCount5  = "highKey: 33, count: 5"
	fsPollAttempts = 4
)

func TestFileSourceLoadExamples(t *testing.T) {
	f := newFSFixture(t)
	before := time.Now()
	view := f.load(t)
	if view.Version == "" || len(view.Services) != 4 {
		t.Fatalf("view %s has %d services, want 4", view.Version, len(view.Services))
	}
	if got := view.Services["users"].Partitions[1].ID; got != "users-1" {
		t.Errorf("users partition 1 is %q, want users-1", got)
	}
	if got := f.reloads(t, "ok"); got != 1 {
		t.Errorf("reloads_total{result=\"ok\"} = %v, want 1", got)
	}
	if got := fsGauge(t, f.reg, "partroute_naming_view_info", "version", view.Version); got != 1 {
		t.Errorf("partroute_naming_view_info{version=%q} = %v, want 1", view.Version, got)
	}
	at := fsGauge(t, f.reg, "partroute_naming_last_reload_timestamp_seconds", "", "")
	if at < float64(before.Unix()) || at > float64(time.Now().Unix()+1) {
		t.Errorf("last reload timestamp %v is not the time of the load (%v)", at, before.Unix())
	}
}

func TestFileSourceLoadRejectsBrokenFiles(t *testing.T) {
	f := newFSFixture(t)
	f.editNaming(t, fsReplica, fsBrokenRole)
	if _, _, err := f.src.Load(); err == nil || !strings.Contains(err.Error(), "leader") {
		t.Fatalf("Load of a broken naming view: %v", err)
	}
	if got := f.reloads(t, "error"); got != 1 {
		t.Errorf("reloads_total{result=\"error\"} = %v, want 1", got)
	}
	if n, _ := testutil.GatherAndCount(f.reg, "partroute_naming_view_info"); n != 0 {
		t.Errorf("a view is reported as served after a failed load: %d series", n)
	}
	// Nothing was served before, so there is no previous state to speak of: the error is the
	// caller's to report, and the source logs nothing.
	if log := f.log.String(); log != "" {
		t.Errorf("a rejected first load was logged:\n%s", log)
	}
}

// A poll that finds nothing new is no reload, and counts as none: the reload counter moves
// only when something was loaded or rejected.
func TestFileSourceReloadUnchanged(t *testing.T) {
	f := newFSFixture(t)
	f.load(t)
	for i := 1; i <= 3; i++ {
		if st, view := f.src.Reload(false); st != nil || view != nil {
			t.Fatalf("poll %d: Reload with nothing changed returned a state", i)
		}
	}
	f.wantReloads(t, 1, 0)
}

func TestFileSourceReloadTouched(t *testing.T) {
	f := newFSFixture(t)
	f.load(t)
	// The same bytes written again and a later modification time: nothing to apply.
	fsWrite(t, f.namingPath, f.namingText)
	later := time.Now().Add(time.Minute)
	for _, p := range []string{f.namingPath, f.cfgPath} {
		if err := os.Chtimes(p, later, later); err != nil {
			t.Fatal(err)
		}
	}
	if st, _ := f.src.Reload(false); st != nil {
		t.Fatal("Reload of touched but identical files returned a state")
	}
	f.wantReloads(t, 1, 0)
	if f.rejections() != 0 {
		t.Errorf("a touch was logged as a rejection:\n%s", f.log)
	}
}

func TestFileSourceReloadChange(t *testing.T) {
	f := newFSFixture(t)
	old := f.load(t)
	text := f.editNaming(t, fsReplica, fsMoved)
	st, view := f.src.Reload(false)
	if st == nil || view == nil {
		t.Fatalf("Reload after a change returned no state; log:\n%s", f.log)
	}
	if view.Version == old.Version || view.Version != f.versionOf(t, text) {
		t.Errorf("version %s after the change, was %s, want %s", view.Version, old.Version, f.versionOf(t, text))
	}
	if got := view.Services["users"].Partitions[3].Replicas[0].Address; got != "127.0.0.1:8089" {
		t.Errorf("users-3 primary at %s after the change, want 127.0.0.1:8089", got)
	}
	if st.Naming != resolver.Naming(view) {
		t.Error("the state does not serve the new view")
	}
	// Two loads, one series: the version label never accumulates.
	if n, err := testutil.GatherAndCount(f.reg, "partroute_naming_view_info"); err != nil || n != 1 {
		t.Errorf("partroute_naming_view_info has %d series (%v), want 1", n, err)
	}
	if got := fsGauge(t, f.reg, "partroute_naming_view_info", "version", view.Version); got != 1 {
		t.Errorf("partroute_naming_view_info{version=%q} = %v, want 1", view.Version, got)
	}
	if got := f.reloads(t, "ok"); got != 2 {
		t.Errorf("reloads_total{result=\"ok\"} = %v, want 2", got)
	}
	if at := fsGauge(t, f.reg, "partroute_naming_last_reload_timestamp_seconds", "", ""); at <= 0 {
		t.Errorf("last reload timestamp %v", at)
	}
	// The next poll finds nothing new.
	if st, _ := f.src.Reload(false); st != nil {
		t.Error("a second Reload applied the same change again")
	}
}

func TestFileSourceSeesQuickRewrites(t *testing.T) {
	f := newFSFixture(t)
	// The file changed just before it was read. A second write of the same size within the
	// file system's timestamp granularity leaves modification time and size as they were; it
	// is simulated here by putting the modification time back.
	now := time.Now()
	if err := os.Chtimes(f.namingPath, now, now); err != nil {
		t.Fatal(err)
	}
	old := f.load(t)
	f.editNaming(t, fsReplica, fsMoved)
	if err := os.Chtimes(f.namingPath, now, now); err != nil {
		t.Fatal(err)
	}
	st, view := f.src.Reload(false)
	if st == nil || view.Version == old.Version {
		t.Fatal("a rewrite within the timestamp granularity of the previous write was missed")
	}
}

func TestFileSourcePollsTrustSettledStamps(t *testing.T) {
	f := newFSFixture(t)
	// Files that have not changed for a while are only stat'ed by polls: a rewrite that
	// keeps both modification time and size is seen on SIGHUP, which always reads.
	past := time.Now().Add(-time.Hour)
	for _, p := range []string{f.namingPath, f.cfgPath} {
		if err := os.Chtimes(p, past, past); err != nil {
			t.Fatal(err)
		}
	}
	old := f.load(t)
	f.editNaming(t, fsReplica, fsMoved)
	if err := os.Chtimes(f.namingPath, past, past); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.src.Reload(false); st != nil {
		t.Fatal("a poll read files whose stamps had not moved")
	}
	st, view := f.src.Reload(true)
	if st == nil || view.Version == old.Version {
		t.Fatal("a forced reload missed the rewrite")
	}
}

func TestFileSourceReloadInvalidKeepsServing(t *testing.T) {
	f := newFSFixture(t)
	old := f.load(t)
	f.editNaming(t, fsReplica, fsBrokenRole)
	for i := 1; i <= fsPollAttempts; i++ {
		if st, view := f.src.Reload(false); st != nil || view != nil {
			t.Fatalf("poll %d: Reload of a broken naming view returned a state", i)
		}
	}
	// One content, one rejection: reading it again at every poll counts nothing more.
	f.wantReloads(t, 1, 1)
	if n := f.rejections(); n != 1 {
		t.Errorf("the broken view was logged %d times over %d polls, want once:\n%s", n, fsPollAttempts, f.log)
	}
	if !strings.Contains(f.log.String(), "level=ERROR") || !strings.Contains(f.log.String(), "leader") {
		t.Errorf("the rejection is not logged as an error naming the problem:\n%s", f.log)
	}
	if !strings.Contains(f.log.String(), "still serving the previous one") {
		t.Errorf("the rejection does not say that the previous state is kept:\n%s", f.log)
	}
	// The view being served is still the old one.
	if got := fsGauge(t, f.reg, "partroute_naming_view_info", "version", old.Version); got != 1 {
		t.Errorf("partroute_naming_view_info{version=%q} = %v after a rejected reload, want 1", old.Version, got)
	}

	// A fix is accepted at the next poll.
	text := f.editNaming(t, fsReplica, fsMovedAgain)
	st, view := f.src.Reload(false)
	if st == nil || view.Version != f.versionOf(t, text) {
		t.Fatalf("the fixed view was not accepted; log:\n%s", f.log)
	}
	// Broken again the same way: that is news again, and logged.
	f.editNaming(t, fsReplica, fsBrokenRole)
	if st, _ := f.src.Reload(false); st != nil {
		t.Fatal("Reload of a broken naming view returned a state")
	}
	if n := f.rejections(); n != 2 {
		t.Errorf("%d rejections logged, want 2 (one per breakage):\n%s", n, f.log)
	}
	f.wantReloads(t, 2, 2)
}

func TestFileSourceReloadMissingFile(t *testing.T) {
	f := newFSFixture(t)
	f.load(t)
	if err := os.Remove(f.namingPath); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.src.Reload(false); st != nil {
		t.Fatal("Reload without a naming file returned a state")
	}
	if got := f.reloads(t, "error"); got != 1 {
		t.Errorf("reloads_total{result=\"error\"} = %v, want 1", got)
	}
	fsWrite(t, f.namingPath, f.namingText)
	if st, _ := f.src.Reload(false); st == nil {
		t.Fatal("the restored naming file was not accepted")
	}
}

func TestFileSourceReloadForced(t *testing.T) {
	f := newFSFixture(t)
	old := f.load(t)
	st, view := f.src.Reload(true)
	if st == nil || view == nil {
		t.Fatal("a forced Reload returned no state")
	}
	if view.Version != old.Version {
		t.Errorf("a forced Reload of the same files changed the version from %s to %s", old.Version, view.Version)
	}
	if got := f.reloads(t, "ok"); got != 2 {
		t.Errorf("reloads_total{result=\"ok\"} = %v, want 2", got)
	}
	// Forcing does not accept what is broken.
	f.editNaming(t, fsReplica, fsBrokenRole)
	if st, _ := f.src.Reload(true); st != nil {
		t.Fatal("a forced Reload accepted a broken naming view")
	}
}

func TestFileSourceConfigChangeCheckedAgainstNaming(t *testing.T) {
	f := newFSFixture(t)
	f.load(t)
	// Five partitions of users no longer fit the four of the naming file.
	f.editConfig(t, fsUsersCount, fsUsersCount5)
	if st, _ := f.src.Reload(false); st != nil {
		t.Fatal("a configuration that the naming view does not fit was accepted")
	}
	if got := f.reloads(t, "error"); got != 1 {
		t.Errorf("reloads_total{result=\"error\"} = %v, want 1", got)
	}
	if !strings.Contains(f.log.String(), "naming.yaml") {
		t.Errorf("the rejection does not point at the naming file:\n%s", f.log)
	}
	// An invalid configuration on its own is rejected too.
	f.editConfig(t, "unmatched: passthrough", "unmatched: sometimes")
	if st, _ := f.src.Reload(false); st != nil {
		t.Fatal("an invalid configuration was accepted")
	}
	// A configuration change that fits is accepted, and the state carries it.
	f.editConfig(t, "unmatched: passthrough", "unmatched: reject")
	st, _ := f.src.Reload(false)
	if st == nil {
		t.Fatalf("a valid configuration change was not accepted; log:\n%s", f.log)
	}
	if st.Config.Unmatched != config.Reject {
		t.Errorf("the accepted state has unmatched %v, want reject", st.Config.Unmatched)
	}
}

// fsApplied is what Watch handed to apply.
type fsApplied struct {
	st   *resolver.State
	view *resolver.View
}

// startWatch runs Watch until the test ends, sending each applied state on the returned
// channel.
func (f *fsFixture) startWatch(t *testing.T, interval time.Duration, hup chan os.Signal) <-chan fsApplied {
	t.Helper()
	return f.startWatchRefusing(t, interval, hup, func(*resolver.State) error { return nil })
}

// startWatchRefusing is startWatch with apply answering as refuse says: a state refuse
// returns an error for is not sent.
func (f *fsFixture) startWatchRefusing(t *testing.T, interval time.Duration, hup chan os.Signal, refuse func(*resolver.State) error) <-chan fsApplied {
	t.Helper()
	applied := make(chan fsApplied, 16)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.src.Watch(ctx, interval, hup, func(st *resolver.State, view *resolver.View) error {
			if err := refuse(st); err != nil {
				return err
			}
			applied <- fsApplied{st, view}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context ended")
		}
	})
	return applied
}

// nextApplied waits for Watch to apply a state.
func nextApplied(t *testing.T, applied <-chan fsApplied, what string) fsApplied {
	t.Helper()
	select {
	case a := <-applied:
		if a.st == nil || a.view == nil || a.st.Naming != resolver.Naming(a.view) {
			t.Fatalf("%s: apply was called with state %v and view %v", what, a.st, a.view)
		}
		return a
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: nothing was applied within 10s", what)
	}
	return fsApplied{}
}

func TestFileSourceWatchAppliesOnHUP(t *testing.T) {
	f := newFSFixture(t)
	old := f.load(t)
	hup := make(chan os.Signal)
	// An hour between polls: only the signal can trigger a reload within the test.
	applied := f.startWatch(t, time.Hour, hup)

	text := f.editNaming(t, fsReplica, fsMoved)
	hup <- syscall.SIGHUP
	a := nextApplied(t, applied, "SIGHUP after a change")
	if a.view.Version == old.Version || a.view.Version != f.versionOf(t, text) {
		t.Errorf("applied version %s, want %s", a.view.Version, f.versionOf(t, text))
	}
	// SIGHUP reloads even when nothing changed.
	hup <- syscall.SIGHUP
	if a := nextApplied(t, applied, "SIGHUP without a change"); a.view.Version != f.versionOf(t, text) {
		t.Errorf("applied version %s, want %s", a.view.Version, f.versionOf(t, text))
	}
	if !strings.Contains(f.log.String(), "SIGHUP") {
		t.Errorf("the SIGHUP reload is not logged:\n%s", f.log)
	}
}

func TestFileSourceWatchPolls(t *testing.T) {
	f := newFSFixture(t)
	f.load(t)
	applied := f.startWatch(t, 5*time.Millisecond, nil)
	// A broken view is never applied: the first state applied is the fixed one that follows.
	f.editNaming(t, fsReplica, fsBrokenRole)
	fsWaitFor(t, "a poll to reject the broken view", func() bool { return f.rejections() > 0 })
	text := f.editNaming(t, fsReplica, fsMoved)
	if a := nextApplied(t, applied, "poll after a change"); a.view.Version != f.versionOf(t, text) {
		t.Errorf("applied version %s, want that of the fix, %s", a.view.Version, f.versionOf(t, text))
	}
}

// A state the caller refuses (it does not fit a naming source that is briefly unreachable,
// say) is offered again at the next polls, without the files changing, until it is taken; it
// is counted as one error, however often it is refused, not as served, and its refusal is
// logged once.
func TestFileSourceWatchOffersARefusedStateAgain(t *testing.T) {
	f := newFSFixture(t)
	old := f.load(t)
	var offers atomic.Int32
	const refusals = 3
	const interval = 5 * time.Millisecond
	// at holds when each offer came; only Watch's goroutine writes it, before nextApplied
	// returns.
	var at [refusals + 1]time.Time
	applied := f.startWatchRefusing(t, interval, nil, func(*resolver.State) error {
		n := offers.Add(1)
		if int(n) <= len(at) {
			at[n-1] = time.Now()
		}
		if n <= refusals {
			return errors.New("the naming source is unreachable")
		}
		return nil
	})
	text := f.editNaming(t, fsReplica, fsMoved)
	a := nextApplied(t, applied, "the state refused 3 times")
	// The waits between offers double from the poll interval: 1, 2 and 4 intervals at least.
	for i := 1; i < len(at); i++ {
		if gap, least := at[i].Sub(at[i-1]), interval<<(i-1); gap < least {
			t.Errorf("offer %d came %v after the previous one, want at least %v", i+1, gap, least)
		}
	}
	if a.view.Version != f.versionOf(t, text) {
		t.Errorf("applied version %s, want %s", a.view.Version, f.versionOf(t, text))
	}
	if got := offers.Load(); got != refusals+1 {
		t.Errorf("apply was offered the state %d times, want %d", got, refusals+1)
	}
	// Load counted one view served, the refused offers of one content one error, and the
	// offer taken one view served.
	f.wantReloads(t, 2, 1)
	if got := fsGauge(t, f.reg, "partroute_naming_view_info", "version", a.view.Version); got != 1 {
		t.Errorf("partroute_naming_view_info{version=%q} = %v, want 1", a.view.Version, got)
	}
	if a.view.Version == old.Version {
		t.Fatal("the edit did not change the version")
	}
	if n := strings.Count(f.log.String(), "the naming source is unreachable"); n != 1 {
		t.Errorf("the refusal is logged %d times, want once:\n%s", n, f.log)
	}
}

// Each content refused counts one error, and one only: a change of the files while they are
// refused is another refusal, their offers again are not.
func TestFileSourceWatchCountsEachRefusedContentOnce(t *testing.T) {
	f := newFSFixture(t)
	f.load(t)
	// offers counts the offers of each naming view version; only Watch's goroutine writes it.
	var mu sync.Mutex
	offers := map[string]int{}
	offered := func(version string) int {
		mu.Lock()
		defer mu.Unlock()
		return offers[version]
	}
	f.startWatchRefusing(t, time.Millisecond, nil, func(st *resolver.State) error {
		mu.Lock()
		offers[st.Naming.(*resolver.View).Version]++
		mu.Unlock()
		return errors.New("the naming source is unreachable")
	})
	first := f.versionOf(t, f.editNaming(t, fsReplica, fsMoved))
	fsWaitFor(t, "the first content to be refused three times", func() bool { return offered(first) >= 3 })
	f.wantReloads(t, 1, 1)
	second := f.versionOf(t, f.editNaming(t, fsReplica, fsMovedAgain))
	fsWaitFor(t, "the second content to be refused three times", func() bool { return offered(second) >= 3 })
	f.wantReloads(t, 1, 2)
}

// fsWaitFor checks cond on a ticker until it holds, failing the test after 10s.
func fsWaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}
