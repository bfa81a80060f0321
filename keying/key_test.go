package keying_test

import (
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/partroute/partroute/keying"
)

// mustSource builds a source or stops the test.
func mustSource(t testing.TB, kind keying.SourceKind, arg string) keying.Source {
	t.Helper()
	s, err := keying.NewSource(kind, arg)
	if err != nil {
		t.Fatalf("NewSource(%v, %q): %v", kind, arg, err)
	}
	return s
}

// mustUniform builds a uniformInt64 scheme or stops the test.
func mustUniform(t testing.TB, low, high int64, count int) *keying.Scheme {
	t.Helper()
	s, err := keying.NewUniformInt64(low, high, count)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// mustKeyer builds a keyer or stops the test.
func mustKeyer(t testing.TB, scheme *keying.Scheme, tr keying.Transform, h keying.HashFunc, sources ...keying.Source) *keying.Keyer {
	t.Helper()
	k, err := keying.NewKeyer(scheme, sources, tr, h)
	if err != nil {
		t.Fatalf("NewKeyer: %v", err)
	}
	return k
}

// request builds a request the way the ext_proc handler does: Path is the :path header, and
// the headers include the pseudo-headers.
func request(path string, headers ...string) *keying.Request {
	hl := keying.HeaderList{
		{Name: ":method", Value: "GET"},
		{Name: ":path", Value: path},
		{Name: ":authority", Value: "api.example.com"},
		{Name: ":scheme", Value: "https"},
	}
	for i := 0; i+1 < len(headers); i += 2 {
		hl = append(hl, keying.Header{Name: headers[i], Value: headers[i+1]})
	}
	return &keying.Request{Method: "GET", Authority: "api.example.com", Path: path, Headers: hl}
}

// withBody adds a body to a request.
func withBody(r *keying.Request, body string) *keying.Request {
	r.Body = []byte(body)
	return r
}

// outcome is what one Partition call should give: a partition index and key, or a failure with
// message fragments.
type outcome struct {
	index     int
	key       int64
	reason    keying.Reason
	fragments []string
}

func ok(index int, key int64) outcome { return outcome{index: index, key: key} }

func fail(r keying.Reason, fragments ...string) outcome {
	return outcome{reason: r, fragments: fragments}
}

// checkOutcome runs Partition and compares the result with want.
func checkOutcome(t *testing.T, k *keying.Keyer, req *keying.Request, want outcome) {
	t.Helper()
	got, f := k.Partition(req)
	if want.reason == 0 {
		if f != nil {
			t.Fatalf("Partition failed with %v (%v), want partition %d key %d", f.Reason, f, want.index, want.key)
		}
		if got.Index != want.index || got.Int != want.key || got.Name != "" {
			t.Fatalf("Partition = %+v, want partition %d key %d", got, want.index, want.key)
		}
		return
	}
	if f == nil {
		t.Fatalf("Partition = %+v, want a failure %v", got, want.reason)
	}
	if f.Reason != want.reason {
		t.Errorf("Partition failed with reason %v (%q), want %v", f.Reason, f.Message, want.reason)
	}
	if got != (keying.Key{}) {
		t.Errorf("a failure came with key %+v, want the zero key", got)
	}
	if f.Error() != f.Message {
		t.Errorf("Error() = %q, Message = %q", f.Error(), f.Message)
	}
	for _, frag := range want.fragments {
		if !strings.Contains(f.Message, frag) {
			t.Errorf("failure message %q does not contain %q", f.Message, frag)
		}
	}
	checkPrintable(t, f.Message)
}

// checkPrintable fails when a message carries a control byte or a byte outside ASCII.
func checkPrintable(t *testing.T, msg string) {
	t.Helper()
	for i := 0; i < len(msg); i++ {
		if msg[i] < 0x20 || msg[i] > 0x7e {
			t.Errorf("message %q has the raw byte %#02x at %d", msg, msg[i], i)
			return
		}
	}
}

// TestReasonsAreDistinct guards checkOutcome, which takes the zero reason for success: every
// reason must be non-zero and different from the others.
func TestReasonsAreDistinct(t *testing.T) {
	seen := map[keying.Reason]bool{0: true}
	for _, r := range []keying.Reason{keying.Missing, keying.Invalid, keying.OutOfRange} {
		if seen[r] {
			t.Errorf("reason %d is zero or repeated", r)
		}
		seen[r] = true
	}
}

func TestKeyerPathSource(t *testing.T) {
	k := mustKeyer(t, mustUniform(t, 0, 33, 4), keying.TransformInt64, 0,
		mustSource(t, keying.SourcePath, "/api/users/{id}"))
	tests := []struct {
		path string
		want outcome
	}{
		{"/api/users/0", ok(0, 0)},
		{"/api/users/8", ok(0, 8)},
		{"/api/users/9", ok(1, 9)},
		{"/api/users/17", ok(1, 17)},
		{"/api/users/18", ok(2, 18)},
		{"/api/users/25", ok(2, 25)},
		{"/api/users/26", ok(3, 26)},
		{"/api/users/33", ok(3, 33)},
		{"/api/users/42/orders?x=1", fail(keying.OutOfRange, `path "/api/users/{id}"`, "key 42 is outside [0, 33]")},
		{"/api/users/4%32", fail(keying.OutOfRange, "key 42 is outside [0, 33]")},
		{"/api/users/%33%33", ok(3, 33)},
		{"/api/users/007", ok(0, 7)},
		{"/api/users/-0", ok(0, 0)},
		{"/api/users/-1", fail(keying.OutOfRange, "key -1 is outside [0, 33]")},
		{"/api/users/34", fail(keying.OutOfRange, "key 34 is outside")},
		{"/api/users/%zz", fail(keying.Invalid, `path "/api/users/{id}": path segment {id} has invalid percent-encoding`)},
		{"/api/users/1%", fail(keying.Invalid, "invalid percent-encoding")},
		{"/api/users/%2B1", fail(keying.Invalid, `"+1" is not a decimal int64`)},
		{"/api/users/1%2F2", fail(keying.Invalid, `"1/2" is not a decimal int64`)},
		{"/api/users/abc", fail(keying.Invalid, `path "/api/users/{id}": "abc" is not a decimal int64`)},
		{"/api/users/1e1", fail(keying.Invalid, `"1e1"`)},
		{"/api/users/99999999999999999999", fail(keying.Invalid, `"99999999999999999999" is not a decimal int64`)},
		{"/api/users", fail(keying.Missing, `no partition key in the request; looked in path "/api/users/{id}"`)},
		{"/api/users/", fail(keying.Missing, "looked in path")},
		{"/api/users?id=3", fail(keying.Missing, "looked in path")},
		{"/other/3", fail(keying.Missing, "looked in path")},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			checkOutcome(t, k, request(tt.path), tt.want)
		})
	}
}

