package servicefabric

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestServiceID(t *testing.T) {
	good := map[string]string{
		"fabric:/app/svc":           "app~svc",
		"fabric:/myapp/app1/svc1":   "myapp~app1~svc1",
		"fabric:/Shop.App/Users-V2": "Shop.App~Users-V2",
	}
	for name, want := range good {
		if got, err := ServiceID(name); err != nil || got != want {
			t.Errorf("ServiceID(%q) = %q, %v; want %q", name, got, err, want)
		}
	}
	bad := []string{"", "app/svc", "fabric:app/svc", "fabric:/app", "fabric:/", "fabric:/app//svc", "fabric:/app/svc/",
		"fabric:/app/s~vc", "fabric:/app/s vc", "fabric:/app/s?vc", "fabric:/app/s#vc", "fabric:/app/s%2Fvc", "Fabric:/app/svc"}
	for _, name := range bad {
		if got, err := ServiceID(name); err == nil {
			t.Errorf("ServiceID(%q) = %q, want an error", name, got)
		}
	}
}

func TestNewClientValidation(t *testing.T) {
	for _, tc := range []struct {
		name string
		opts ClientOptions
		want string
	}{
		{"no endpoint", ClientOptions{}, "naming.servicefabric.endpoint: missing"},
		{"not http", ClientOptions{Endpoint: "tcp://host:19000"}, "not an http or https URL"},
		{"query", ClientOptions{Endpoint: "https://host:19080/?x=1"}, "without user, query or fragment"},
		{"tls on http", ClientOptions{Endpoint: "http://host:19080", TLS: TLSOptions{ServerThumbprint: strings.Repeat("a", 40)}}, "naming.servicefabric.tls: set for"},
		{"retries", ClientOptions{Endpoint: "http://host:19080", Retries: MaxRetries + 1}, "naming.servicefabric.retries: 11 is outside 0 to 10"},
		{"negative retries", ClientOptions{Endpoint: "http://host:19080", Retries: -1}, "naming.servicefabric.retries"},
		{"timeout", ClientOptions{Endpoint: "http://host:19080", Timeout: -time.Second}, "naming.servicefabric.timeout"},
		{"concurrency", ClientOptions{Endpoint: "http://host:19080", MaxConcurrent: -2}, "naming.servicefabric.maxConcurrent"},
		{"api version", ClientOptions{Endpoint: "http://host:19080", APIVersion: "latest"}, "naming.servicefabric.apiVersion"},
		{"backoff", ClientOptions{Endpoint: "http://host:19080", BackoffBase: time.Second, BackoffMax: time.Millisecond}, "backoff base"},
		{"cert without key", ClientOptions{Endpoint: "https://host:19080", TLS: TLSOptions{CertFile: "c.pem"}}, "cert and key go together"},
		{"missing ca", ClientOptions{Endpoint: "https://host:19080", TLS: TLSOptions{CAFile: "/nonexistent/ca.pem"}}, "naming.servicefabric.tls.ca"},
		{"thumbprint", ClientOptions{Endpoint: "https://host:19080", TLS: TLSOptions{ServerThumbprint: "abc"}}, "serverThumbprint"},
		{"injected client and tls", ClientOptions{Endpoint: "https://host:19080", HTTPClient: http.DefaultClient, TLS: TLSOptions{ServerThumbprint: strings.Repeat("a", 40)}}, "injected HTTP client"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewClient(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewClient: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	c, err := NewClient(ClientOptions{Endpoint: "https://gw.example:19080/sf/"})
	if err != nil {
		t.Fatal(err)
	}
	if c.base != "https://gw.example:19080/sf" || c.apiVersion != DefaultAPIVersion || c.timeout != DefaultTimeout || cap(c.sem) != DefaultMaxConcurrent || c.timeoutArg != "2" {
		t.Errorf("defaults: base %q api %q timeout %s concurrency %d arg %s", c.base, c.apiVersion, c.timeout, cap(c.sem), c.timeoutArg)
	}
}

func TestResolvePartitionKinds(t *testing.T) {
	gw, srv := newGateway(t)
	gw.standard()
	c, _ := testClient(t, srv.URL, nil, nil)
	ctx := context.Background()

	res, err := c.ResolvePartition(ctx, "shop~users", KindInt64Range, "0", "")
	if err != nil {
		t.Fatal(err)
	}
	want := PartitionInformation{Kind: KindInt64Range, ID: users0, LowKey: 0, HighKey: 8}
	if res.Name != "fabric:/shop/users" || res.Partition != want || res.Version != "132587449886596373" || len(res.Endpoints) != 3 {
		t.Fatalf("users [0, 8]: %+v", res)
	}
	if e := res.Endpoints[0]; e.Kind != EndpointStatefulPrimary || e.Address != `{"Endpoints":{"":"http:\/\/10.0.0.4:8080"}}` {
		t.Errorf("endpoint 0: %+v", e)
	}

	res, err = c.ResolvePartition(ctx, "shop~regions", KindNamed, "eu", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := (PartitionInformation{Kind: KindNamed, ID: regionEU, Name: "eu"}); res.Partition != want {
		t.Errorf("regions eu: %+v", res.Partition)
	}

	res, err = c.ResolvePartition(ctx, "shop~settings", KindSingleton, "", "")
	if err != nil {
		t.Fatal(err)
	}
	if want := (PartitionInformation{Kind: KindSingleton, ID: settings}); res.Partition != want {
		t.Errorf("settings: %+v", res.Partition)
	}

	// The query carries exactly the documented parameters.
	reqs := gw.requests("/Services/shop~users/$/ResolvePartition")
	if len(reqs) != 1 {
		t.Fatalf("%d requests", len(reqs))
	}
	q := reqs[0].URL.Query()
	if q.Get("api-version") != "6.0" || q.Get("PartitionKeyType") != "2" || q.Get("PartitionKeyValue") != "0" || q.Has("PreviousRspVersion") || q.Get("timeout") != "5" {
		t.Errorf("query %s", reqs[0].URL.RawQuery)
	}
	if q := gw.requests("/Services/shop~settings/")[0].URL.Query(); q.Get("PartitionKeyType") != "1" || q.Has("PartitionKeyValue") {
		t.Errorf("singleton query %v", q)
	}

	// Local mistakes fail before any request.
	for _, tc := range []struct {
		kind PartitionKind
		key  string
	}{{KindInt64Range, "12a"}, {KindNamed, ""}, {KindSingleton, "x"}, {"Hashed", "1"}} {
		if _, err := c.ResolvePartition(ctx, "shop~users", tc.kind, tc.key, ""); err == nil {
			t.Errorf("ResolvePartition(%s, %q) succeeded", tc.kind, tc.key)
		}
	}
}

func TestPreviousVersionIsSent(t *testing.T) {
	gw, srv := newGateway(t)
	gw.standard()
	c, _ := testClient(t, srv.URL, nil, nil)
	if _, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "v1+/=&x"); err != nil {
		t.Fatal(err)
	}
	if got := gw.requests("/Services/shop~users/")[0].URL.Query().Get("PreviousRspVersion"); got != "v1+/=&x" {
		t.Errorf("PreviousRspVersion arrived as %q", got)
	}
}

func TestRetriesOn503ThenSuccess(t *testing.T) {
	gw, srv := newGateway(t)
	gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0",
		reply{status: 503, file: "error-service-offline.json"},
		reply{status: 500, body: "internal"},
		ok("resolve-users-0-v1.json"))
	reg := prometheus.NewRegistry()
	c, w := testClient(t, srv.URL, reg, func(o *ClientOptions) { o.Jitter = func() float64 { return 0.5 } })
	res, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "")
	if err != nil {
		t.Fatalf("after two failures and two retries: %v", err)
	}
	if res.Partition.ID != users0 {
		t.Errorf("id %s", res.Partition.ID)
	}
	// Jittered exponential: retry n waits between half and all of base*2^(n-1).
	if got, want := w.list(), []time.Duration{37500 * time.Microsecond, 75 * time.Millisecond}; !reflect.DeepEqual(got, want) {
		t.Errorf("waits %v, want %v", got, want)
	}
	if n := counter(t, reg, "partroute_servicefabric_gateway_retries_total", map[string]string{"op": opResolve}); n != 2 {
		t.Errorf("retries metric %v", n)
	}
	if n := counter(t, reg, "partroute_servicefabric_gateway_requests_total", map[string]string{"op": opResolve, "result": "server_error"}); n != 2 {
		t.Errorf("server_error metric %v", n)
	}
}

func TestRetriesAreBounded(t *testing.T) {
	gw, srv := newGateway(t)
	gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0", reply{status: 503, file: "error-service-offline.json"})
	c, w := testClient(t, srv.URL, nil, func(o *ClientOptions) { o.Retries = 3 })
	_, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "")
	var ge *GatewayError
	if !errors.As(err, &ge) {
		t.Fatalf("error %T %v, want *GatewayError", err, err)
	}
	if ge.StatusCode != 503 || ge.Code != "FABRIC_E_SERVICE_OFFLINE" || ge.Attempts != 4 || !ge.Temporary() || ge.Target != "shop~users" {
		t.Errorf("%+v", ge)
	}
	if !strings.Contains(err.Error(), "503 FABRIC_E_SERVICE_OFFLINE") || !strings.Contains(err.Error(), "after 4 attempts") {
		t.Errorf("message %q", err)
	}
	if n := len(gw.requests("/Services/")); n != 4 {
		t.Errorf("%d requests, want 1 + 3 retries", n)
	}
	if len(w.list()) != 3 {
		t.Errorf("waits %v", w.list())
	}
}

