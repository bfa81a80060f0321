package main

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"

	"github.com/partroute/partroute/resolver"
)

// cliRange is the partition report of a uniformInt64 partition.
func cliRange(id string, index int, low, high int64) *resolver.PartitionReport {
	return &resolver.PartitionReport{ID: id, Index: index, LowKey: &low, HighKey: &high}
}

// cliReplicas lists replicas as address/role pairs, all healthy: a report lists only the
// replicas a request may land on.
func cliReplicas(pairs ...string) []resolver.ReplicaReport {
	var out []resolver.ReplicaReport
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, resolver.ReplicaReport{Address: pairs[i], Role: pairs[i+1], Healthy: true})
	}
	return out
}

// cliRejected is the report of a rejected request.
func cliRejected(status int, code, message string) resolver.Report {
	return resolver.Report{Error: &resolver.ErrorReport{Status: status, Code: code, Message: message}}
}

func TestCLIResolve(t *testing.T) {
	ex := []string{"-config", cliExampleConfig}
	sick := []string{"-config", cliExampleConfig, "-naming", "testdata/unhealthy-naming.yaml"}
	td := []string{"-config", cliTestConfig}
	const (
		usersMissing = `no partition key in the request; looked in path "/api/users/{id}", header "x-user-id", query "user"`
		needBody     = "the service keys on the request body and none was given"
	)
	cases := []struct {
		name  string
		flags []string
		args  []string
		code  int
		want  resolver.Report
	}{
		// uniformInt64 with the int64 transform, from the path, a header and the query.
		{"path key", ex, []string{"GET", "http://api.example.com/api/users/7"}, 0, resolver.Report{
			Service: "users", Key: "7", Partition: cliRange("users-0", 0, 0, 8), Role: "any",
			Replicas: cliReplicas("127.0.0.1:8081", "primary", "127.0.0.1:8082", "secondary")}},
		{"path key, write, port", ex, []string{"PUT", "http://api.example.com:8080/api/users/20"}, 0, resolver.Report{
			Service: "users", Key: "20", Partition: cliRange("users-2", 2, 18, 25), Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8086", "primary")}},
		{"lower-case method", ex, []string{"delete", "https://a.example.com/api/users/33"}, 0, resolver.Report{
			Service: "users", Key: "33", Partition: cliRange("users-3", 3, 26, 33), Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8088", "primary")}},
		{"header key, authority from Host", append(ex, "-H", "Host: api.example.com", "-H", "X-User-Id: 17"), []string{"GET", "/api/users"}, 0, resolver.Report{
			Service: "users", Key: "17", Partition: cliRange("users-1", 1, 9, 17), Role: "any",
			Replicas: cliReplicas("127.0.0.1:8084", "primary", "127.0.0.1:8085", "secondary")}},
		{"query key", ex, []string{"GET", "http://a.example.com/api/users?user=26"}, 0, resolver.Report{
			Service: "users", Key: "26", Partition: cliRange("users-3", 3, 26, 33), Role: "any",
			Replicas: cliReplicas("127.0.0.1:8088", "primary")}},
		{"strong read", append(ex, "-H", "x-partroute-consistency: strong"), []string{"GET", "http://api.example.com/api/users/7"}, 0, resolver.Report{
			Service: "users", Key: "7", Partition: cliRange("users-0", 0, 0, 8), Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8081", "primary")}},

		// The hash transform: xxhash64 over the full range from a cookie or a header, and each
		// hash function named explicitly.
		{"cookie key, secondary read", append(ex, "-H", "Cookie: theme=dark; session=abc"), []string{"GET", "http://h/api/sessions"}, 0, resolver.Report{
			Service: "sessions", Key: "-4270488912965203559", Partition: cliRange("sessions/-9223372036854775808:-1", 0, math.MinInt64, -1), Role: "secondary",
			Replicas: cliReplicas("127.0.0.1:8072", "secondary")}},
		{"hashed header key, write", append(ex, "-H", "x-session: cart-7"), []string{"POST", "http://h/api/sessions"}, 0, resolver.Report{
			Service: "sessions", Key: "8850301778677941569", Partition: cliRange("sessions/0:9223372036854775807", 1, 0, math.MaxInt64), Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8073", "primary")}},
		{"fnv1a64", td, []string{"GET", "http://shop.example.com/basket?cart=abc"}, 0, resolver.Report{
			Service: "carts", Key: "902", Partition: cliRange("carts/750:999", 3, 750, 999), Role: "primary",
			Replicas: cliReplicas("10.0.1.4:7000", "primary")}},
		{"fnv1a64, other partition", td, []string{"GET", "http://SHOP.example.com:80/?x=1&cart=alice"}, 0, resolver.Report{
			Service: "carts", Key: "314", Partition: cliRange("carts/250:499", 1, 250, 499), Role: "primary",
			Replicas: cliReplicas("10.0.1.2:7000", "primary")}},
		{"xxhash64", append(td, "-H", "x-token: abc"), []string{"GET", "http://h/tokens"}, 0, resolver.Report{
			Service: "tokens", Key: "268", Partition: cliRange("tokens-a", 0, 0, 499), Role: "any",
			Replicas: cliReplicas("10.0.2.1:7000", "primary", "10.0.2.2:7000", "secondary")}},
		{"xxhash64, other partition", append(td, "-H", "x-token: cart-7"), []string{"PUT", "http://h/tokens/t"}, 0, resolver.Report{
			Service: "tokens", Key: "979", Partition: cliRange("tokens-b", 1, 500, 999), Role: "primary",
			Replicas: cliReplicas("10.0.2.3:7000", "primary")}},

		// named with the name transform, and singleton.
		{"name key", ex, []string{"GET", "http://h/api/regions/eu"}, 0, resolver.Report{
			Service: "regions", Key: "eu", Partition: &resolver.PartitionReport{ID: "regions/eu", Index: 0, Name: "eu"}, Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8091", "primary")}},
		{"name key, deeper path", ex, []string{"PATCH", "http://h/api/regions/apac/x"}, 0, resolver.Report{
			Service: "regions", Key: "apac", Partition: &resolver.PartitionReport{ID: "regions/apac", Index: 2, Name: "apac"}, Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8094", "primary")}},
		{"singleton", ex, []string{"GET", "http://h/api/settings"}, 0, resolver.Report{
			Service: "settings", Partition: &resolver.PartitionReport{ID: "settings", Index: 0}, Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8099", "primary")}},

		// The JSON body, given inline or from a file.
		{"body key, write", append(td, "-d", `{"customer": {"id": 12}}`), []string{"POST", "http://h/orders"}, 0, resolver.Report{
			Service: "orders", Key: "12", Partition: cliRange("orders/1:34", 0, 1, 34), Role: "primary",
			Replicas: cliReplicas("10.0.0.1:7000", "primary")}},
		{"body key, secondary read", append(td, "-d", `{"customer": {"id": "3"}}`), []string{"GET", "http://h/orders/3"}, 0, resolver.Report{
			Service: "orders", Key: "3", Partition: cliRange("orders/1:34", 0, 1, 34), Role: "secondary",
			Replicas: cliReplicas("10.0.0.2:7000", "secondary")}},
		{"body from a file, fallback to the primary", append(td, "-d", "@testdata/order.json"), []string{"GET", "http://h/orders"}, 0, resolver.Report{
			Service: "orders", Key: "50", Partition: cliRange("orders/35:67", 1, 35, 67), Role: "primary",
			Replicas: cliReplicas("10.0.0.3:7000", "primary")}},
		{"body needed", td, []string{"POST", "http://h/orders"}, 0, resolver.Report{Service: "orders", Message: needBody}},

		// Unmatched requests under passthrough.
		{"passthrough", ex, []string{"GET", "http://example.org/"}, 0, resolver.Report{
			Passthrough: true, Message: "no service matches; the request passes through, with the partition, role and key headers removed"}},
		{"passthrough, wildcard needs a subdomain", ex, []string{"GET", "http://example.com/api/users/7"}, 0, resolver.Report{
			Passthrough: true, Message: "no service matches; the request passes through, with the partition, role and key headers removed"}},

		// Each rejection that needs no server.
		{"missing key", ex, []string{"GET", "http://api.example.com/api/users"}, 2,
			cliRejected(400, "missing_partition_key", usersMissing)},
		{"plus sign", ex, []string{"GET", "http://api.example.com/api/users/+1"}, 2,
			cliRejected(400, "invalid_partition_key", `path "/api/users/{id}": "+1" is not a decimal int64 (digits with an optional leading -, within the int64 range)`)},
		{"exponent", ex, []string{"GET", "http://api.example.com/api/users/1e3"}, 2,
			cliRejected(400, "invalid_partition_key", `path "/api/users/{id}": "1e3" is not a decimal int64 (digits with an optional leading -, within the int64 range)`)},
		{"invalid header key", append(ex, "-H", "x-user-id: 0x10"), []string{"GET", "http://api.example.com/api/users"}, 2,
			cliRejected(400, "invalid_partition_key", `header "x-user-id": "0x10" is not a decimal int64 (digits with an optional leading -, within the int64 range)`)},
		{"body not JSON", append(td, "-d", "id=12"), []string{"POST", "http://h/orders"}, 2,
			cliRejected(400, "invalid_partition_key", `jsonBody "/customer/id": request body is not valid JSON`)},
		{"key out of range", ex, []string{"GET", "http://api.example.com/api/users/34"}, 2,
			cliRejected(400, "partition_key_out_of_range", `path "/api/users/{id}": key 34 is outside [0, 33]`)},
		{"negative key out of range", ex, []string{"GET", "http://api.example.com/api/users?user=-1"}, 2,
			cliRejected(400, "partition_key_out_of_range", `query "user": key -1 is outside [0, 33]`)},
		{"unknown name", ex, []string{"GET", "http://h/api/regions/asia"}, 2,
			cliRejected(400, "partition_key_out_of_range", `path "/api/regions/{region}": "asia" is not a partition name of this service`)},
		{"no healthy primary", sick, []string{"PUT", "http://api.example.com/api/users/30"}, 2,
			cliRejected(503, "partition_unavailable", "partition users-3 of service users has no healthy primary replica")},
		{"no healthy secondary, fallback to the primary", append(sick, "-H", "cookie: session=abc"), []string{"GET", "http://h/api/sessions"}, 0, resolver.Report{
			Service: "sessions", Key: "-4270488912965203559", Partition: cliRange("sessions/-9223372036854775808:-1", 0, math.MinInt64, -1), Role: "primary",
			Replicas: cliReplicas("127.0.0.1:8071", "primary")}},
		{"no service", td, []string{"GET", "http://example.org/x?y=1"}, 2,
			cliRejected(404, "no_service", `no service matches authority "example.org" and path "/x"`)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"resolve"}, tc.flags...), tc.args...)
			r := cliRun(args...)
			if r.code != tc.code {
				t.Errorf("exit code %d, want %d\nstderr: %s", r.code, tc.code, r.stderr)
			}
			if r.stderr != "" {
				t.Errorf("stderr: %s", r.stderr)
			}
			if !strings.HasPrefix(r.stdout, "{\n  \"") || !strings.HasSuffix(r.stdout, "}\n") {
				t.Errorf("stdout is not indented JSON on its own lines:\n%s", r.stdout)
			}
			dec := json.NewDecoder(strings.NewReader(r.stdout))
			dec.DisallowUnknownFields()
			var got resolver.Report
			if err := dec.Decode(&got); err != nil {
				t.Fatalf("stdout is not a report: %v\n%s", err, r.stdout)
			}
			if !reflect.DeepEqual(got, tc.want) {
				gotJSON, _ := json.Marshal(got)
				wantJSON, _ := json.Marshal(tc.want)
				t.Errorf("report\n%s\nwant\n%s", gotJSON, wantJSON)
			}
		})
	}
}

// TestCLIResolveErrorShape checks the exact fields of a rejection as the CLI prints it.
func TestCLIResolveErrorShape(t *testing.T) {
	r := cliRun("resolve", "-config", cliExampleConfig, "GET", "http://api.example.com/api/users/x")
	if r.code != 2 {
		t.Fatalf("exit code %d, want 2", r.code)
	}
	var shape map[string]map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &shape); err != nil {
		t.Fatal(err)
	}
	e := shape["error"]
	if len(shape) != 1 || len(e) != 3 || e["status"] != float64(400) || e["code"] != "invalid_partition_key" || e["message"] == "" {
		t.Errorf("output %s, want exactly {\"error\":{\"status\",\"code\",\"message\"}}", r.stdout)
	}
}

// TestCLIResolveOutputIsPlainJSON checks that input bytes cannot break the output: the
// output is one JSON document whatever the request holds.
func TestCLIResolveOutputIsPlainJSON(t *testing.T) {
	for _, target := range []string{
		"http://h/api/regions/%0A%22x",
		"http://api.example.com/api/users/%E2%80%AE1",
		"http://h/" + strings.Repeat("%C3%A9", 100),
	} {
		r := cliRun("resolve", "-config", cliTestConfig, "GET", target)
		dec := json.NewDecoder(bytes.NewReader([]byte(r.stdout)))
		var v any
		if err := dec.Decode(&v); err != nil || dec.More() {
			t.Errorf("%s: output is not one JSON document: %v\n%s", target, err, r.stdout)
		}
	}
}