func TestKeyerHeaderSource(t *testing.T) {
	// The configured name is matched case-insensitively: Envoy sends lower-case names.
	k := mustKeyer(t, mustUniform(t, 0, 33, 4), keying.TransformInt64, 0,
		mustSource(t, keying.SourceHeader, "X-User-Id"))
	tests := []struct {
		name    string
		headers []string
		want    outcome
	}{
		{"plain", []string{"x-user-id", "12"}, ok(1, 12)},
		{"first value wins", []string{"x-user-id", "30", "x-user-id", "1"}, ok(3, 30)},
		{"other headers ignored", []string{"x-user", "1", "x-user-idx", "2", "x-user-id", "20"}, ok(2, 20)},
		{"empty value does not yield", []string{"x-user-id", ""}, fail(keying.Missing, `looked in header "x-user-id"`)},
		// The first header of the name decides, even when it is empty: a later one of the same
		// name is not consulted.
		{"first value wins when empty", []string{"x-user-id", "", "x-user-id", "5"}, fail(keying.Missing, `header "x-user-id"`)},
		{"absent", []string{"x-other", "1"}, fail(keying.Missing, `header "x-user-id"`)},
		{"not lower-cased by the keyer", []string{"X-User-Id", "5"}, fail(keying.Missing, `header "x-user-id"`)},
		{"spaces", []string{"x-user-id", " 5"}, fail(keying.Invalid, `header "x-user-id": " 5" is not a decimal int64`)},
		{"plus", []string{"x-user-id", "+5"}, fail(keying.Invalid, `"+5"`)},
		{"out of range", []string{"x-user-id", "-9223372036854775808"}, fail(keying.OutOfRange, `header "x-user-id": key -9223372036854775808 is outside [0, 33]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkOutcome(t, k, request("/", tt.headers...), tt.want)
		})
	}
}

func TestKeyerQuerySource(t *testing.T) {
	k := mustKeyer(t, mustUniform(t, 0, 33, 4), keying.TransformInt64, 0,
		mustSource(t, keying.SourceQuery, "user"))
	tests := []struct {
		path string
		want outcome
	}{
		{"/api?user=5", ok(0, 5)},
		{"/api?a=1&user=30&b=2", ok(3, 30)},
		{"/api?user=7&user=30", ok(0, 7)},
		{"/api?users=1&user=20", ok(2, 20)},
		{"/api?xuser=1&user=21", ok(2, 21)},
		{"/api?user=%33%30", ok(3, 30)},
		{"/api?user=1#user=30", ok(0, 1)},
		{"/api?x=1#user=30", fail(keying.Missing, `looked in query "user"`)},
		{"/api?user=+5", fail(keying.Invalid, `query "user": " 5" is not a decimal int64`)},
		{"/api?user=%2B5", fail(keying.Invalid, `"+5" is not a decimal int64`)},
		{"/api?user=%zz", fail(keying.Invalid, `query "user": query parameter "user" has invalid percent-encoding`)},
		{"/api?user=", fail(keying.Missing, `query "user"`)},
		{"/api?user", fail(keying.Missing, `query "user"`)},
		{"/api", fail(keying.Missing, `query "user"`)},
		{"/api?USER=5", fail(keying.Missing, `query "user"`)},
		{"/api?user=99", fail(keying.OutOfRange, `query "user": key 99 is outside [0, 33]`)},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			checkOutcome(t, k, request(tt.path), tt.want)
		})
	}

	// '+' decodes to a space: with the hash transform, "a+b" in a query is the key "a b".
	hk := mustKeyer(t, mustUniform(t, 0, 33, 4), keying.TransformHash, keying.FNV1a64,
		mustSource(t, keying.SourceQuery, "k"))
	checkOutcome(t, hk, request("/?k=a+b"), ok(3, 30))
	checkOutcome(t, hk, request("/?k=a%20b"), ok(3, 30))
}

func TestKeyerCookieSource(t *testing.T) {
	k := mustKeyer(t, mustUniform(t, 0, 33, 4), keying.TransformInt64, 0,
		mustSource(t, keying.SourceCookie, "uid"))
	tests := []struct {
		name    string
		headers []string
		want    outcome
	}{
		{"only cookie", []string{"cookie", "uid=12"}, ok(1, 12)},
		{"among others", []string{"cookie", "a=1; uid=20; b=2"}, ok(2, 20)},
		{"no spaces", []string{"cookie", "a=1;uid=21;b=2"}, ok(2, 21)},
		{"extra spaces", []string{"cookie", "  a=1 ;   uid=27   ; b=2"}, ok(3, 27)},
		{"quoted", []string{"cookie", `a=1; uid="9"`}, ok(1, 9)},
		{"several cookie headers", []string{"cookie", "a=1; b=2", "x-other", "3", "cookie", "uid=33"}, ok(3, 33)},
		{"first cookie wins", []string{"cookie", "uid=1", "cookie", "uid=30"}, ok(0, 1)},
		{"name is exact", []string{"cookie", "UID=1; uidx=2; xuid=3"}, fail(keying.Missing, `looked in cookie "uid"`)},
		{"value with =", []string{"cookie", "uid=1=2"}, fail(keying.Invalid, `cookie "uid": "1=2" is not a decimal int64`)},
		{"empty value", []string{"cookie", "uid="}, fail(keying.Missing, `cookie "uid"`)},
		{"empty quoted value", []string{"cookie", `uid=""`}, fail(keying.Missing, `cookie "uid"`)},
		{"no cookie header", []string{"x-uid", "5"}, fail(keying.Missing, `cookie "uid"`)},
		{"set-cookie is not a request cookie", []string{"set-cookie", "uid=5"}, fail(keying.Missing, `cookie "uid"`)},
		{"out of range", []string{"cookie", "uid=34"}, fail(keying.OutOfRange, `cookie "uid": key 34`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkOutcome(t, k, request("/", tt.headers...), tt.want)
		})
	}
}

func TestKeyerJSONBodySource(t *testing.T) {
	full := mustUniform(t, -9223372036854775808, 9223372036854775807, 5)
	small := mustUniform(t, 0, 33, 4)
	tests := []struct {
		name    string
		scheme  *keying.Scheme
		pointer string
		body    string
		want    outcome
	}{
		{"nested number", small, "/user/id", `{"user":{"id":12}}`, ok(1, 12)},
		{"nested string", small, "/user/id", `{"user": {"name": "x", "id": "17"}}`, ok(1, 17)},
		{"array index", small, "/items/1/id", `{"items":[{"id":5},{"id":30}]}`, ok(3, 30)},
		{"array index 0", small, "/items/0", `{"items":[3]}`, ok(0, 3)},
		{"top-level array", small, "/2", `[1,2,19]`, ok(2, 19)},
		{"number kept exact", full, "/id", `{"id":9007199254740993}`, ok(2, 9007199254740993)},
		{"MinInt64", full, "/id", `{"id":-9223372036854775808}`, ok(0, -9223372036854775808)},
		{"~1 and ~0 escapes", small, "/a~1b/c~0d", `{"a/b":{"c~d":7},"a":{"b":{"c~d":8}}}`, ok(0, 7)},
		{"~01 is ~1 literally", small, "/~01", `{"~1":26,"/":1}`, ok(3, 26)},
		{"empty key", small, "/", `{"":9}`, ok(1, 9)},
		{"whitespace around", small, "/id", " \n{\"id\" : 4}\n ", ok(0, 4)},
		{"missing field", small, "/user/id", `{"user":{"name":"x"}}`, fail(keying.Missing, `looked in jsonBody "/user/id"`)},
		{"missing parent", small, "/user/id", `{"account":{"id":1}}`, fail(keying.Missing, `jsonBody "/user/id"`)},
		{"index out of range", small, "/items/2", `{"items":[1,2]}`, fail(keying.Missing, "jsonBody")},
		{"negative index", small, "/items/-1", `{"items":[1,2]}`, fail(keying.Missing, "jsonBody")},
		{"index with leading zero", small, "/items/01", `{"items":[1,2]}`, fail(keying.Missing, "jsonBody")},
		{"index minus zero", small, "/items/-0", `{"items":[1,2]}`, fail(keying.Missing, "jsonBody")},
		{"index into a string", small, "/id/0", `{"id":"12"}`, fail(keying.Missing, "jsonBody")},
		{"null", small, "/id", `{"id":null}`, fail(keying.Missing, "jsonBody")},
		{"empty string", small, "/id", `{"id":""}`, fail(keying.Missing, "jsonBody")},
		{"empty body", small, "/id", ``, fail(keying.Missing, "jsonBody")},
		{"blank body", small, "/id", " \r\n\t", fail(keying.Missing, "jsonBody")},
		{"bool", small, "/id", `{"id":true}`, fail(keying.Invalid, `jsonBody "/id": JSON body field is not a string or a number`)},
		{"object", small, "/id", `{"id":{"x":1}}`, fail(keying.Invalid, "not a string or a number")},
		{"array", small, "/id", `{"id":[1]}`, fail(keying.Invalid, "not a string or a number")},
		{"malformed", small, "/id", `{"id":`, fail(keying.Invalid, `jsonBody "/id": request body is not valid JSON`)},
		{"not JSON", small, "/id", `id=5`, fail(keying.Invalid, "not valid JSON")},
		{"two values", small, "/id", `{"id":1} {"id":2}`, fail(keying.Invalid, "more than one JSON value")},
		{"fraction", small, "/id", `{"id":1.5}`, fail(keying.Invalid, `"1.5" is not a decimal int64`)},
		{"exponent", small, "/id", `{"id":1e1}`, fail(keying.Invalid, `"1e1" is not a decimal int64`)},
		{"beyond int64", full, "/id", `{"id":9223372036854775808}`, fail(keying.Invalid, `"9223372036854775808"`)},
		{"out of range", small, "/id", `{"id":34}`, fail(keying.OutOfRange, `jsonBody "/id": key 34 is outside [0, 33]`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := mustKeyer(t, tt.scheme, keying.TransformInt64, 0, mustSource(t, keying.SourceJSONBody, tt.pointer))
			if !k.NeedsBody() {
				t.Error("NeedsBody() = false for a jsonBody source")
			}
			checkOutcome(t, k, withBody(request("/"), tt.body), tt.want)
		})
	}
}

func TestKeyerSourceOrder(t *testing.T) {
	k := mustKeyer(t, mustUniform(t, 0, 33, 4), keying.TransformInt64, 0,
		mustSource(t, keying.SourcePath, "/api/users/{id}"),
		mustSource(t, keying.SourceHeader, "x-user-id"),
		mustSource(t, keying.SourceQuery, "user"),
		mustSource(t, keying.SourceCookie, "uid"),
	)
	if k.NeedsBody() {
		t.Error("NeedsBody() = true without a jsonBody source")
	}
	tests := []struct {
		name    string
		path    string
		headers []string
		want    outcome
	}{
		{"path first", "/api/users/1?user=20", []string{"x-user-id", "10", "cookie", "uid=30"}, ok(0, 1)},
		{"header when the path does not match", "/api/users?user=20", []string{"x-user-id", "10", "cookie", "uid=30"}, ok(1, 10)},
		{"query after an empty header", "/api/users?user=20", []string{"x-user-id", "", "cookie", "uid=30"}, ok(2, 20)},
		{"cookie last", "/api/users", []string{"cookie", "uid=30"}, ok(3, 30)},
		{"an invalid value stops the search", "/api/users/abc", []string{"x-user-id", "10"}, fail(keying.Invalid, `path "/api/users/{id}": "abc"`)},
		{"broken encoding stops the search", "/api/users/%zz", []string{"x-user-id", "10"}, fail(keying.Invalid, "invalid percent-encoding")},
		{"out of range stops the search", "/api/users/99", []string{"x-user-id", "10"}, fail(keying.OutOfRange, `path "/api/users/{id}": key 99`)},
		{"later source invalid", "/api/users?user=x", nil, fail(keying.Invalid, `query "user": "x"`)},
		{
			"missing names every source", "/api/users", nil,
			fail(keying.Missing, `no partition key in the request; looked in path "/api/users/{id}", header "x-user-id", query "user", cookie "uid"`),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkOutcome(t, k, request(tt.path, tt.headers...), tt.want)
		})
	}
}

func TestKeyerHashTransform(t *testing.T) {
	small := mustUniform(t, 0, 33, 4)
	full := mustUniform(t, -9223372036854775808, 9223372036854775807, 5)
	mid := mustUniform(t, -1000, 1000, 7)
	// The keys and indexes are golden values computed outside the package with the documented
	// formula; they must never change between releases.
	tests := []struct {
		value  string
		hash   keying.HashFunc
		scheme *keying.Scheme
		want   outcome
	}{
		{"user-7", keying.XXHash64, small, ok(0, 4)},
		{"42", keying.XXHash64, small, ok(1, 14)},
		{"hello world", keying.XXHash64, small, ok(1, 9)},
		{"9007199254740993", keying.XXHash64, small, ok(3, 31)},
		{"user-7", keying.FNV1a64, small, ok(3, 32)},
		{"42", keying.FNV1a64, small, ok(0, 1)},
		{"hello world", keying.FNV1a64, small, ok(1, 15)},
		{"9007199254740993", keying.FNV1a64, small, ok(2, 23)},
		{"42", keying.XXHash64, full, ok(2, -1304084766381358407)},
		{"user-7", keying.XXHash64, full, ok(0, -6814531161612923651)},
		{"hello world", keying.XXHash64, full, ok(1, -4203152351195928216)},
		{"user-7", keying.FNV1a64, full, ok(4, 8668198561777338478)},
		{"hello world", keying.FNV1a64, full, ok(2, -605059157078519065)},
		{"42", keying.XXHash64, mid, ok(3, -141)},
		{"user-7", keying.FNV1a64, mid, ok(6, 940)},
		{"9007199254740993", keying.FNV1a64, mid, ok(4, 395)},
	}
	for _, tt := range tests {
		t.Run(tt.hash.String()+"/"+tt.value, func(t *testing.T) {
			k := mustKeyer(t, tt.scheme, keying.TransformHash, tt.hash, mustSource(t, keying.SourceHeader, "x-key"))
			checkOutcome(t, k, request("/", "x-key", tt.value), tt.want)
		})
	}

	// Without a hash function the hash transform uses xxhash64.
	k := mustKeyer(t, small, keying.TransformHash, 0, mustSource(t, keying.SourceHeader, "x-key"))
	if k.Hash() != keying.XXHash64 || k.Transform() != keying.TransformHash {
		t.Errorf("keyer has transform %v hash %v, want hash xxhash64", k.Transform(), k.Hash())
	}
	checkOutcome(t, k, request("/", "x-key", "user-7"), ok(0, 4))
	// Any text hashes, so nothing is invalid; a missing key is still missing.
	checkOutcome(t, k, request("/", "x-key", "not a number +1e3"), ok(0, 4))
	checkOutcome(t, k, request("/"), fail(keying.Missing, `header "x-key"`))
}

func TestKeyerNameTransform(t *testing.T) {
	scheme, err := keying.NewNamed([]string{"eu", "us", "apac"})
	if err != nil {
		t.Fatal(err)
	}
	k := mustKeyer(t, scheme, 0, 0,
		mustSource(t, keying.SourcePath, "/api/regions/{region}"),
		mustSource(t, keying.SourceHeader, "x-region"))
	if k.Transform() != keying.TransformName {
		t.Errorf("a named scheme's default transform is %v, want name", k.Transform())
	}
	tests := []struct {
		name    string
		path    string
		headers []string
		index   int
		reason  keying.Reason
		frag    string
	}{
		{"path", "/api/regions/us/x", nil, 1, 0, ""},
		{"percent-encoded", "/api/regions/%61pac", nil, 2, 0, ""},
		{"header", "/api/regions", []string{"x-region", "eu"}, 0, 0, ""},
		{"case-sensitive", "/api/regions/EU", nil, 0, keying.OutOfRange, `path "/api/regions/{region}": "EU" is not a partition name of this service`},
		{"unknown", "/", []string{"x-region", "mars"}, 0, keying.OutOfRange, `header "x-region": "mars" is not a partition name`},
		{"missing", "/", nil, 0, keying.Missing, `looked in path "/api/regions/{region}", header "x-region"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(tt.path, tt.headers...)
			got, f := k.Partition(req)
			if tt.reason != 0 {
				checkOutcome(t, k, req, fail(tt.reason, tt.frag))
				return
			}
			if f != nil {
				t.Fatalf("Partition failed: %v", f)
			}
			want := scheme.Names()[tt.index]
			if got.Index != tt.index || got.Name != want || got.Int != 0 {
				t.Fatalf("Partition = %+v, want index %d name %q", got, tt.index, want)
			}
			// The name is the scheme's own string, never a view of request memory.
			if unsafe.StringData(got.Name) != unsafe.StringData(want) {
				t.Errorf("Key.Name does not share the scheme's copy of %q", want)
			}
		})
	}
}

func TestKeyerSingleton(t *testing.T) {
	k := mustKeyer(t, keying.NewSingleton(), 0, 0)
	for _, req := range []*keying.Request{
		{},
		request("/api/users/42", "x-user-id", "7"),
		withBody(request("/"), "not json"),
	} {
		got, f := k.Partition(req)
		if f != nil || got != (keying.Key{}) {
			t.Errorf("singleton Partition = %+v, %v; want the zero key", got, f)
		}
	}
	if len(k.Sources()) != 0 || k.NeedsBody() {
		t.Errorf("singleton keyer has sources %v, NeedsBody %v", k.Sources(), k.NeedsBody())
	}
}

func TestNewKeyerErrors(t *testing.T) {
	uniform := mustUniform(t, 0, 33, 4)
	named, err := keying.NewNamed([]string{"eu"})
	if err != nil {
		t.Fatal(err)
	}
	header := mustSource(t, keying.SourceHeader, "x-key")
	tests := []struct {
		name      string
		scheme    *keying.Scheme
		sources   []keying.Source
		transform keying.Transform
		hash      keying.HashFunc
		field     string
		fragment  string
	}{
		{"named with int64", named, []keying.Source{header}, keying.TransformInt64, 0, "key.transform", "int64 does not fit a named scheme; use name"},
		{"named with hash", named, []keying.Source{header}, keying.TransformHash, 0, "key.transform", "hash does not fit a named scheme"},
		{"uniform with name", uniform, []keying.Source{header}, keying.TransformName, 0, "key.transform", "name does not fit a uniformInt64 scheme"},
		{"hash with int64", uniform, []keying.Source{header}, keying.TransformInt64, keying.FNV1a64, "key.hash", "the transform is int64, not hash"},
		{"hash with default int64", uniform, []keying.Source{header}, 0, keying.XXHash64, "key.hash", "the transform is int64"},
		{"hash with name", named, []keying.Source{header}, keying.TransformName, keying.XXHash64, "key.hash", "the transform is name"},
		{"singleton with sources", keying.NewSingleton(), []keying.Source{header}, 0, 0, "key.sources", "a singleton service reads no key"},
		{"uniform without sources", uniform, nil, keying.TransformInt64, 0, "key.sources", "a uniformInt64 service needs at least one key source"},
		{"named without sources", named, []keying.Source{}, 0, 0, "key.sources", "a named service needs at least one key source"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := keying.NewKeyer(tt.scheme, tt.sources, tt.transform, tt.hash)
			if err == nil {
				t.Fatalf("NewKeyer = %+v, want an error", k)
			}
			checkFieldError(t, err, tt.field, tt.fragment)
		})
	}
}

