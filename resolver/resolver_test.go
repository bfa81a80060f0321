package resolver_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// request builds a request the way the ext_proc handler does: the pseudo-headers are ordinary
// entries, followed by the given name/value pairs.
func request(method, authority, path string, headers ...string) *keying.Request {
	hl := keying.HeaderList{
		{Name: ":method", Value: method},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: authority},
		{Name: ":scheme", Value: "https"},
	}
	for i := 0; i+1 < len(headers); i += 2 {
		hl = append(hl, keying.Header{Name: headers[i], Value: headers[i+1]})
	}
	return &keying.Request{Method: method, Authority: authority, Path: path, Headers: hl}
}

// withBody adds a body to a request.
func withBody(r *keying.Request, body string) *keying.Request {
	r.Body = []byte(body)
	return r
}

// outcome is what a Decision should hold. An empty service means the request passes
// through; a non-OK code means it is rejected with a message holding msg.
type outcome struct {
	service   string
	partition string
	index     int
	key       string
	role      resolver.Role
	code      resolver.Code
	msg       string
	needBody  bool
}

func routed(service, partition string, index int, key string, role resolver.Role) outcome {
	return outcome{service: service, partition: partition, index: index, key: key, role: role}
}

func rejected(service string, code resolver.Code, msg string) outcome {
	return outcome{service: service, code: code, msg: msg}
}

var passthrough = outcome{}

// checkDecision compares a decision with want.
func checkDecision(t *testing.T, cfg *config.Config, d resolver.Decision, want outcome) {
	t.Helper()
	if d.Config != cfg {
		t.Errorf("Decision.Config is not the configuration it was made with")
	}
	svc := ""
	if d.Service != nil {
		svc = d.Service.Name
	}
	if svc != want.service {
		t.Errorf("service %q, want %q", svc, want.service)
	}
	if d.NeedBody != want.needBody {
		t.Errorf("NeedBody = %v, want %v", d.NeedBody, want.needBody)
	}
	if want.code != resolver.OK {
		if d.Err == nil {
			t.Fatalf("routed to %+v, want %s", d.Partition, want.code)
		}
		if d.Err.Code != want.code || !strings.Contains(d.Err.Message, want.msg) {
			t.Errorf("error %s: %q, want %s containing %q", d.Err.Code, d.Err.Message, want.code, want.msg)
		}
		return
	}
	if d.Err != nil {
		t.Fatalf("rejected with %v", d.Err)
	}
	if want.partition == "" {
		if d.Partition != nil {
			t.Errorf("partition %s, want none", d.Partition.ID)
		}
		return
	}
	if d.Partition == nil {
		t.Fatalf("no partition, want %s", want.partition)
	}
	key := string(d.Key.AppendText(nil, d.Service.Scheme().Kind()))
	if d.Partition.ID != want.partition || d.Partition.Index != want.index || d.Key.Index != want.index || key != want.key || d.Role != want.role {
		t.Errorf("routed to %s (index %d, key index %d) with key %q as %s; want %s (index %d) with key %q as %s",
			d.Partition.ID, d.Partition.Index, d.Key.Index, key, d.Role, want.partition, want.index, want.key, want.role)
	}
}

