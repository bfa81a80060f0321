package resolver

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
)

// fnFixture is a file naming source over a copy of the example naming file.
type fnFixture struct {
	cfg        *config.Config
	namingText string
	src        *FileNaming
	reg        *prometheus.Registry
	log        *testkit.LogBuffer
}

func newFNFixture(t *testing.T) *fnFixture {
	t.Helper()
	dir := t.TempDir()
	for _, name := range []string{"partroute.yaml", "naming.yaml"} {
		data, err := os.ReadFile(filepath.Join("..", "envoy-config", "examples", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := config.Load(filepath.Join(dir, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(cfg.Naming.File)
	if err != nil {
		t.Fatal(err)
	}
	f := &fnFixture{cfg: cfg, namingText: string(data), reg: prometheus.NewRegistry(), log: &testkit.LogBuffer{}}
	f.src = NewFileNaming(time.Millisecond, NewSourceMetrics(f.reg), slog.New(slog.NewTextHandler(f.log, nil)))
	return f
}

func (f *fnFixture) write(t *testing.T, text string) {
	t.Helper()
	if err := os.WriteFile(f.cfg.Naming.File, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (f *fnFixture) errors() float64 {
	return testutil.ToFloat64(f.src.metrics.reloads.WithLabelValues("error"))
}

const (
	fnReplica    = "- {address: 127.0.0.1:8084, role: primary}"
	fnBrokenRole = "- {address: 127.0.0.1:8084, role: leader}"
	fnMoved      = "- {address: 127.0.0.1:8184, role: primary}"
)

func TestFileNamingInitial(t *testing.T) {
	f := newFNFixture(t)
	snap, err := f.src.Initial(context.Background(), f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if snap.View == nil || snap.Naming != Naming(snap.View) || snap.Upstream != nil || len(snap.View.Services) != len(f.cfg.Services) {
		t.Fatalf("snapshot %+v", snap)
	}
	f.write(t, strings.Replace(f.namingText, fnReplica, fnBrokenRole, 1))
	if _, err := f.src.ForConfig(context.Background(), f.cfg); err == nil || !strings.Contains(err.Error(), "leader") {
		t.Errorf("ForConfig of a broken naming file: %v, want an error naming the bad role", err)
	}
	if err := os.Remove(f.cfg.Naming.File); err != nil {
		t.Fatal(err)
	}
	if _, err := f.src.ForConfig(context.Background(), f.cfg); err == nil || !strings.Contains(err.Error(), "naming.file") {
		t.Errorf("ForConfig without a naming file: %v, want an error naming naming.file", err)
	}
}

// TestFileNamingPoll covers what a poll finds: nothing new, a change, broken content (counted
// and logged once, never parsed again while its bytes stay), and the fix.
func TestFileNamingPoll(t *testing.T) {
	f := newFNFixture(t)
	first, err := f.src.Initial(context.Background(), f.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if snap, err := f.src.read(f.cfg, false); err != nil || snap.View != nil {
		t.Fatalf("a poll of an unchanged file gave %+v, %v", snap, err)
	}
	moved := strings.Replace(f.namingText, fnReplica, fnMoved, 1)
	f.write(t, moved)
	snap, err := f.src.read(f.cfg, false)
	if err != nil || snap.View == nil || snap.View.Version == first.View.Version {
		t.Fatalf("a poll of a changed file gave %+v, %v", snap, err)
	}
	f.write(t, strings.Replace(f.namingText, fnReplica, fnBrokenRole, 1))
	for range 5 {
		if snap, _ := f.src.read(f.cfg, false); snap.View != nil {
			t.Fatal("broken content gave a view")
		}
	}
	if got := f.errors(); got != 1 {
		t.Errorf("broken content polled 5 times counted %v errors, want 1", got)
	}
	if n := strings.Count(f.log.String(), "naming view rejected"); n != 1 {
		t.Errorf("broken content logged %d times, want once:\n%s", n, f.log)
	}
	f.write(t, moved)
	if snap, err := f.src.read(f.cfg, false); err != nil || snap.View == nil {
		t.Fatalf("the fix was not taken: %+v, %v", snap, err)
	}
}

// TestFileNamingSkipsRejectedBytes shows that bytes already rejected are not parsed again at
// every poll: a file that stays broken costs a read and a hash, not a parse.
func TestFileNamingSkipsRejectedBytes(t *testing.T) {
	f := newFNFixture(t)
	if _, err := f.src.Initial(context.Background(), f.cfg); err != nil {
		t.Fatal(err)
	}
	f.write(t, strings.Replace(f.namingText, fnReplica, fnBrokenRole, 1))
	rejection, err := f.src.read(f.cfg, false)
	if err == nil {
		t.Fatalf("broken content accepted: %+v", rejection)
	}
	// The same bytes written again move the file's stamp; were they parsed again, the error
	// would come back.
	f.write(t, strings.Replace(f.namingText, fnReplica, fnBrokenRole, 1))
	if snap, err := f.src.read(f.cfg, false); err != nil || snap.View != nil {
		t.Errorf("rejected bytes were parsed again: %+v, %v", snap, err)
	}
	// A forced read against the same configuration (the retry of a refused view, a reload
	// that kept the configuration) gets the rejection it had, not a new one: were the bytes
	// parsed again at every such read, a file that takes a second to reject would cost a core.
	for range 3 {
		// errors.Is is identity here: neither error wraps the other.
		if _, again := f.src.read(f.cfg, true); !errors.Is(again, err) {
			t.Fatalf("a forced read of rejected bytes gave %v (a new parse?), want the first rejection", again)
		}
	}
	if got := f.errors(); got != 1 {
		t.Errorf("one broken content read 5 times counted %v errors, want 1", got)
	}
	// A configuration reload parses the same bytes again: they may fit the new configuration.
	reloaded, lerr := config.Load(f.cfg.Path)
	if lerr != nil {
		t.Fatal(lerr)
	}
	if _, again := f.src.ForConfig(context.Background(), reloaded); again == nil || errors.Is(again, err) || again.Error() != err.Error() {
		t.Errorf("ForConfig with a reloaded configuration gave %v, want the file parsed again, with the same complaint", again)
	}
}

// TestFileNamingWatchOffersARefusedViewAgain: a view the server refuses is offered again after
// a wait, without the file changing.
func TestFileNamingWatchOffersARefusedViewAgain(t *testing.T) {
	f := newFNFixture(t)
	if _, err := f.src.Initial(context.Background(), f.cfg); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	offers := make(chan Snapshot, 10)
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.src.Watch(ctx, func() *config.Config { return f.cfg }, func(s Snapshot) error {
			offers <- s
			if len(offers) < 2 {
				return errRefusedForTest
			}
			return nil
		})
	}()
	f.write(t, strings.Replace(f.namingText, fnReplica, fnMoved, 1))
	timeout := time.After(10 * time.Second)
	for got := 0; got < 2; got++ {
		select {
		case s := <-offers:
			if s.View == nil {
				t.Fatal("offered a snapshot without a view")
			}
		case <-timeout:
			t.Fatalf("the refused view was offered %d times, want it offered again", got)
		}
	}
	cancel()
	<-done
}

var errRefusedForTest = &Error{Code: NamingUnavailable, Message: "refused for the test"}
