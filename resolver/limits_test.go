package resolver_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// withHeaders adds n headers x-h-0, x-h-1, ... with value v.
func withHeaders(r *keying.Request, n int, v string) *keying.Request {
	hl := r.Headers.(keying.HeaderList)
	for i := range n {
		hl = append(hl, keying.Header{Name: "x-h-" + strconv.Itoa(i), Value: v})
	}
	r.Headers = hl
	return r
}

// padTo adds one header x-pad so that the request's header names and values hold size bytes.
func padTo(t *testing.T, r *keying.Request, size int) *keying.Request {
	t.Helper()
	have := len("x-pad")
	for i := 0; i < r.Headers.Len(); i++ {
		k, v := r.Headers.At(i)
		have += len(k) + len(v)
	}
	if have > size {
		t.Fatalf("the request holds %d header bytes already, above %d", have, size)
	}
	r.Headers = append(r.Headers.(keying.HeaderList), keying.Header{Name: "x-pad", Value: strings.Repeat("p", size-have)})
	return r
}

// A request's headers are bounded in number and in bytes, by default a little above Envoy's own
// bounds; a request past either is rejected with 431 before its key is read, whether or not a
// service matches it.
func TestResolveHeaderLimits(t *testing.T) {
	cfg, view := example.Load(t)
	tcfg, tview := example.LoadPair(t, "testdata/partroute.yaml", "testdata/naming.yaml")
	maxCount, maxBytes := config.DefaultMaxRequestHeaders, config.DefaultMaxRequestHeaderBytes
	// request gives every request 4 pseudo-headers.
	const pseudo = 4
	cases := []struct {
		name   string
		cfg    *config.Config
		naming resolver.Naming
		req    *keying.Request
		want   outcome
	}{
		{"as many headers as allowed", cfg, view, withHeaders(request("GET", "a.example.com", "/api/users/7"), maxCount-pseudo, "v"),
			routed("users", "users-0", 0, "7", resolver.RoleAny)},
		{"one header too many", cfg, view, withHeaders(request("GET", "a.example.com", "/api/users/7"), maxCount-pseudo+1, "v"),
			rejected("users", resolver.RequestHeadersTooLarge, "request has 129 headers, above the limit of 128 (limits.requestHeaders.maxCount)")},
		{"as many header bytes as allowed", cfg, view, padTo(t, request("GET", "a.example.com", "/api/users/7"), maxBytes),
			routed("users", "users-0", 0, "7", resolver.RoleAny)},
		{"one header byte too many", cfg, view, padTo(t, request("GET", "a.example.com", "/api/users/7"), maxBytes+1),
			rejected("users", resolver.RequestHeadersTooLarge, "request headers hold 65537 bytes, above the limit of 65536 bytes (limits.requestHeaders.maxBytes)")},
		{"too many headers, no service matches", cfg, view, withHeaders(request("GET", "example.org", "/"), 200, "v"),
			rejected("", resolver.RequestHeadersTooLarge, "request has 204 headers")},
		{"too many headers, no service matches and unmatched is reject", tcfg, tview, withHeaders(request("GET", "example.org", "/"), 200, "v"),
			rejected("", resolver.RequestHeadersTooLarge, "request has 204 headers")},
		// Checked before the service asks for the body, so that Envoy never buffers it.
		{"too many headers, body-keyed service", tcfg, tview, withHeaders(request("POST", "h", "/orders"), 200, "v"),
			rejected("orders", resolver.RequestHeadersTooLarge, "request has 204 headers")},
		// Checked before the key is read and the naming source asked.
		{"too many headers, naming source down", cfg, fakeNaming{errors.New("down")}, withHeaders(request("GET", "a.example.com", "/api/users/7"), 200, "v"),
			rejected("users", resolver.RequestHeadersTooLarge, "request has 204 headers")},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := resolver.New(&resolver.State{Config: tc.cfg, Naming: tc.naming})
			d := r.Resolve(context.Background(), tc.req)
			checkDecision(t, tc.cfg, d, tc.want)
			if d.Err != nil && d.Key != (keying.Key{}) {
				t.Errorf("key %+v read from a request rejected for its headers", d.Key)
			}
		})
	}
}

// The header limits come from the configuration, and a reload that changes them applies to
// the next request.
func TestResolveHeaderLimitsFollowTheConfiguration(t *testing.T) {
	cfg, view := example.Load(t)
	tight, err := config.Parse([]byte(`naming: {file: naming.yaml}
limits: {requestHeaders: {maxCount: 5, maxBytes: 100}}
services:
  - name: users
    match: {authority: "*.example.com", pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 33, count: 4}
    key: {sources: [{path: "/api/users/{id}"}]}
`), cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	r := resolver.New(&resolver.State{Config: cfg, Naming: view})
	req := withHeaders(request("GET", "a.example.com", "/api/users/7"), 2, "v")
	checkDecision(t, cfg, r.Resolve(context.Background(), req), routed("users", "users-0", 0, "7", resolver.RoleAny))
	r.Swap(&resolver.State{Config: tight, Naming: view})
	checkDecision(t, tight, r.Resolve(context.Background(), req), rejected("users", resolver.RequestHeadersTooLarge, "request has 6 headers, above the limit of 5"))
	checkDecision(t, tight, r.Resolve(context.Background(), padTo(t, request("GET", "a.example.com", "/api/users/7"), 101)),
		rejected("users", resolver.RequestHeadersTooLarge, "request headers hold 101 bytes, above the limit of 100 bytes"))
}