func TestNoRetryOn4xx(t *testing.T) {
	gw, srv := newGateway(t)
	gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0", reply{status: 404, file: "error-service-does-not-exist.json"})
	c, w := testClient(t, srv.URL, nil, nil)
	_, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "")
	var ge *GatewayError
	if !errors.As(err, &ge) || ge.StatusCode != 404 || ge.Code != "FABRIC_E_SERVICE_DOES_NOT_EXIST" || ge.Attempts != 1 || ge.Temporary() {
		t.Fatalf("error %v (%+v)", err, ge)
	}
	if n := len(gw.requests("/Services/")); n != 1 || len(w.list()) != 0 {
		t.Errorf("%d requests and waits %v, want one request and no retry", n, w.list())
	}
}

func TestTimeoutIsRetried(t *testing.T) {
	gw, srv := newGateway(t)
	gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0", reply{hang: true}, ok("resolve-users-0-v1.json"))
	reg := prometheus.NewRegistry()
	c, _ := testClient(t, srv.URL, reg, func(o *ClientOptions) { o.Timeout = 50 * time.Millisecond })
	if _, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", ""); err != nil {
		t.Fatalf("after a timeout and a retry: %v", err)
	}
	if n := counter(t, reg, "partroute_servicefabric_gateway_requests_total", map[string]string{"op": opResolve, "result": "timeout"}); n != 1 {
		t.Errorf("timeout metric %v", n)
	}

	// Timeouts every time: the error says so and unwraps to DeadlineExceeded.
	gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0", reply{hang: true})
	_, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "")
	var ge *GatewayError
	if !errors.As(err, &ge) || !errors.Is(err, context.DeadlineExceeded) || ge.Attempts != 3 || !strings.Contains(err.Error(), "no answer within 50ms") {
		t.Errorf("error %v", err)
	}
}

