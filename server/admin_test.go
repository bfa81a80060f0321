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
	return newAdminFixtureFor(t, cfg, view)
}

// newAdminFixtureFor is the admin listener over cfg and view.
func newAdminFixtureFor(t *testing.T, cfg *config.Config, view *resolver.View) *adminFixture {
	t.Helper()
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

// A question to /debug/resolve is bounded before it is parsed, and one that is too large is
// told so, whatever else it lacks: without the bound, 20,000 header parameters made the query
// parser give up and the answer was "url is required".
func TestAdminDebugResolveQueryLimits(t *testing.T) {
	f := newAdminFixture(t)
	const target = "url=http%3A%2F%2Fa.example.com%2Fapi%2Fusers%2F12"
	headers := func(n int) string { return strings.Repeat("header=x-a%3A1&", n) }
	for _, c := range []struct {
		name, query string
		code        int
		want        string
	}{
		{"20,000 header parameters", strings.Repeat("header=&", 20000) + target, http.StatusRequestURITooLong, "query too large: 160049 bytes, at most 65536\n"},
		{"101 header parameters", headers(101) + target, http.StatusRequestURITooLong, "query too large: 101 header parameters, at most 100\n"},
		{"101 encoded header parameters", strings.Repeat("h%65ader=x-a%3A1&", 101) + target, http.StatusRequestURITooLong, "query too large: 101 header parameters, at most 100\n"},
		{"10,001 empty parameters", strings.Repeat("&", 10000) + target, http.StatusRequestURITooLong, "query too large: 10001 parameters, at most 128\n"},
		{"129 parameters", strings.Repeat("a=1&", 128) + target, http.StatusRequestURITooLong, "query too large: 129 parameters, at most 128\n"},
		{"100 header parameters", headers(100) + target, http.StatusOK, `"service": "users"`},
		{"a body of 20 KB", "body=" + strings.Repeat("x", 20000) + "&" + target, http.StatusOK, `"service": "users"`},
		{"a semicolon", "a=1;b=2&" + target, http.StatusBadRequest, "bad request: query: invalid semicolon separator in query"},
	} {
		code, _, body := f.get(t, "/debug/resolve?"+c.query)
		if code != c.code || !strings.Contains(body, c.want) {
			t.Errorf("%s: %d %.200q, want %d with %q", c.name, code, body, c.code, c.want)
		}
	}
}

// /debug/resolve applies maxBodyBytes to an inline body as ext_proc does: a body above it is
// rejected with 413 request_body_too_large, never parsed for its key.
func TestAdminDebugResolveBodyLimit(t *testing.T) {
	cfg, err := config.Parse([]byte(`naming: {file: naming.yaml}
maxBodyBytes: 1024
services:
  - name: orders
    match: {pathPrefix: /orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{jsonBody: /id}]}
`), "/p/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.ParseView([]byte(bodyKeyedNaming), "/p/naming.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := newAdminFixtureFor(t, cfg, view)
	ask := func(body string) resolver.Report {
		return f.resolveReport(t, url.Values{"method": {"POST"}, "url": {"http://o.test/orders"}, "body": {body}})
	}
	if r := ask(`{"id": 7}`); r.Error != nil || r.Partition == nil || r.Partition.ID != "orders-1" {
		t.Errorf("a small body: %+v, want orders-1", r)
	}
	r := ask(`{"id": 7, "pad": "` + strings.Repeat("x", 20000) + `"}`)
	if r.Error == nil || r.Error.Status != http.StatusRequestEntityTooLarge || r.Error.Code != "request_body_too_large" {
		t.Errorf("a 20 KB body with maxBodyBytes 1024: %+v, want 413 request_body_too_large", r)
	}
}