func TestNewKeyerDefaults(t *testing.T) {
	header := mustSource(t, keying.SourceHeader, "x-key")
	k := mustKeyer(t, mustUniform(t, 0, 33, 4), 0, 0, header)
	if k.Transform() != keying.TransformInt64 {
		t.Errorf("a uniformInt64 scheme's default transform is %v, want int64", k.Transform())
	}
	if k.Scheme().Kind() != keying.UniformInt64 || len(k.Sources()) != 1 || k.Sources()[0].Name != "x-key" {
		t.Errorf("keyer has scheme %v and sources %v", k.Scheme().Kind(), k.Sources())
	}
}

func TestNewSource(t *testing.T) {
	tests := []struct {
		kind     keying.SourceKind
		arg      string
		name     string // the normalised name, when arg is valid
		fragment string // part of the error, when arg is invalid
	}{
		{keying.SourceHeader, "X-User-ID", "x-user-id", ""},
		{keying.SourceHeader, "x_user.id~!#$%&'*+^`|", "x_user.id~!#$%&'*+^`|", ""},
		{keying.SourceHeader, "", "", "header source needs a value"},
		{keying.SourceHeader, ":path", "", `header ":path" is not a valid header name`},
		{keying.SourceHeader, "x user", "", "not a valid header name"},
		{keying.SourceHeader, "x-user:", "", "not a valid header name"},
		{keying.SourceHeader, "x-üser", "", "not a valid header name"},
		{keying.SourceQuery, "user", "user", ""},
		{keying.SourceQuery, "a=b", "", `query name "a=b" holds a separator character`},
		{keying.SourceQuery, "a&b", "", "separator"},
		{keying.SourceQuery, "a#", "", "separator"},
		{keying.SourceQuery, "", "", "query source needs a value"},
		{keying.SourceCookie, "uid", "uid", ""},
		{keying.SourceCookie, "a;b", "", `cookie name "a;b" holds a separator character`},
		{keying.SourceCookie, "a b", "", "separator"},
		{keying.SourcePath, "/api/users/{id}", "/api/users/{id}", ""},
		{keying.SourcePath, "/api/users", "", "has no {variable}"},
		{keying.SourcePath, "", "", "path source needs a value"},
		{keying.SourceJSONBody, "/user/id", "/user/id", ""},
		{keying.SourceJSONBody, "user/id", "", "must start with /"},
		{keying.SourceJSONBody, "/a~2", "", "has a ~ that is not ~0 or ~1"},
		{keying.SourceJSONBody, "/a~", "", "has a ~ that is not ~0 or ~1"},
		{0, "x", "", "unknown key source kind 0"},
		{42, "x", "", "unknown key source kind 42"},
	}
	for _, tt := range tests {
		s, err := keying.NewSource(tt.kind, tt.arg)
		if tt.fragment == "" {
			if err != nil {
				t.Errorf("NewSource(%v, %q): %v", tt.kind, tt.arg, err)
			} else if s.Kind != tt.kind || s.Name != tt.name {
				t.Errorf("NewSource(%v, %q) = %v %q, want %v %q", tt.kind, tt.arg, s.Kind, s.Name, tt.kind, tt.name)
			}
			continue
		}
		if err == nil {
			t.Errorf("NewSource(%v, %q) = %v, want an error", tt.kind, tt.arg, s)
		} else if !strings.Contains(err.Error(), tt.fragment) {
			t.Errorf("NewSource(%v, %q) error %q does not contain %q", tt.kind, tt.arg, err, tt.fragment)
		}
	}
}