func TestCallerDeadlineStopsRetries(t *testing.T) {
	gw, srv := newGateway(t)
	gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0", reply{hang: true})
	c, w := testClient(t, srv.URL, nil, func(o *ClientOptions) { o.Retries = MaxRetries })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	_, err := c.ResolvePartition(ctx, "shop~users", KindInt64Range, "0", "")
	if err == nil || !strings.Contains(err.Error(), "abandoned") {
		t.Fatalf("error %v, want the call abandoned at the caller's deadline", err)
	}
	// The one request may or may not have reached the gateway by the deadline; no retry may
	// follow it either way.
	if n := len(gw.requests("/Services/")); n > 1 || len(w.list()) != 0 {
		t.Errorf("%d requests, waits %v: the caller's deadline must end the retries", n, w.list())
	}
}

func TestConnectionErrorIsRetried(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	c, w := testClient(t, url, nil, nil)
	_, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "")
	var ge *GatewayError
	if !errors.As(err, &ge) || ge.StatusCode != 0 || ge.Err == nil || ge.Attempts != 3 || len(w.list()) != 2 {
		t.Fatalf("error %v (%+v), waits %v", err, ge, w.list())
	}
}

// The malformed answers below each break one field of the REST reference's
// ResolvedServicePartition (sfclient-model-resolvedservicepartition).
func TestMalformedResolution(t *testing.T) {
	const id = `"Id":"` + users0 + `"`
	for _, tc := range []struct {
		name, body, want string
	}{
		{"empty body", ``, "unexpected end of JSON input"},
		{"truncated", `{"Name":"fabric:/shop/users","PartitionInformation":{"ServicePartitionKind":"Int64Range",` + id, "unexpected end of JSON input"},
		{"not an object", `[1,2,3]`, "cannot unmarshal array"},
		{"no partition information", `{"Name":"fabric:/shop/users","Endpoints":[],"Version":"1"}`, "PartitionInformation is missing"},
		{"no endpoints", `{"PartitionInformation":{"ServicePartitionKind":"Singleton",` + id + `},"Version":"1"}`, "Endpoints list is missing"},
		{"unknown kind", `{"PartitionInformation":{"ServicePartitionKind":"Hashed",` + id + `},"Endpoints":[]}`, `ServicePartitionKind "Hashed"`},
		{"invalid kind", `{"PartitionInformation":{"ServicePartitionKind":"Invalid",` + id + `},"Endpoints":[]}`, `ServicePartitionKind "Invalid"`},
		{"low key not a number", `{"PartitionInformation":{"ServicePartitionKind":"Int64Range",` + id + `,"LowKey":"zero","HighKey":"8"},"Endpoints":[]}`, `LowKey "zero" is not an int64`},
		{"high key overflows", `{"PartitionInformation":{"ServicePartitionKind":"Int64Range",` + id + `,"LowKey":"0","HighKey":"9223372036854775808"},"Endpoints":[]}`, "HighKey"},
		{"high key missing", `{"PartitionInformation":{"ServicePartitionKind":"Int64Range",` + id + `,"LowKey":"0"},"Endpoints":[]}`, "HighKey is missing"},
		{"low above high", `{"PartitionInformation":{"ServicePartitionKind":"Int64Range",` + id + `,"LowKey":"9","HighKey":"8"},"Endpoints":[]}`, "LowKey 9 is above HighKey 8"},
		{"key an object", `{"PartitionInformation":{"ServicePartitionKind":"Int64Range",` + id + `,"LowKey":{},"HighKey":"8"},"Endpoints":[]}`, "neither a string nor a number"},
		{"named without name", `{"PartitionInformation":{"ServicePartitionKind":"Named",` + id + `},"Endpoints":[]}`, "Named partition without a Name"},
		{"id not a guid", `{"PartitionInformation":{"ServicePartitionKind":"Singleton","Id":"users-0\r\nx-partition-role: primary"},"Endpoints":[]}`, "is not a GUID"},
		{"endpoints not a list", `{"PartitionInformation":{"ServicePartitionKind":"Singleton",` + id + `},"Endpoints":{"Kind":"Stateless"}}`, "cannot unmarshal object"},
		{"version a number", `{"PartitionInformation":{"ServicePartitionKind":"Singleton",` + id + `},"Endpoints":[],"Version":7}`, "cannot unmarshal number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gw, srv := newGateway(t)
			gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=1", reply{status: 200, body: tc.body})
			c, w := testClient(t, srv.URL, nil, nil)
			_, err := c.ResolvePartition(context.Background(), "shop~users", KindSingleton, "", "")
			var de *DecodeError
			if !errors.As(err, &de) || de.Op != opResolve || de.Target != "shop~users" {
				t.Fatalf("error %T %v, want a *DecodeError naming the call", err, err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "ResolvePartition shop~users: malformed answer") {
				t.Errorf("message %q, want it to contain %q", err, tc.want)
			}
			if len(w.list()) != 0 {
				t.Errorf("a malformed answer was retried")
			}
		})
	}
	// Numbers are taken for LowKey and HighKey as the text they were written with.
	r, err := decodeResolution([]byte(`{"PartitionInformation":{"ServicePartitionKind":"Int64Range","Id":"` + strings.ToUpper(users0) + `","LowKey":-9223372036854775808,"HighKey":9223372036854775807},"Endpoints":[]}`))
	if err != nil || r.Partition.LowKey != -9223372036854775808 || r.Partition.HighKey != 9223372036854775807 || r.Partition.ID != users0 {
		t.Errorf("numeric keys: %+v, %v", r, err)
	}
}

