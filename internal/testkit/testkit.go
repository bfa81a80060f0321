package testkit

import (
	"bytes"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// WaitFor checks cond every few milliseconds until it holds, and fails the test naming what
// it waited for when timeout passes first. Tests wait on conditions with it, never on sleeps.
func WaitFor(tb testing.TB, what string, timeout time.Duration, cond func() bool) {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			tb.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// LogBuffer collects a log written from several goroutines, as a server's is.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Clock is a clock that moves only when told to; code under test takes its Now.
type Clock struct {
	mu sync.Mutex
	t  time.Time
}

// NewClock returns a clock at a fixed instant, so that tests see the same times every run.
func NewClock() *Clock { return &Clock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

// Now is the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// FreePorts returns n loopback addresses ("127.0.0.1:port") that were free a moment ago, all
// different. The ports are released before FreePorts returns, so another process could take
// one in between: use them at once, and prefer listening on port 0 where the code allows it.
func FreePorts(tb testing.TB, n int) []string {
	tb.Helper()
	out := make([]string, 0, n)
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("free port: %v", err)
		}
		held = append(held, l)
		out = append(out, l.Addr().String())
	}
	return out
}

// RepoRoot is the directory of partroute's go.mod, found from the test's working directory.
func RepoRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the test's directory")
		}
		dir = parent
	}
}

// Example is the path of one of the shipped example files (partroute.yaml, naming.yaml).
func Example(tb testing.TB, name string) string {
	tb.Helper()
	return filepath.Join(RepoRoot(tb), "envoy-config", "examples", name)
}

// CopyExamples copies the example partroute.yaml and naming.yaml into a new temporary
// directory, with partroute's listeners on ports the kernel picks (a server logs which), and
// returns the directory.
func CopyExamples(tb testing.TB) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, name := range []string{"partroute.yaml", "naming.yaml"} {
		data, err := os.ReadFile(Example(tb, name))
		if err != nil {
			tb.Fatal(err)
		}
		text := strings.NewReplacer("127.0.0.1:50051", "127.0.0.1:0", "127.0.0.1:9901", "127.0.0.1:0").Replace(string(data))
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o600); err != nil { //nolint:gosec // the test's own temporary directory
			tb.Fatal(err)
		}
	}
	return dir
}