// unhealthyView is the example naming view with some replicas down: users-3 has no healthy
// replica, the first sessions partition has no healthy secondary and the second no healthy
// primary.
func unhealthyView(t *testing.T, cfg *config.Config) *resolver.View {
	t.Helper()
	doc := readFile(t, exampleNaming)
	doc = replace(t, doc, "{address: 127.0.0.1:8088, role: primary}", "{address: 127.0.0.1:8088, role: primary, healthy: false}")
	doc = replace(t, doc, "{address: 127.0.0.1:8072, role: secondary}", "{address: 127.0.0.1:8072, role: secondary, healthy: false}")
	doc = replace(t, doc, "{address: 127.0.0.1:8073, role: primary}", "{address: 127.0.0.1:8073, role: primary, healthy: false}")
	v, err := resolver.ParseView([]byte(doc), "naming.yaml", cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// Golden hash keys. A change to any of them moves keys between partitions, which the hash
// transform promises never to do.
const (
	// xxhash64 of "abc" over the full int64 range.
	sessionKeyABC = "-4270488912965203559"
	// xxhash64 of "cart-7" over the full int64 range.
	sessionKeyCart7 = "8850301778677941569"
)

func TestResolve(t *testing.T) {
	cfg, view := example.Load(t)
	sick := unhealthyView(t, cfg)
	tcfg, tview := example.LoadPair(t, "testdata/partroute.yaml", "testdata/naming.yaml")
	const (
		usersMissing = `no partition key in the request; looked in path "/api/users/{id}", header "x-user-id", query "user"`
		sessions0    = "sessions/-9223372036854775808:-1"
		sessions1    = "sessions/0:9223372036854775807"
	)
	P, S, A := resolver.RolePrimary, resolver.RoleSecondary, resolver.RoleAny
	cases := []struct {
		name   string
		cfg    *config.Config
		naming resolver.Naming
		req    *keying.Request
		want   outcome
	}{
		// uniformInt64 with the int64 transform, from each of its three sources; reads go to
		// any replica.
		{"path key", cfg, view, request("GET", "a.example.com", "/api/users/7"), routed("users", "users-0", 0, "7", A)},
		{"path key, longer path and port", cfg, view, request("GET", "a.example.com:8443", "/api/users/9/orders?x=1"), routed("users", "users-1", 1, "9", A)},
		{"path key, write", cfg, view, request("PUT", "a.example.com", "/api/users/20"), routed("users", "users-2", 2, "20", P)},
		{"path key, delete at the top", cfg, view, request("DELETE", "api.example.com", "/api/users/33"), routed("users", "users-3", 3, "33", P)},
		{"path key, head is a read", cfg, view, request("HEAD", "api.example.com", "/api/users/8"), routed("users", "users-0", 0, "8", A)},
		{"path key with leading zeros", cfg, view, request("GET", "api.example.com", "/api/users/0017"), routed("users", "users-1", 1, "17", A)},
		{"header key", cfg, view, request("GET", "a.example.com", "/api/users", "x-user-id", "17"), routed("users", "users-1", 1, "17", A)},
		{"query key", cfg, view, request("GET", "a.example.com", "/api/users?user=26"), routed("users", "users-3", 3, "26", A)},
		{"first source wins", cfg, view, request("GET", "a.example.com", "/api/users/0?user=30", "x-user-id", "20"), routed("users", "users-0", 0, "0", A)},
		{"strong read", cfg, view, request("GET", "a.example.com", "/api/users/7", "x-partroute-consistency", "strong"), routed("users", "users-0", 0, "7", P)},
		{"strong read in capitals", cfg, view, request("GET", "a.example.com", "/api/users/7", "x-partroute-consistency", "STRONG"), routed("users", "users-0", 0, "7", P)},
		{"consistency other than strong", cfg, view, request("GET", "a.example.com", "/api/users/7", "x-partroute-consistency", "eventual"), routed("users", "users-0", 0, "7", A)},
		{"missing key", cfg, view, request("GET", "a.example.com", "/api/users"), rejected("users", resolver.MissingPartitionKey, usersMissing)},
		{"empty header key", cfg, view, request("GET", "a.example.com", "/api/users/", "x-user-id", ""), rejected("users", resolver.MissingPartitionKey, usersMissing)},
		{"plus sign", cfg, view, request("GET", "a.example.com", "/api/users/+1"), rejected("users", resolver.InvalidPartitionKey, `path "/api/users/{id}": "+1" is not a decimal int64`)},
		{"exponent", cfg, view, request("GET", "a.example.com", "/api/users/1e3"), rejected("users", resolver.InvalidPartitionKey, `"1e3" is not a decimal int64`)},
		{"letters", cfg, view, request("GET", "a.example.com", "/api/users/abc"), rejected("users", resolver.InvalidPartitionKey, `"abc" is not a decimal int64`)},
		{"leading space", cfg, view, request("GET", "a.example.com", "/api/users/%201"), rejected("users", resolver.InvalidPartitionKey, `" 1" is not a decimal int64`)},
		{"overflow", cfg, view, request("GET", "a.example.com", "/api/users/9223372036854775808"), rejected("users", resolver.InvalidPartitionKey, `"9223372036854775808" is not a decimal int64`)},
		{"broken percent-encoding", cfg, view, request("GET", "a.example.com", "/api/users/%zz"), rejected("users", resolver.InvalidPartitionKey, "invalid percent-encoding")},
		{"invalid header key", cfg, view, request("GET", "a.example.com", "/api/users", "x-user-id", "0x10"), rejected("users", resolver.InvalidPartitionKey, `header "x-user-id": "0x10" is not a decimal int64`)},
		{"key above the range", cfg, view, request("GET", "a.example.com", "/api/users/34"), rejected("users", resolver.PartitionKeyOutOfRange, `path "/api/users/{id}": key 34 is outside [0, 33]`)},
		{"key below the range", cfg, view, request("PUT", "a.example.com", "/api/users?user=-1"), rejected("users", resolver.PartitionKeyOutOfRange, `query "user": key -1 is outside [0, 33]`)},
		{"wildcard needs a subdomain", cfg, view, request("GET", "example.com", "/api/users/7"), passthrough},
		{"prefix matches whole segments", cfg, view, request("GET", "a.example.com", "/api/usersX/7"), passthrough},

		// uniformInt64 over the full range with the hash transform (xxhash64), from a cookie or
		// a header; reads prefer secondaries.
		{"cookie key", cfg, view, request("GET", "h", "/api/sessions", "cookie", "session=abc"), routed("sessions", sessions0, 0, sessionKeyABC, S)},
		{"cookie among others", cfg, view, request("POST", "h", "/api/sessions/x", "cookie", "theme=dark; session=abc"), routed("sessions", sessions0, 0, sessionKeyABC, P)},
		{"quoted cookie", cfg, view, request("GET", "h", "/api/sessions", "cookie", `session="abc"`), routed("sessions", sessions0, 0, sessionKeyABC, S)},
		{"second cookie header", cfg, view, request("GET", "h", "/api/sessions", "cookie", "a=1", "cookie", "session=abc"), routed("sessions", sessions0, 0, sessionKeyABC, S)},
		{"hashed header key", cfg, view, request("GET", "h", "/api/sessions", "x-session", "cart-7"), routed("sessions", sessions1, 1, sessionKeyCart7, S)},
		{"cookie before header", cfg, view, request("GET", "h", "/api/sessions", "cookie", "session=abc", "x-session", "cart-7"), routed("sessions", sessions0, 0, sessionKeyABC, S)},
		{"hashed strong read", cfg, view, request("GET", "h", "/api/sessions", "x-session", "cart-7", "x-partroute-consistency", "strong"), routed("sessions", sessions1, 1, sessionKeyCart7, P)},
		{"hashed write", cfg, view, request("PATCH", "h", "/api/sessions", "x-session", "cart-7"), routed("sessions", sessions1, 1, sessionKeyCart7, P)},
		{"hash of any bytes", cfg, view, request("GET", "h", "/api/sessions", "x-session", "+1 e3"), routed("sessions", sessions0, 0, "-6028219420579946045", S)},
		{"missing hashed key", cfg, view, request("GET", "h", "/api/sessions", "cookie", "other=1"), rejected("sessions", resolver.MissingPartitionKey, `looked in cookie "session", header "x-session"`)},

		// named with the name transform; reads go to the primary.
		{"name key", cfg, view, request("GET", "h", "/api/regions/eu"), routed("regions", "regions/eu", 0, "eu", P)},
		{"name key, deeper path", cfg, view, request("PUT", "h", "/api/regions/apac/items/1"), routed("regions", "regions/apac", 2, "apac", P)},
		{"percent-encoded name", cfg, view, request("GET", "h", "/api/regions/u%73"), routed("regions", "regions/us", 1, "us", P)},
		{"unknown name", cfg, view, request("GET", "h", "/api/regions/asia"), rejected("regions", resolver.PartitionKeyOutOfRange, `path "/api/regions/{region}": "asia" is not a partition name of this service`)},
		{"names are case-sensitive", cfg, view, request("GET", "h", "/api/regions/EU"), rejected("regions", resolver.PartitionKeyOutOfRange, `"EU" is not a partition name`)},
		{"missing name", cfg, view, request("GET", "h", "/api/regions"), rejected("regions", resolver.MissingPartitionKey, `looked in path "/api/regions/{region}"`)},

		// singleton: no key is read.
		{"singleton read", cfg, view, request("GET", "h", "/api/settings"), routed("settings", "settings", 0, "", P)},
		{"singleton write", cfg, view, request("POST", "h", "/api/settings/theme?x=1", "x-user-id", "junk"), routed("settings", "settings", 0, "", P)},

		// No service matches and unmatched is passthrough.
		{"passthrough", cfg, view, request("GET", "example.org", "/"), passthrough},
		{"passthrough, no authority", cfg, view, request("GET", "", "/other"), passthrough},

		// Replicas that are down.
		{"write, primary down", cfg, sick, request("PUT", "a.example.com", "/api/users/30"), rejected("users", resolver.PartitionUnavailable, "partition users-3 of service users has no healthy primary replica")},
		{"any read, every replica down", cfg, sick, request("GET", "a.example.com", "/api/users/30"), rejected("users", resolver.PartitionUnavailable, "partition users-3 of service users has no healthy")},
		{"strong read, primary down", cfg, sick, request("GET", "h", "/api/sessions", "x-session", "cart-7", "x-partroute-consistency", "strong"), rejected("sessions", resolver.PartitionUnavailable, "partition "+sessions1+" of service sessions has no healthy primary replica")},
		{"secondary read, primary down", cfg, sick, request("GET", "h", "/api/sessions", "x-session", "cart-7"), routed("sessions", sessions1, 1, sessionKeyCart7, S)},
		{"secondary read falls back to the primary", cfg, sick, request("GET", "h", "/api/sessions", "cookie", "session=abc"), routed("sessions", sessions0, 0, sessionKeyABC, P)},
		{"other partitions are unaffected", cfg, sick, request("PUT", "a.example.com", "/api/users/25"), routed("users", "users-2", 2, "25", P)},

		// A service keyed on the JSON body, with a renamed consistency header and SEARCH as a
		// read.
		{"body needed", tcfg, tview, request("POST", "h", "/orders"), outcome{service: "orders", needBody: true}},
		{"body key", tcfg, tview, withBody(request("POST", "h", "/orders"), `{"customer": {"id": 12}}`), routed("orders", "orders/1:34", 0, "12", P)},
		{"body key as a string", tcfg, tview, withBody(request("GET", "h", "/orders/x"), `{"customer": {"id": "40"}}`), routed("orders", "orders/35:67", 1, "40", P)},
		{"body key, secondary read", tcfg, tview, withBody(request("SEARCH", "h", "/orders"), `{"customer": {"id": 70}}`), routed("orders", "orders/68:100", 2, "70", S)},
		{"body key, renamed strong header", tcfg, tview, withBody(request("GET", "h", "/orders", "x-read", "strong"), `{"customer": {"id": 12}}`), routed("orders", "orders/1:34", 0, "12", P)},
		{"body key, default strong header ignored", tcfg, tview, withBody(request("GET", "h", "/orders", "x-partroute-consistency", "strong"), `{"customer": {"id": 12}}`), routed("orders", "orders/1:34", 0, "12", S)},
		{"body key, write to a down primary", tcfg, tview, withBody(request("POST", "h", "/orders"), `{"customer": {"id": 70}}`), rejected("orders", resolver.PartitionUnavailable, "partition orders/68:100 of service orders has no healthy primary replica")},
		{"empty body, header key", tcfg, tview, withBody(request("PUT", "h", "/orders", "x-customer", "5"), ""), routed("orders", "orders/1:34", 0, "5", P)},
		{"body without the key", tcfg, tview, withBody(request("POST", "h", "/orders"), `{"customer": {}}`), rejected("orders", resolver.MissingPartitionKey, `looked in jsonBody "/customer/id", header "x-customer"`)},
		{"body not JSON", tcfg, tview, withBody(request("POST", "h", "/orders"), `customer=12`), rejected("orders", resolver.InvalidPartitionKey, "request body is not valid JSON")},
		{"body key not an integer", tcfg, tview, withBody(request("POST", "h", "/orders"), `{"customer": {"id": 1.5}}`), rejected("orders", resolver.InvalidPartitionKey, `"1.5" is not a decimal int64`)},
		{"body key not a scalar", tcfg, tview, withBody(request("POST", "h", "/orders"), `{"customer": {"id": [1]}}`), rejected("orders", resolver.InvalidPartitionKey, "not a string or a number")},
		{"body above maxBodyBytes", tcfg, tview, withBody(request("POST", "h", "/orders"), `{"customer": {"id": 12}, "pad": "`+strings.Repeat("x", 1<<20)+`"}`), rejected("orders", resolver.BodyTooLarge, "above the limit of 1048576 bytes (maxBodyBytes)")},
		{"body above maxBodyBytes, not JSON", tcfg, tview, withBody(request("POST", "h", "/orders"), strings.Repeat("{", 1<<20+1)), rejected("orders", resolver.BodyTooLarge, "request body of 1048577 bytes")},
		{"body key out of range", tcfg, tview, withBody(request("POST", "h", "/orders"), `{"customer": {"id": 101}}`), rejected("orders", resolver.PartitionKeyOutOfRange, "key 101 is outside [1, 100]")},

		// The hash transform with fnv1a64, from a query parameter.
		{"fnv1a64 key", tcfg, tview, request("GET", "h", "/carts?cart=abc"), routed("carts", "carts/750:999", 3, "902", P)},
		{"fnv1a64 key, other partition", tcfg, tview, request("GET", "h", "/carts/1?x=1&cart=alice"), routed("carts", "carts/250:499", 1, "314", P)},
		{"fnv1a64 key, percent-encoded", tcfg, tview, request("GET", "h", "/carts?cart=%61bc"), routed("carts", "carts/750:999", 3, "902", P)},
		{"query key broken encoding", tcfg, tview, request("GET", "h", "/carts?cart=%zz"), rejected("carts", resolver.InvalidPartitionKey, `query parameter "cart" has invalid percent-encoding`)},
		{"missing query key", tcfg, tview, request("GET", "h", "/carts?basket=1"), rejected("carts", resolver.MissingPartitionKey, `looked in query "cart"`)},

		// No service matches and unmatched is reject.
		{"no service", tcfg, tview, request("GET", "example.org", "/other?x=1"), rejected("", resolver.NoService, `no service matches authority "example.org" and path "/other"`)},
		{"no service, hostile input", tcfg, tview, request("GET", "a\r\nb", "/"+strings.Repeat("é", 40)), rejected("", resolver.NoService, `no service matches authority "a\r\nb" and path "/`+strings.Repeat(`\u00e9`, 31)+`\xc3"...`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := resolver.New(&resolver.State{Config: tc.cfg, Naming: tc.naming})
			checkDecision(t, tc.cfg, r.Resolve(context.Background(), tc.req), tc.want)
		})
	}
}

// fakeNaming is a naming source that fails.
type fakeNaming struct{ err error }

func (f fakeNaming) Partition(context.Context, *config.Service, keying.Key) (*resolver.Partition, error) {
	return nil, f.err
}

func TestResolveNamingFailure(t *testing.T) {
	cfg, _ := example.Load(t)
	own := &resolver.Error{Code: resolver.PartitionUnavailable, Message: "partition users-0 is being moved"}
	cases := []struct {
		name string
		err  error
		code resolver.Code
		msg  string
	}{
		// The client is told that naming is unavailable; the source's error, which names
		// internal addresses, is the cause, for logs and reports only.
		{"source unreachable", errors.New("dial tcp 127.0.0.1:2379: connection refused"), resolver.NamingUnavailable,
			"service users: naming view unavailable"},
		{"deadline", context.DeadlineExceeded, resolver.NamingUnavailable, "service users: naming view unavailable"},
		// A source that answers with an error of the table keeps its code.
		{"error of the table", own, resolver.PartitionUnavailable, "partition users-0 is being moved"},
		{"wrapped error of the table", fmt.Errorf("cache: %w", own), resolver.PartitionUnavailable, "partition users-0 is being moved"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := resolver.New(&resolver.State{Config: cfg, Naming: fakeNaming{tc.err}})
			d := r.Resolve(context.Background(), request("GET", "a.example.com", "/api/users/7"))
			if d.Err == nil || d.Err.Code != tc.code || d.Err.Message != tc.msg {
				t.Fatalf("Err = %+v, want %s %q", d.Err, tc.code, tc.msg)
			}
			if tc.code == resolver.NamingUnavailable {
				if !errors.Is(d.Err, tc.err) || d.Report().Cause != tc.err.Error() {
					t.Errorf("Err %v and report cause %q do not carry the source's error %v", d.Err, d.Report().Cause, tc.err)
				}
			}
			if d.Service == nil || d.Service.Name != "users" || d.Partition != nil {
				t.Errorf("decision %+v, want service users and no partition", d)
			}
			if d.Key.Int != 7 {
				t.Errorf("key %d, want 7: the key is read before the naming source is asked", d.Key.Int)
			}
		})
	}
	// Requests that never reach the naming source do not see its failure.
	r := resolver.New(&resolver.State{Config: cfg, Naming: fakeNaming{errors.New("down")}})
	if d := r.Resolve(context.Background(), request("GET", "a.example.com", "/api/users/x")); d.Err == nil || d.Err.Code != resolver.InvalidPartitionKey {
		t.Errorf("a bad key with the naming source down gave %+v, want invalid_partition_key", d.Err)
	}
	if d := r.Resolve(context.Background(), request("GET", "example.org", "/")); d.Err != nil || d.Service != nil {
		t.Errorf("an unmatched request with the naming source down gave %+v", d)
	}
}

func TestResolverSwap(t *testing.T) {
	cfg, view := example.Load(t)
	first := &resolver.State{Config: cfg, Naming: view}
	r := resolver.New(first)
	if r.State() != first {
		t.Fatal("State is not the state given to New")
	}
	req := request("PUT", "a.example.com", "/api/users/30")
	if d := r.Resolve(context.Background(), req); d.Err != nil {
		t.Fatalf("before the swap: %v", d.Err)
	}
	second := &resolver.State{Config: cfg, Naming: unhealthyView(t, cfg)}
	r.Swap(second)
	if r.State() != second {
		t.Fatal("State is not the swapped state")
	}
	if d := r.Resolve(context.Background(), req); d.Err == nil || d.Err.Code != resolver.PartitionUnavailable {
		t.Fatalf("after the swap: %+v, want partition_unavailable", d.Err)
	}
}

func TestResolveDoesNotAllocate(t *testing.T) {
	cfg, view := example.Load(t)
	r := resolver.New(&resolver.State{Config: cfg, Naming: view})
	ctx := context.Background()
	cases := []struct {
		name string
		req  *keying.Request
	}{
		{"header key", request("GET", "api.example.com", "/api/users", "x-user-id", "17")},
		{"header key, write", request("PUT", "api.example.com", "/api/users", "x-user-id", "26", "x-partroute-consistency", "strong")},
		{"path key", request("GET", "api.example.com:443", "/api/users/7")},
		{"name key", request("GET", "h", "/api/regions/us")},
		{"singleton", request("GET", "h", "/api/settings")},
		{"hashed cookie", request("GET", "h", "/api/sessions", "cookie", "session=abc")},
	}
	for _, tc := range cases {
		if d := r.Resolve(ctx, tc.req); d.Err != nil || d.Partition == nil {
			t.Fatalf("%s: %+v", tc.name, d)
		}
		allocs := testing.AllocsPerRun(100, func() { _ = r.Resolve(ctx, tc.req) })
		if allocs != 0 {
			t.Errorf("%s: Resolve allocates %v times per request, want 0", tc.name, allocs)
		}
	}
}

func BenchmarkResolve(b *testing.B) {
	cfg, view := example.Load(b)
	r := resolver.New(&resolver.State{Config: cfg, Naming: view})
	ctx := context.Background()
	req := request("GET", "api.example.com", "/api/users", "x-user-id", "17")
	b.ReportAllocs()
	for b.Loop() {
		if d := r.Resolve(ctx, req); d.Partition == nil {
			b.Fatal("not routed")
		}
	}
}