func TestGatewayErrorBodies(t *testing.T) {
	gw, srv := newGateway(t)
	c, _ := testClient(t, srv.URL, nil, func(o *ClientOptions) { o.Retries = 0 })
	for _, tc := range []struct {
		body, want string
	}{
		{`{"Error":{"Code":"FABRIC_E_SERVICE_DOES_NOT_EXIST","Message":"Service does not exist."}}`, `404 FABRIC_E_SERVICE_DOES_NOT_EXIST: "Service does not exist."`},
		{`<html>Not Found</html>`, `404: "<html>Not Found</html>"`},
		{`{"Error":{"Code":"x\ny","Message":""}}`, `404 "x\ny"`},
		{``, `gateway answered 404`},
	} {
		gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=1", reply{status: 404, body: tc.body})
		_, err := c.ResolvePartition(context.Background(), "shop~users", KindSingleton, "", "")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("body %q: error %v, want it to contain %s", tc.body, err, tc.want)
		}
	}
}

func TestPagination(t *testing.T) {
	gw, srv := newGateway(t)
	gw.standard()
	c, _ := testClient(t, srv.URL, nil, nil)
	ctx := context.Background()

	parts, err := c.Partitions(ctx, "shop~users")
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, p := range parts {
		ids = append(ids, p.Partition.ID)
	}
	if !reflect.DeepEqual(ids, []string{users0, users1, users2, users3}) {
		t.Errorf("partitions %v", ids)
	}
	if p := parts[1]; p.ServiceKind != "Stateful" || p.HealthState != "Warning" || p.PartitionStatus != "Ready" || p.Partition.LowKey != 9 || p.Partition.HighKey != 17 {
		t.Errorf("partition 1: %+v", p)
	}
	reqs := gw.requests("/Services/shop~users/$/GetPartitions")
	if len(reqs) != 2 || reqs[0].URL.Query().Has("ContinuationToken") || !strings.Contains(reqs[1].URL.RawQuery, "ContinuationToken="+users1) {
		t.Errorf("partition requests: %v", reqs)
	}

	reps, err := c.Replicas(ctx, users0)
	if err != nil {
		t.Fatal(err)
	}
	if len(reps) != 5 {
		t.Fatalf("%d replicas, want 5 over two pages", len(reps))
	}
	want := ReplicaInfo{ServiceKind: "Stateful", ReplicaRole: "Primary", ReplicaStatus: "Ready", HealthState: "Ok", NodeName: "_Node_0",
		Address: `{"Endpoints":{"":"http:\/\/10.0.0.4:8080"}}`, ID: "131462720131239151"}
	if reps[0] != want {
		t.Errorf("replica 0: %+v", reps[0])
	}
	if r := gw.requests("/Partitions/" + users0)[1]; !strings.Contains(r.URL.RawQuery, "ContinuationToken=131462720131239152") {
		t.Errorf("second replica page asked with %q", r.URL.RawQuery)
	}

	insts, err := c.Replicas(ctx, catalog)
	if err != nil || len(insts) != 3 || insts[0].ServiceKind != "Stateless" || insts[0].ID != "131462720131260001" || insts[0].ReplicaRole != "" {
		t.Errorf("stateless instances: %+v, %v", insts, err)
	}

	if _, err := c.Replicas(ctx, "../../Services"); err == nil {
		t.Error("a partition id that is not a GUID was sent")
	}
}

