package e2e

import (
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
)

// TestHeadersSetByThroughEnvoy sends, in each shape of partroute's answer (headers.setBy),
// requests whose client sent its own partition, role and key headers (a wrong partition, role
// primary on a read, a wrong key, some twice) through a real Envoy on the generated bootstrap.
// Every request lands on the replica partroute chose, whatever the client claimed: a write on
// the primary, a read under reads: secondary on a secondary. The upstream request carries
// exactly partroute's values with extproc (set by partroute's header mutation) and with envoy
// (set by the routes from partroute's metadata), with no key header for a singleton service,
// and none of the three headers with none: the client's copies never get through. A
// body-keyed service is among them, whose headers-phase answer removes the client's copies
// and whose body-phase answer routes.
func TestHeadersSetByThroughEnvoy(t *testing.T) {
	spoofed := []string{
		"x-partition-id", "orders-2", "X-Partition-Id", "carts-2",
		"x-partition-role", "primary", "x-partition-role", "any",
		"x-partition-key", "250", "x-partition-key", "7",
	}
	for _, setBy := range []config.SetBy{config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
		t.Run(setBy.String(), func(t *testing.T) {
			s := startStack(t, "reject", setBy)
			if s.cfg.Headers.SetBy != setBy {
				t.Fatalf("the stack's configuration has setBy %v", s.cfg.Headers.SetBy)
			}
			settings := s.view.Services["settings"].Partitions[0].ID
			cases := []struct {
				name, method, host, target, body string
				headers                          []string
				// replicas are where the request may land; partition, role and key are
				// partroute's values, key empty for none.
				replicas             []string
				partition, role, key string
			}{
				{"a write", "PUT", "api.example.com", "/api/orders/5", "", nil,
					[]string{s.primary("orders", 0)}, "orders-0", "primary", "5"},
				{"a read under reads: secondary", "GET", "x", "/api/carts", "", []string{"x-cart-id", "5"},
					s.replicas("carts", 0, resolver.RoleSecondary), "carts-0", "secondary", "5"},
				{"a read under reads: any", "GET", "api.example.com", "/api/orders/150", "", nil,
					append(s.replicas("orders", 1, resolver.RolePrimary), s.replicas("orders", 1, resolver.RoleSecondary)...), "orders-1", "any", "150"},
				{"a write keyed by its JSON body", "POST", "x", "/api/events", `{"user": {"id": 123}}`, []string{"content-type", "application/json"},
					[]string{s.primary("events", 1)}, "events-1", "primary", "123"},
				{"a write to a singleton service", "POST", "x", "/api/settings/theme", "", nil,
					[]string{s.primary("settings", 0)}, settings, "primary", ""},
			}
			for i, c := range cases {
				id := setBy.String() + "-" + strconv.Itoa(i)
				r := s.do(c.method, c.host, c.target, c.body, slices.Concat(c.headers, spoofed, []string{loadtest.RequestIDHeader, id})...)
				if r.status != http.StatusOK || !slices.Contains(c.replicas, r.echo.Backend) {
					t.Errorf("%s: status %d from %q (%s), want one of %v", c.name, r.status, r.echo.Backend, r.body, c.replicas)
					continue
				}
				served, ok := s.backends.Get(r.echo.Backend).Requests()[id]
				if !ok {
					t.Errorf("%s: backend %s has no record of request %s", c.name, r.echo.Backend, id)
					continue
				}
				want := http.Header{}
				if setBy != config.SetByNone {
					want["X-Partition-Id"] = []string{c.partition}
					want["X-Partition-Role"] = []string{c.role}
					if c.key != "" {
						want["X-Partition-Key"] = []string{c.key}
					}
				}
				if !reflect.DeepEqual(served.Headers, want) {
					t.Errorf("%s: the upstream request carried %v, want %v", c.name, served.Headers, want)
				}
			}
		})
	}
}