func TestEnumNames(t *testing.T) {
	sources := map[keying.SourceKind]string{
		keying.SourcePath: "path", keying.SourceHeader: "header", keying.SourceQuery: "query",
		keying.SourceCookie: "cookie", keying.SourceJSONBody: "jsonBody", 0: "unknown",
	}
	for k, want := range sources {
		if got := k.String(); got != want {
			t.Errorf("SourceKind(%d).String() = %q, want %q", k, got, want)
		}
	}
	for _, tr := range []keying.Transform{keying.TransformInt64, keying.TransformHash, keying.TransformName} {
		if got, ok := keying.ParseTransform(tr.String()); !ok || got != tr {
			t.Errorf("ParseTransform(%q) = %v, %v; want %v", tr.String(), got, ok, tr)
		}
	}
	if keying.TransformInt64.String() != "int64" || keying.TransformHash.String() != "hash" ||
		keying.TransformName.String() != "name" || keying.Transform(0).String() != "unknown" {
		t.Errorf("transform names are %q %q %q %q", keying.TransformInt64, keying.TransformHash, keying.TransformName, keying.Transform(0))
	}
	for _, s := range []string{"", "Int64", "uint64", "names"} {
		if tr, ok := keying.ParseTransform(s); ok {
			t.Errorf("ParseTransform(%q) = %v, true; want false", s, tr)
		}
	}
}