func TestPaginationStopsOnRepeatedToken(t *testing.T) {
	gw, srv := newGateway(t)
	loop := `{"ContinuationToken":"again","Items":[]}`
	gw.on("/Services/shop~users/$/GetPartitions", reply{status: 200, body: loop})
	gw.on("/Services/shop~users/$/GetPartitions?ContinuationToken=again", reply{status: 200, body: loop})
	c, _ := testClient(t, srv.URL, nil, nil)
	_, err := c.Partitions(context.Background(), "shop~users")
	var de *DecodeError
	if !errors.As(err, &de) || !strings.Contains(err.Error(), `continuation token "again" came back a second time`) {
		t.Fatalf("error %v", err)
	}
}

func TestContinuationValue(t *testing.T) {
	for in, want := range map[string]string{
		users1:                 users1,
		"fabric:/shop/users":   "fabric:/shop/users",
		"131462720131239152":   "131462720131239152",
		"a b&c=d+e#f%":         "a+b%26c%3Dd%2Be%23f%25",
		"AAAA/BBBB==":          "AAAA%2FBBBB%3D%3D",
		"one;two,three(four)*": "one;two,three(four)*",
	} {
		if got := continuationValue(in); got != want {
			t.Errorf("continuationValue(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMaxConcurrent(t *testing.T) {
	gw, srv := newGateway(t)
	gw.standard()
	gate, arrived := make(chan struct{}), make(chan struct{}, 8)
	gw.mu.Lock()
	gw.gate, gw.arrived = gate, arrived
	gw.mu.Unlock()
	c, _ := testClient(t, srv.URL, nil, func(o *ClientOptions) { o.MaxConcurrent = 2 })
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.ResolvePartition(context.Background(), "shop~users", KindInt64Range, "0", "")
			errs <- err
		}()
	}
	// Two requests reach the gateway and hold their slots; the others wait for one.
	<-arrived
	<-arrived
	close(gate)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	gw.mu.Lock()
	defer gw.mu.Unlock()
	if gw.maxInflight != 2 || len(gw.log) != 8 {
		t.Errorf("max in flight %d over %d requests, want 2 over 8", gw.maxInflight, len(gw.log))
	}
}

func TestBackoffBounds(t *testing.T) {
	for _, j := range []float64{0, 0.999999} {
		c, err := NewClient(ClientOptions{Endpoint: "http://gw:19080", BackoffBase: 100 * time.Millisecond, BackoffMax: time.Second, Jitter: func() float64 { return j }})
		if err != nil {
			t.Fatal(err)
		}
		for n := 1; n <= 64; n++ {
			ceil := min(100*time.Millisecond<<min(n-1, 20), time.Second)
			if d := c.backoffFor(n); d < ceil/2 || d > ceil {
				t.Errorf("jitter %v retry %d: %s outside [%s, %s]", j, n, d, ceil/2, ceil)
			}
		}
	}
}
