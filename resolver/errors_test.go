package resolver_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/partroute/partroute/resolver"
)

// TestCodeTable pins the error table of the design: the code name in the JSON body, the HTTP
// status and whether a retry-after header goes with it.
func TestCodeTable(t *testing.T) {
	cases := []struct {
		code       resolver.Code
		name       string
		status     int
		retryAfter bool
	}{
		{resolver.OK, "ok", 200, false},
		{resolver.MissingPartitionKey, "missing_partition_key", 400, false},
		{resolver.InvalidPartitionKey, "invalid_partition_key", 400, false},
		{resolver.PartitionKeyOutOfRange, "partition_key_out_of_range", 400, false},
		{resolver.PartitionUnavailable, "partition_unavailable", 503, true},
		{resolver.NamingUnavailable, "naming_unavailable", 503, true},
		{resolver.NoService, "no_service", 404, false},
		{resolver.BodyTooLarge, "request_body_too_large", 413, false},
		{resolver.RequestHeadersTooLarge, "request_headers_too_large", 431, false},
		// A code outside the table is an internal error, never a success.
		{resolver.Code(200), "unknown", 500, false},
		{resolver.Code(255), "unknown", 500, false},
	}
	for _, tc := range cases {
		if got := tc.code.String(); got != tc.name {
			t.Errorf("Code(%d).String() = %q, want %q", tc.code, got, tc.name)
		}
		if got := tc.code.Status(); got != tc.status {
			t.Errorf("%s.Status() = %d, want %d", tc.name, got, tc.status)
		}
		if got := tc.code.RetryAfter(); got != tc.retryAfter {
			t.Errorf("%s.RetryAfter() = %v, want %v", tc.name, got, tc.retryAfter)
		}
	}
	if resolver.RetryAfterSeconds != "1" {
		t.Errorf("RetryAfterSeconds = %q, want 1", resolver.RetryAfterSeconds)
	}
}

func TestCodes(t *testing.T) {
	want := []resolver.Code{
		resolver.OK, resolver.MissingPartitionKey, resolver.InvalidPartitionKey, resolver.PartitionKeyOutOfRange,
		resolver.PartitionUnavailable, resolver.NamingUnavailable, resolver.NoService, resolver.BodyTooLarge,
		resolver.RequestHeadersTooLarge,
	}
	if got := resolver.Codes(); !reflect.DeepEqual(got, want) {
		t.Errorf("Codes() = %v, want %v", got, want)
	}
	seen := map[string]bool{}
	for _, c := range resolver.Codes() {
		if c.String() == "unknown" || seen[c.String()] {
			t.Errorf("code %d has the name %q, unknown or repeated", c, c)
		}
		seen[c.String()] = true
	}
}

func TestErrorString(t *testing.T) {
	e := &resolver.Error{Code: resolver.PartitionKeyOutOfRange, Message: "key 42 is outside [0, 33]"}
	if got, want := e.Error(), "partition_key_out_of_range: key 42 is outside [0, 33]"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestErrorBody(t *testing.T) {
	cases := []struct {
		err  *resolver.Error
		want string
	}{
		{&resolver.Error{Code: resolver.MissingPartitionKey, Message: `no partition key in the request; looked in header "x-user-id"`},
			`{"error":{"code":"missing_partition_key","message":"no partition key in the request; looked in header \"x-user-id\""}}`},
		{&resolver.Error{Code: resolver.PartitionUnavailable, Message: "partition users-0 of service users has no healthy primary replica"},
			`{"error":{"code":"partition_unavailable","message":"partition users-0 of service users has no healthy primary replica"}}`},
		// The body is JSON whatever the message holds.
		{&resolver.Error{Code: resolver.NoService, Message: "<script>\n\x00é"},
			`{"error":{"code":"no_service","message":"\u003cscript\u003e\n\u0000é"}}`},
		{&resolver.Error{Code: resolver.BodyTooLarge, Message: ""},
			`{"error":{"code":"request_body_too_large","message":""}}`},
	}
	for _, tc := range cases {
		body := resolver.ErrorBody(tc.err)
		if string(body) != tc.want {
			t.Errorf("ErrorBody = %s, want %s", body, tc.want)
		}
		// The shape is exactly {"error":{"code","message"}}: the status is in the response,
		// not the body.
		var shape map[string]map[string]any
		if err := json.Unmarshal(body, &shape); err != nil {
			t.Fatalf("ErrorBody is not JSON: %v", err)
		}
		if len(shape) != 1 || len(shape["error"]) != 2 || shape["error"]["code"] != tc.err.Code.String() || shape["error"]["message"] != tc.err.Message {
			t.Errorf("ErrorBody shape %v", shape)
		}
	}
}
