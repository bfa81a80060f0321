package etcdtest

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/partroute/partroute/resolver/etcdsource"
)

// This file runs a real etcd for tests: this package's and those of other packages (the CLI's
// naming and failover tests), which is why it is not a _test.go file.

// etcdBinary is where Debian's etcd-server package installs etcd; PATH is searched first.
const etcdBinary = "/usr/bin/etcd"

// TestServer is an etcd process on loopback with its own data directory, for tests. It can be
// stopped and started again on the same ports and data, as an outage and a recovery.
type TestServer struct {
	// Endpoint is the client URL, such as http://127.0.0.1:40123.
	Endpoint string

	t       testing.TB
	binary  string
	dataDir string
	args    []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	log  *lockedBuffer
}

// StartEtcd starts an etcd for the test and returns its client endpoint. The server stops when
// the test ends.
func StartEtcd(t testing.TB) string {
	t.Helper()
	return StartTestServer(t).Endpoint
}

// StartTestServer starts an etcd for the test on free loopback ports and a temporary data
// directory, and waits until it serves. It fails the test, never skips it, when the etcd binary
// is missing: the tests are meant to run against the real thing. The server stops when the test
// ends.
func StartTestServer(t testing.TB) *TestServer {
	t.Helper()
	bin, err := exec.LookPath("etcd")
	if err != nil {
		if _, statErr := os.Stat(etcdBinary); statErr != nil {
			t.Fatalf("etcd is not installed (not on PATH, not at %s): run `make deps` (Debian package etcd-server)", etcdBinary)
		}
		bin = etcdBinary
	}
	// A port found free may be taken by another process before etcd binds it; a few attempts
	// with fresh ports make that race harmless without retrying forever.
	const attempts = 3
	var lastErr error
	for i := 0; i < attempts; i++ {
		s, err := newTestServer(t, bin)
		if err != nil {
			t.Fatal(err)
		}
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("etcd did not start after %d attempts: %v", attempts, lastErr)
	return nil
}

func newTestServer(t testing.TB, bin string) (*TestServer, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	dir := t.TempDir()
	return &TestServer{
		Endpoint: client,
		t:        t,
		binary:   bin,
		dataDir:  dir,
		args: []string{
			"--name", "partroute-test",
			"--data-dir", dir,
			"--listen-client-urls", client,
			"--advertise-client-urls", client,
			"--listen-peer-urls", peer,
			"--initial-advertise-peer-urls", peer,
			"--initial-cluster", "partroute-test=" + peer,
			"--initial-cluster-state", "new",
			"--logger", "zap",
			"--log-outputs", "stderr",
			"--log-level", "warn",
		},
	}, nil
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// Start starts the server again after Stop, on the same ports and data directory, and waits
// until it serves. It fails the test when the server does not come back.
func (s *TestServer) Start() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatal(err)
	}
}

func (s *TestServer) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		return fmt.Errorf("etcd at %s is already running", s.Endpoint)
	}
	log := &lockedBuffer{}
	cmd := exec.Command(s.binary, s.args...) //nolint:gosec // the etcd binary the test found, with arguments the server makes itself
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting %s: %w", s.binary, err)
	}
	done := make(chan struct{})
	go func() {
		// The exit status says nothing the health wait or Stop does not: etcd is stopped by
		// a signal.
		_ = cmd.Wait()
		close(done)
	}()
	if err := waitHealthy(s.Endpoint, done, 30*time.Second); err != nil {
		_ = cmd.Process.Kill() // it may have exited already
		<-done
		return fmt.Errorf("etcd at %s: %w; its log:\n%s", s.Endpoint, err, log.String())
	}
	s.cmd, s.done, s.log = cmd, done, log
	return nil
}

// waitHealthy polls etcd's /health until it reports healthy, the process exits, or the
// deadline passes.
func waitHealthy(endpoint string, exited <-chan struct{}, limit time.Duration) error {
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	client := &http.Client{Timeout: time.Second}
	var last string
	for {
		resp, err := client.Get(endpoint + "/health")
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && bytes.Contains(body, []byte(`"health":"true"`)) {
				return nil
			}
			last = fmt.Sprintf("/health answered %d %s", resp.StatusCode, bytes.TrimSpace(body))
		} else {
			last = err.Error()
		}
		select {
		case <-exited:
			return fmt.Errorf("the process exited before it served (%s)", last)
		case <-deadline.C:
			return fmt.Errorf("not healthy within %v (%s)", limit, last)
		case <-tick.C:
		}
	}
}

// Stop stops the server and waits for it to exit; its data stays for Start. Stopping a stopped
// server does nothing.
func (s *TestServer) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return
	}
	// SIGTERM lets etcd close its data cleanly; SIGKILL is the bounded fallback.
	_ = s.cmd.Process.Signal(os.Interrupt) // it may have exited already; done tells

	t := time.NewTimer(10 * time.Second)
	defer t.Stop()
	select {
	case <-s.done:
	case <-t.C:
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	s.cmd, s.done = nil, nil
}

// Log returns what the server has written so far, for a failing test's message.
func (s *TestServer) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.log == nil {
		return ""
	}
	return s.log.String()
}

// Client returns a client of the server that is closed when the test ends.
func (s *TestServer) Client() *clientv3.Client {
	s.t.Helper()
	c, err := etcdsource.Dial([]string{s.Endpoint}, 2*time.Second)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { c.Close() })
	return c
}

// lockedBuffer is a bytes.Buffer that the process's output goroutines and the test may use
// at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
