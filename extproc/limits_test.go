package extproc

import (
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// manyHeaders returns n name, value pairs x-h-0: v, x-h-1: v, ...
func manyHeaders(n int) []string {
	pairs := make([]string, 0, 2*n)
	for i := range n {
		pairs = append(pairs, "x-h-"+strconv.Itoa(i), "v")
	}
	return pairs
}

// A request of more headers, or more header bytes, than limits.requestHeaders allows is
// answered 431 request_headers_too_large and counted like every rejection, under the service it
// matched; the next request on the same handler is routed as usual.
func TestRequestHeaderLimits(t *testing.T) {
	f := newFixture(t)
	for _, c := range []struct {
		name  string
		extra []string
	}{
		{"too many headers", manyHeaders(200)},
		{"too many header bytes", []string{"x-pad", strings.Repeat("p", 70<<10)}},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := testutil.ToFloat64(f.metrics.requests.WithLabelValues("users", "request_headers_too_large"))
			resp := f.decide(t, requestHeaders("GET", "a.example.com", "/api/users/12", c.extra...))
			checkRejection(t, resp, 431, "request_headers_too_large")
			if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("users", "request_headers_too_large")) - before; got != 1 {
				t.Errorf("requests_total{service=\"users\",code=\"request_headers_too_large\"} grew by %v, want 1", got)
			}
			checkRouted(t, f.decide(t, requestHeaders("GET", "a.example.com", "/api/users/12")), false, routed{partition: "users-1", roleHeader: "any", key: "12"})
		})
	}
	// A request no service matches is bounded too, and counted under "-".
	checkRejection(t, f.decide(t, requestHeaders("GET", "example.org", "/", manyHeaders(200)...)), 431, "request_headers_too_large")
	if got := testutil.ToFloat64(f.metrics.requests.WithLabelValues("-", "request_headers_too_large")); got != 1 {
		t.Errorf("requests_total{service=\"-\",code=\"request_headers_too_large\"} = %v, want 1", got)
	}
}
