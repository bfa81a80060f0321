package server

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/resolver"
)

// serveExamples is the directory of the example configuration and naming view.
const serveExamples = "../envoy-config/examples"

// adminFixture is the admin listener over the example files, served by httptest.
type adminFixture struct {
	srv   *httptest.Server
	ready *atomic.Bool
}

func newAdminFixture(t *testing.T) *adminFixture {
	t.Helper()
	cfg, err := config.Load(filepath.Join(serveExamples, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.LoadViewFile(cfg.Naming.File, cfg)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	resolver.NewSourceMetrics(reg).Served(view, time.Now())
	extproc.NewMetrics(reg)
	f := &adminFixture{ready: &atomic.Bool{}}
	f.srv = httptest.NewServer(adminMux(reg, resolver.New(&resolver.State{Config: cfg, Naming: view}), f.ready, nil, nil))
	t.Cleanup(f.srv.Close)
	return f
}

// get fetches path from the admin listener and returns status, content type and body.
func (f *adminFixture) get(t *testing.T, path string) (int, string, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(f.srv.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header.Get("content-type"), string(body)
}

func TestAdminHealthAndReadiness(t *testing.T) {
	f := newAdminFixture(t)
	if code, _, _ := f.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d, want 200", code)
	}
	if code, _, _ := f.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before ready: %d, want 503", code)
	}
	f.ready.Store(true)
	if code, _, _ := f.get(t, "/readyz"); code != http.StatusOK {
		t.Errorf("/readyz when ready: %d, want 200", code)
	}
	// Draining: not ready again, while the process stays healthy.
	f.ready.Store(false)
	if code, _, _ := f.get(t, "/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d, want 503", code)
	}
	if code, _, _ := f.get(t, "/healthz"); code != http.StatusOK {
		t.Errorf("/healthz while draining: %d, want 200", code)
	}
}

func TestAdminMetrics(t *testing.T) {
	f := newAdminFixture(t)
	code, _, body := f.get(t, "/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	for _, name := range []string{"partroute_extproc_active_streams", "partroute_extproc_streams_total", "partroute_naming_reloads_total", "partroute_naming_view_info"} {
		if !strings.Contains(body, "\n"+name) {
			t.Errorf("/metrics lacks %s:\n%s", name, body)
		}
	}
}

// resolveReport asks /debug/resolve about a request and decodes the report.
func (f *adminFixture) resolveReport(t *testing.T, query url.Values) resolver.Report {
	t.Helper()
	code, ctype, body := f.get(t, "/debug/resolve?"+query.Encode())
	if code != http.StatusOK || ctype != "application/json" {
		t.Fatalf("/debug/resolve?%s: %d %s: %s", query.Encode(), code, ctype, body)
	}
	var r resolver.Report
	dec := json.NewDecoder(strings.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		t.Fatalf("report %s: %v", body, err)
	}
	return r
}

func TestAdminDebugResolve(t *testing.T) {
	f := newAdminFixture(t)
	r := f.resolveReport(t, url.Values{"method": {"PUT"}, "url": {"http://a.example.com/api/users/12"}})
	if r.Service != "users" || r.Key != "12" || r.Partition == nil || r.Partition.ID != "users-1" || r.Role != "primary" {
		t.Errorf("report %+v, want users-1, primary, key 12", r)
	}
	if len(r.Replicas) != 1 || r.Replicas[0].Address != "127.0.0.1:8084" {
		t.Errorf("replicas %+v, want the primary of users-1 only", r.Replicas)
	}

	// Without a method the request is a GET: a read, which users sends to any replica.
	r = f.resolveReport(t, url.Values{"url": {"http://a.example.com/api/users/12"}})
	if r.Role != "any" || len(r.Replicas) != 2 {
		t.Errorf("GET report %+v, want role any over two replicas", r)
	}

	r = f.resolveReport(t, url.Values{"method": {"GET"}, "url": {"http://a.example.com/api/users"}, "header": {"x-user-id: 30"}})
	if r.Partition == nil || r.Partition.ID != "users-3" {
		t.Errorf("report with a key header %+v, want users-3", r)
	}

	// A rejection is a report too, with the status and code a client would get.
	r = f.resolveReport(t, url.Values{"method": {"PUT"}, "url": {"http://a.example.com/api/users/34"}})
	if r.Error == nil || r.Error.Status != 400 || r.Error.Code != "partition_key_out_of_range" {
		t.Errorf("report %+v, want a 400 partition_key_out_of_range error", r)
	}
}

func TestAdminDebugResolveBadRequests(t *testing.T) {
	f := newAdminFixture(t)
	for _, c := range []struct {
		q    url.Values
		want string
	}{
		{url.Values{"method": {"PUT"}}, "url is required"},
		{url.Values{"url": {"http://a.example.com/api/users/12"}, "header": {"no colon"}}, `header "no colon" is not 'name: value'`},
		{url.Values{"url": {"http://a.example.com/%zz"}}, `bad request: URL "http://a.example.com/%zz"`},
		// A URL without scheme and host would be read as a relative path that no service
		// matches: it is refused, as by partroute resolve.
		{url.Values{"url": {"api.example.com/api/users/12"}}, `bad request: URL "api.example.com/api/users/12" has no scheme and host: write it as http://host/path (or as a path, /path, with a host header)` + "\n"},
	} {
		code, _, body := f.get(t, "/debug/resolve?"+c.q.Encode())
		if code != http.StatusBadRequest || !strings.Contains(body, c.want) {
			t.Errorf("/debug/resolve?%s: %d %q, want 400 with %q", c.q.Encode(), code, body, c.want)
		}
	}
}

func TestAdminDebugResolveNeverReadsFiles(t *testing.T) {
	f := newAdminFixture(t)
	// A body of "@path" reads a file in the CLI; over HTTP it must be refused before any file
	// is opened. A FIFO without a writer blocks whoever opens it for reading, so a handler
	// that opens it never answers.
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Unblock a reader left behind by a failing handler, so that the server can close.
		if w, err := os.OpenFile(fifo, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	q := url.Values{"method": {"POST"}, "url": {"http://a.test/api/orders"}, "body": {"@" + fifo}}
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(f.srv.URL + "/debug/resolve?" + q.Encode())
	if err != nil {
		t.Fatalf("the handler did not answer a body of @file at once: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("body=@file: %d, want 400", resp.StatusCode)
	}
}