func TestKeyAppendText(t *testing.T) {
	tests := []struct {
		key  keying.Key
		kind keying.SchemeKind
		want string
	}{
		{keying.Key{Index: 1, Int: 42}, keying.UniformInt64, "prefix=42"},
		{keying.Key{Index: 0, Int: -9223372036854775808}, keying.UniformInt64, "prefix=-9223372036854775808"},
		{keying.Key{Index: 0, Int: 0}, keying.UniformInt64, "prefix=0"},
		{keying.Key{Index: 2, Name: "apac"}, keying.Named, "prefix=apac"},
		{keying.Key{Index: 2, Int: 5, Name: "apac"}, keying.Singleton, "prefix="},
		{keying.Key{Int: 5}, 0, "prefix="},
	}
	for _, tt := range tests {
		if got := string(tt.key.AppendText([]byte("prefix="), tt.kind)); got != tt.want {
			t.Errorf("%+v.AppendText(%v) = %q, want %q", tt.key, tt.kind, got, tt.want)
		}
	}
}

// TestFailureMessagesAreSafe checks that request bytes reach failure messages only quoted,
// escaped to ASCII and cut short.
func TestFailureMessagesAreSafe(t *testing.T) {
	int64Keyer := mustKeyer(t, mustUniform(t, 0, 33, 4), keying.TransformInt64, 0,
		mustSource(t, keying.SourceHeader, "x-user-id"))
	named, err := keying.NewNamed([]string{"eu"})
	if err != nil {
		t.Fatal(err)
	}
	nameKeyer := mustKeyer(t, named, keying.TransformName, 0, mustSource(t, keying.SourceHeader, "x-user-id"))

	long := strings.Repeat("7", 10000)
	tests := []struct {
		name  string
		k     *keying.Keyer
		value string
		frag  []string
	}{
		{"newline", int64Keyer, "4\n2", []string{`"4\n2" is not a decimal int64`}},
		{"NUL and escape", int64Keyer, "\x00\x1b[31m", []string{`"\x00\x1b[31m"`}},
		{"non-ASCII", int64Keyer, "４２\u2028", []string{`"\uff14\uff12\u2028"`}},
		{"invalid UTF-8", int64Keyer, "\xff\xfe", []string{`"\xff\xfe"`}},
		{"long", int64Keyer, long, []string{`"` + long[:64] + `"...`}},
		{"long name", nameKeyer, long, []string{`"` + long[:64] + `"... is not a partition name`}},
		{"name with CRLF", nameKeyer, "eu\r\nx-partition-id: 1", []string{`"eu\r\nx-partition-id: 1"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, f := tt.k.Partition(request("/", "x-user-id", tt.value))
			if f == nil {
				t.Fatalf("value %q was accepted", tt.value)
			}
			for _, frag := range tt.frag {
				if !strings.Contains(f.Message, frag) {
					t.Errorf("message %q does not contain %q", f.Message, frag)
				}
			}
			checkPrintable(t, f.Message)
			if len(f.Message) > 300 {
				t.Errorf("message is %d bytes long: %q", len(f.Message), f.Message)
			}
			if strings.Contains(f.Message, long[:65]) {
				t.Errorf("message carries more than 64 bytes of the value: %q", f.Message)
			}
			var target *keying.Failure
			if !errors.As(error(f), &target) || target != f {
				t.Errorf("a *Failure is not usable as an error")
			}
		})
	}
}

func TestCookie(t *testing.T) {
	h := keying.HeaderList{{"accept", "*/*"}, {"cookie", "a=1; ryw=\"v1.x\""}, {"cookie", "b=2; empty="}}
	for _, c := range []struct {
		name, want string
		ok         bool
	}{
		{"a", "1", true}, {"ryw", "v1.x", true}, {"b", "2", true}, {"empty", "", false}, {"c", "", false}, {"accept", "", false},
	} {
		if got, ok := keying.Cookie(h, c.name); got != c.want || ok != c.ok {
			t.Errorf("Cookie(%q) = %q, %v, want %q, %v", c.name, got, ok, c.want, c.ok)
		}
	}
	if _, ok := keying.Cookie(nil, "a"); ok {
		t.Error("Cookie of no headers found one")
	}
}
