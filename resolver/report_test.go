package resolver_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// TestDecisionReport pins the JSON that `partroute resolve` prints and /debug/resolve serves.
func TestDecisionReport(t *testing.T) {
	cfg, view := example.Load(t)
	tcfg, tview := example.LoadPair(t, "testdata/partroute.yaml", "testdata/naming.yaml")
	exampleRes := resolver.New(&resolver.State{Config: cfg, Naming: view})
	other := resolver.New(&resolver.State{Config: tcfg, Naming: tview})
	cases := []struct {
		name string
		r    *resolver.Resolver
		req  *keying.Request
		want string
	}{
		{"int64, any role: every healthy replica", exampleRes, request("GET", "a.example.com", "/api/users/7"),
			`{"service":"users","key":"7","partition":{"id":"users-0","index":0,"lowKey":0,"highKey":8},"role":"any","replicas":[` +
				`{"address":"127.0.0.1:8081","role":"primary","healthy":true},{"address":"127.0.0.1:8082","role":"secondary","healthy":true}]}`},
		{"int64, primary role", exampleRes, request("PUT", "a.example.com", "/api/users/9"),
			`{"service":"users","key":"9","partition":{"id":"users-1","index":1,"lowKey":9,"highKey":17},"role":"primary","replicas":[` +
				`{"address":"127.0.0.1:8084","role":"primary","healthy":true}]}`},
		{"full range, secondary role", exampleRes, request("GET", "h", "/api/sessions", "x-session", "cart-7"),
			`{"service":"sessions","key":"8850301778677941569","partition":{"id":"sessions/0:9223372036854775807","index":1,"lowKey":0,"highKey":9223372036854775807},"role":"secondary","replicas":[` +
				`{"address":"127.0.0.1:8074","role":"secondary","healthy":true}]}`},
		{"named", exampleRes, request("GET", "h", "/api/regions/eu"),
			`{"service":"regions","key":"eu","partition":{"id":"regions/eu","index":0,"name":"eu"},"role":"primary","replicas":[` +
				`{"address":"127.0.0.1:8091","role":"primary","healthy":true}]}`},
		{"singleton", exampleRes, request("GET", "h", "/api/settings"),
			`{"service":"settings","partition":{"id":"settings","index":0},"role":"primary","replicas":[{"address":"127.0.0.1:8099","role":"primary","healthy":true}]}`},
		{"passthrough", exampleRes, request("GET", "example.org", "/"),
			`{"passthrough":true,"message":"no service matches; the request passes through, with the partition, role and key headers removed"}`},
		{"rejected", exampleRes, request("GET", "a.example.com", "/api/users/34"),
			`{"error":{"status":400,"code":"partition_key_out_of_range","message":"path \"/api/users/{id}\": key 34 is outside [0, 33]"}}`},
		{"unavailable", other, withBody(request("POST", "h", "/orders"), `{"customer":{"id":99}}`),
			`{"error":{"status":503,"code":"partition_unavailable","message":"partition orders/68:100 of service orders has no healthy primary replica"}}`},
		{"no service", other, request("GET", "h", "/"),
			`{"error":{"status":404,"code":"no_service","message":"no service matches authority \"h\" and path \"/\""}}`},
		// No key has been read, so none is reported.
		{"body needed", other, request("POST", "h", "/orders"),
			`{"service":"orders","message":"the service keys on the request body and none was given"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := json.Marshal(tc.r.Resolve(context.Background(), tc.req).Report())
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("report\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
