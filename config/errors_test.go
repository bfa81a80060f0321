package config_test

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
)

// wantErr is one expected validation error: its exact path, a fragment of its message, and the
// marker comment (such as "#a") on the line it must report; an empty mark means line 0.
type wantErr struct {
	path, fragment, mark string
}

// fieldErrors parses doc and returns its validation errors, failing the test when there are
// none.
func fieldErrors(t *testing.T, doc string) []config.FieldError {
	t.Helper()
	c, err := config.Parse([]byte(doc), "/etc/partroute/partroute.yaml")
	if err == nil {
		t.Fatalf("Parse accepted:\n%s", doc)
	}
	if c != nil {
		t.Errorf("Parse returned a configuration along with an error")
	}
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %T is not *config.Errors: %v", err, err)
	}
	if errs.File != "/etc/partroute/partroute.yaml" {
		t.Errorf("Errors.File = %q", errs.File)
	}
	return errs.List
}

// lineOf returns the 1-based line of doc holding mark, or 0 for an empty mark.
func lineOf(t *testing.T, doc, mark string) int {
	t.Helper()
	if mark == "" {
		return 0
	}
	for i, l := range strings.Split(doc, "\n") {
		if strings.Contains(l, mark) {
			return i + 1
		}
	}
	t.Fatalf("no line holds marker %q", mark)
	return 0
}

// checkErrors compares the errors of doc with want, in order.
func checkErrors(t *testing.T, doc string, want []wantErr) {
	t.Helper()
	got := fieldErrors(t, doc)
	if len(got) != len(want) {
		t.Errorf("%d errors, want %d:\n%s", len(got), len(want), describe(got))
	}
	for i := 0; i < len(got) && i < len(want); i++ {
		g, w := got[i], want[i]
		line := lineOf(t, doc, w.mark)
		if g.Path != w.path || !strings.Contains(g.Message, w.fragment) || g.Line != line {
			t.Errorf("error %d = %q (line %d), want path %q, line %d, message containing %q", i, g.Path+": "+g.Message, g.Line, w.path, line, w.fragment)
		}
	}
}

func describe(list []config.FieldError) string {
	var b strings.Builder
	for _, e := range list {
		fmt.Fprintf(&b, "  %s\n", e.Error())
	}
	return b.String()
}

// Service snippets that are valid on their own, for building files around one mistake.
const (
	head  = "naming: {file: naming.yaml}\nservices:\n"
	users = `  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 33, count: 4}
    key: {sources: [{path: "/api/users/{id}"}]}
`
)

func TestParseErrors(t *testing.T) {
	cases := []struct {
		name string
		doc  string
		want []wantErr
	}{
		// The YAML itself.
		// A file that is not YAML gets that one error: checking what could not be read would
		// only add noise.
		{"not YAML", "services: [\n", []wantErr{{"", "not valid YAML", ""}}},
		{"tab indentation", "naming:\n\tfile: n.yaml\n", []wantErr{{"", "not valid YAML", ""}}},
		{"document is a list", "- a\n- b\n", []wantErr{{"naming.file", "needs a file", ""}, {"", "want a mapping, found a list", "- a"}}},
		{"document is a scalar", "hello\n", []wantErr{{"naming.file", "needs a file", ""}, {"", `want a mapping, found "hello"`, "hello"}}},

		// Unknown fields, at several depths.
		{"unknown top-level field", "naming: {file: n.yaml}\nlistenn: {} #a\n",
			[]wantErr{{"listenn", "unknown field; known fields here: listen, naming, cache, headers, unmatched, maxBodyBytes, limits, services", "#a"}}},
		{"unknown listen field", "naming: {file: n.yaml}\nlisten:\n  grpc: 1.2.3.4:5 #a\n",
			[]wantErr{{"listen.grpc", "known fields here: extproc, xds, admin, tls", "#a"}}},
		{"unknown listen.tls field", "naming: {file: n.yaml}\nlisten:\n  tls:\n    grpc: {} #a\n",
			[]wantErr{{"listen.tls.grpc", "known fields here: extproc, xds, admin", "#a"}}},
		{"unknown field of a listener's tls", "naming: {file: n.yaml}\nlisten:\n  tls:\n    extproc: {cert: c.pem, key: k.pem, ca: ca.pem} #a\n",
			[]wantErr{{"listen.tls.extproc.ca", "known fields here: cert, key, clientCA, requireClientCert, nodeID", "#a"}}},
		{"unknown cache field", "naming: {file: n.yaml}\ncache: {size: 1, maxAge: 1s} #a\n",
			[]wantErr{{"cache.maxAge", "known fields here: size, ttl, staleIfError, resolveTimeout", "#a"}}},
		{"unknown match field", head + "  - name: s\n    match: {pathPrefix: /s, host: a.example.com} #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].match.host", "unknown field; known fields here: authority, pathPrefix", "#a"}}},
		{"unknown key source field", head + users + "  - name: t\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 1, count: 1}\n    key:\n      sources:\n        - {header: x-t, name: y} #a\n",
			[]wantErr{{"services[1].key.sources[0].name", "known fields here: path, header, query, cookie, jsonBody", "#a"}}},
		{"unknown partitioning field", head + "  - name: s\n    partitioning:\n      scheme: singleton\n      partitions: 1 #a\n",
			[]wantErr{{"services[0].partitioning.partitions", "known fields here: scheme, lowKey, highKey, count, names", "#a"}}},
		{"unknown service field", head + "  - name: s\n    partitioning: {scheme: singleton}\n    cluster: s #a\n",
			[]wantErr{{"services[0].cluster", "known fields here: name, match, partitioning, key, replicas", "#a"}}},

		// Repeated keys.
		{"repeated top-level key", "naming: {file: n.yaml}\nunmatched: reject\nunmatched: passthrough #a\n",
			[]wantErr{{"unmatched", "appears more than once", "#a"}}},
		{"repeated service key", head + "  - {name: a, name: b, partitioning: {scheme: singleton}} #a\n",
			[]wantErr{{"services[0].name", "appears more than once", "#a"}}},
		{"repeated nested key", head + "  - name: s\n    partitioning:\n      scheme: singleton\n      scheme: named #a\n",
			[]wantErr{{"services[0].partitioning.scheme", "appears more than once", "#a"}}},

		// Wrong types and shapes.
		{"string count", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: four} #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.count", "cannot unmarshal !!str `four` into int", "#a"}}},
		{"fractional lowKey", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0.5, highKey: 9, count: 1} #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.lowKey", `want a whole number, found "0.5"`, "#a"}}},
		{"count in exponent notation", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1e1} #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.count", `want a whole number, found "1e1"`, "#a"}}},
		{"fractional maxBodyBytes", "naming: {file: n.yaml}\nmaxBodyBytes: 1.5 #a\n",
			[]wantErr{{"maxBodyBytes", `want a whole number, found "1.5"`, "#a"}}},
		{"fractional duration", "naming: {file: n.yaml}\ncache: {ttl: 1.5} #a\n",
			[]wantErr{{"cache.ttl", "cannot unmarshal !!float `1.5` into time.Duration", "#a"}}},
		{"string count on a singleton", head + "  - name: s\n    partitioning: {scheme: singleton, count: one} #a\n",
			[]wantErr{{"services[0].partitioning.count", "cannot unmarshal !!str `one` into int", "#a"}}},
		{"lowKey beyond int64", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9223372036854775808, count: 1} #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.highKey", "cannot unmarshal", "#a"}}},
		{"services is a mapping", "naming: {file: n.yaml}\nservices: {name: a} #a\n",
			[]wantErr{{"services", "want a list, found a mapping", "#a"}}},
		{"listen is a scalar", "naming: {file: n.yaml}\nlisten: 5 #a\n",
			[]wantErr{{"listen", `want a mapping, found "5"`, "#a"}}},
		{"name is a list", head + "  - {name: [a], partitioning: {scheme: singleton}} #a\n",
			[]wantErr{{"services[0].name", "want a single value, found a list", "#a"}, {"services[0].name", "every service needs a name", "#a"}}},
		{"names is a scalar", head + "  - {name: r, partitioning: {scheme: named, names: eu}, key: {sources: [{header: x}]}} #a\n",
			[]wantErr{{"services[0].partitioning.names", "want a list", "#a"}, {"services[0].partitioning.names", "at least one name", "#a"}}},
		{"ttl without unit", "naming: {file: n.yaml}\ncache: {ttl: 30} #a\n",
			[]wantErr{{"cache.ttl", "into time.Duration", "#a"}}},
		{"ttl not a duration", "naming: {file: n.yaml}\ncache: {ttl: soon} #a\n",
			[]wantErr{{"cache.ttl", "time.Duration", "#a"}}},
		{"size is a string", "naming: {file: n.yaml}\ncache:\n  size: lots #a\n",
			[]wantErr{{"cache.size", "cannot unmarshal !!str `lots` into int", "#a"}}},

		// Listen addresses.
		{"extproc not host:port", "naming: {file: n.yaml}\nlisten: {extproc: localhost} #a\n",
			[]wantErr{{"listen.extproc", `"localhost" is not host:port`, "#a"}}},
		{"extproc socket path relative", "naming: {file: n.yaml}\nlisten: {extproc: \"unix:run/extproc.sock\"} #a\n",
			[]wantErr{{"listen.extproc", "the socket path must be absolute", "#a"}}},
		{"extproc socket path too long", "naming: {file: n.yaml}\nlisten: {extproc: \"unix:/run/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa.sock\"} #a\n",
			[]wantErr{{"listen.extproc", "the socket path is 120 bytes, above the 107 a unix socket takes", "#a"}}},
		{"admin on a unix socket", "naming: {file: n.yaml}\nlisten: {admin: \"unix:/run/admin.sock\"} #a\n",
			[]wantErr{{"listen.admin", "a unix socket is for listen.extproc only", "#a"}}},
		{"xds port out of range", "naming: {file: n.yaml}\nlisten:\n  xds: 127.0.0.1:70000 #a\n",
			[]wantErr{{"listen.xds", `has port "70000", not a number from 0 to 65535`, "#a"}}},
		{"admin port not a number", "naming: {file: n.yaml}\nlisten:\n  admin: 127.0.0.1:http #a\n",
			[]wantErr{{"listen.admin", `has port "http"`, "#a"}}},

		// Listen TLS.
		{"tls cert without key", "naming: {file: n.yaml}\nlisten:\n  tls:\n    extproc: {cert: c.pem} #a\n",
			[]wantErr{{"listen.tls.extproc.key", "is required with cert", "#a"}}},
		{"tls key without cert", "naming: {file: n.yaml}\nlisten:\n  tls:\n    admin: {key: k.pem} #a\n",
			[]wantErr{{"listen.tls.admin.cert", "is required: a TLS listener serves a certificate", "#a"}}},
		{"tls empty", "naming: {file: n.yaml}\nlisten:\n  tls:\n    extproc: {} #a\n",
			[]wantErr{{"listen.tls.extproc.cert", "is required", "#a"}}},
		{"requireClientCert without clientCA", "naming: {file: n.yaml}\nlisten:\n  tls:\n    extproc:\n      cert: c.pem\n      key: k.pem\n      requireClientCert: true #a\n",
			[]wantErr{{"listen.tls.extproc.clientCA", "is required with requireClientCert: true", "#a"}}},
		{"tls for an xds server that is off", "naming: {file: n.yaml}\nlisten:\n  tls:\n    xds: {cert: c.pem, key: k.pem} #a\n",
			[]wantErr{{"listen.tls.xds", "is set but listen.xds is empty", "#a"}}},
		{"nodeID on another listener", "naming: {file: n.yaml}\nlisten:\n  tls:\n    extproc: {cert: c.pem, key: k.pem, nodeID: any} #a\n",
			[]wantErr{{"listen.tls.extproc.nodeID", "is only for listen.tls.xds", "#a"}}},
		{"nodeID unknown", "naming: {file: n.yaml}\nlisten:\n  xds: 127.0.0.1:1\n  tls:\n    xds: {cert: c.pem, key: k.pem, clientCA: ca.pem, requireClientCert: true, nodeID: cn} #a\n",
			[]wantErr{{"listen.tls.xds.nodeID", `"cn" is not certificate or any`, "#a"}}},
		{"nodeID certificate without client certificates", "naming: {file: n.yaml}\nlisten:\n  xds: 127.0.0.1:1\n  tls:\n    xds: {cert: c.pem, key: k.pem, nodeID: certificate} #a\n",
			[]wantErr{{"listen.tls.xds.nodeID", "certificate needs requireClientCert: true", "#a"}}},
		{"requireClientCert not a bool", "naming: {file: n.yaml}\nlisten:\n  tls:\n    extproc: {cert: c.pem, key: k.pem, clientCA: ca.pem, requireClientCert: yes please} #a\n",
			[]wantErr{{"listen.tls.extproc.requireClientCert", "cannot unmarshal", "#a"}}},

		// Naming.
		{"no naming", "unmatched: reject\n",
			[]wantErr{{"naming.file", "the file naming source needs a file", ""}}},
		{"file source without file", "naming:\n  source: file #a\n",
			[]wantErr{{"naming.file", "the file naming source needs a file", "#a"}}},
		{"unknown naming source", "naming:\n  source: zookeeper #a\n  file: n.yaml\n",
			[]wantErr{{"naming.source", `"zookeeper" is not a naming source`, "#a"}}},

		// Cache.
		{"cache size 0", "naming: {file: n.yaml}\ncache:\n  size: 0 #a\n",
			[]wantErr{{"cache.size", "0 is below 1", "#a"}}},
		{"ttl 0", "naming: {file: n.yaml}\ncache:\n  ttl: 0s #a\n",
			[]wantErr{{"cache.ttl", "0s must be above 0", "#a"}}},
		{"negative staleIfError", "naming: {file: n.yaml}\ncache:\n  staleIfError: -1s #a\n",
			[]wantErr{{"cache.staleIfError", "-1s must be above 0", "#a"}}},
		{"resolveTimeout 0", "naming: {file: n.yaml}\ncache:\n  resolveTimeout: 0s #a\n",
			[]wantErr{{"cache.resolveTimeout", "0s must be above 0", "#a"}}},
		{"resolveTimeout at Envoy's timeout", "naming: {file: n.yaml}\ncache:\n  resolveTimeout: 200ms #a\n",
			[]wantErr{{"cache.resolveTimeout", "200ms must stay below Envoy's ext_proc message_timeout (200ms by default)", "#a"}}},
		{"resolveTimeout above Envoy's timeout", "naming: {file: n.yaml}\ncache:\n  resolveTimeout: 1s #a\n",
			[]wantErr{{"cache.resolveTimeout", "1s must stay below", "#a"}}},

		// Header names.
		{"x-envoy header", "naming: {file: n.yaml}\nheaders:\n  partition: x-envoy-partition #a\n",
			[]wantErr{{"headers.partition", `"x-envoy-partition" cannot be set by an ext_proc server`, "#a"}}},
		{"host header", "naming: {file: n.yaml}\nheaders:\n  role: Host #a\n",
			[]wantErr{{"headers.role", `"host" cannot be set`, "#a"}}},
		{"pseudo-header", "naming: {file: n.yaml}\nheaders:\n  key: \":path\" #a\n",
			[]wantErr{{"headers.key", `":path" cannot be set`, "#a"}}},
		{"header with a space", "naming: {file: n.yaml}\nheaders:\n  consistency: x consistency #a\n",
			[]wantErr{{"headers.consistency", `"x consistency" is not a header name`, "#a"}}},
		{"duplicate header names", "naming: {file: n.yaml}\nheaders:\n  partition: x-p\n  role: X-P #a\n",
			[]wantErr{{"headers.role", `"x-p" is already the name of headers.partition`, "#a"}}},
		{"header equal to a default", "naming: {file: n.yaml}\nheaders:\n  consistency: x-partition-id #a\n",
			[]wantErr{{"headers.consistency", `"x-partition-id" is already the name of headers.partition`, "#a"}}},

		{"unknown setBy", "naming: {file: n.yaml}\nheaders:\n  setBy: route #a\n",
			[]wantErr{{"headers.setBy", `"route" is not extproc, envoy or none`, "#a"}}},

		// Top-level choices.
		{"unknown unmatched", "naming: {file: n.yaml}\nunmatched: drop #a\n",
			[]wantErr{{"unmatched", `"drop" is not passthrough or reject`, "#a"}}},
		{"maxBodyBytes 0", "naming: {file: n.yaml}\nmaxBodyBytes: 0 #a\n",
			[]wantErr{{"maxBodyBytes", "0 is below 1", "#a"}}},
		{"maxBodyBytes above the maximum", "naming: {file: n.yaml}\nmaxBodyBytes: 67108865 #a\n",
			[]wantErr{{"maxBodyBytes", "67108865 is above the maximum of 67108864 (64 MiB)", "#a"}}},

		// Service names.
		{"missing name", head + "  - partitioning: {scheme: singleton} #a\n",
			[]wantErr{{"services[0].name", "every service needs a name", "#a"}}},
		{"bad name", head + "  - name: my service #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].name", `"my service" may hold only letters, digits, '.', '_' and '-'`, "#a"}}},
		{"the unmatched requests' label as a name", head + "  - name: \"-\" #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].name", `"-" may hold only letters, digits, '.', '_' and '-', and starts with a letter or digit`, "#a"}}},
		{"duplicate name", head + users + "  - name: users #a\n    match: {pathPrefix: /v2/users}\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[1].name", `"users" is already the name of services[0]`, "#a"}}},

		// Match.
		{"authority with port", head + "  - name: s\n    match: {authority: \"api.example.com:8080\"} #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].match.authority", `"api.example.com:8080" is not a host name or *.suffix`, "#a"}}},
		{"bare wildcard", head + "  - name: s\n    match:\n      authority: \"*.\" #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].match.authority", `"*." is not a host name`, "#a"}}},
		{"inner wildcard", head + "  - name: s\n    match:\n      authority: \"api.*.com\" #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].match.authority", `"api.*.com" is not a host name`, "#a"}}},
		{"relative pathPrefix", head + "  - name: s\n    match:\n      pathPrefix: api #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].match.pathPrefix", `"api" must start with / and hold no ?, # or space`, "#a"}}},
		{"pathPrefix with a query", head + "  - name: s\n    match:\n      pathPrefix: /api?x #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[0].match.pathPrefix", "must start with /", "#a"}}},
		{"identical match", head + users + "  - name: people\n    match: {pathPrefix: /api/users} #a\n    partitioning: {scheme: singleton}\n",
			[]wantErr{{"services[1].match", "matches exactly the same requests as services[0] (users)", "#a"}}},
		{"identical match, authority case", head +
			"  - {name: a, match: {authority: API.example.com}, partitioning: {scheme: singleton}}\n" +
			"  - {name: b, match: {authority: api.EXAMPLE.com}, partitioning: {scheme: singleton}} #a\n",
			[]wantErr{{"services[1].match", "the same requests as services[0] (a)", "#a"}}},
		{"identical empty match", head +
			"  - {name: a, partitioning: {scheme: singleton}}\n" +
			"  - {name: b, partitioning: {scheme: singleton}} #a\n",
			[]wantErr{{"services[1].match", "the same requests as services[0] (a)", "#a"}}},
		// Services of equal precedence with different matches sit between the two identical
		// ones here.
		{"identical match, apart", head +
			"  - {name: a, match: {pathPrefix: /aa}, partitioning: {scheme: singleton}}\n" +
			"  - {name: b, match: {pathPrefix: /bb}, partitioning: {scheme: singleton}}\n" +
			"  - {name: c, match: {pathPrefix: /cc}, partitioning: {scheme: singleton}}\n" +
			"  - {name: d, match: {pathPrefix: /aa}, partitioning: {scheme: singleton}} #a\n",
			[]wantErr{{"services[3].match", "the same requests as services[0] (a)", "#a"}}},

		// Scheme choice.
		{"missing scheme", head + "  - name: s\n    partitioning: {count: 1} #a\n",
			[]wantErr{{"services[0].partitioning.scheme", "is required: uniformInt64, named or singleton", "#a"}}},
		{"missing partitioning", head + "  - name: s #a\n",
			[]wantErr{{"services[0].partitioning.scheme", "is required", "#a"}}},
		{"unknown scheme", head + "  - name: s\n    partitioning:\n      scheme: range #a\n",
			[]wantErr{{"services[0].partitioning.scheme", `"range" is not uniformInt64, named or singleton`, "#a"}}},

		// Scheme fields that do not apply.
		{"singleton with range and names", head + "  - name: s\n    partitioning:\n      scheme: singleton\n      lowKey: 0 #a\n      highKey: 1 #b\n      names: [a] #c\n",
			[]wantErr{
				{"services[0].partitioning.lowKey", "does not apply to a singleton scheme", "#a"},
				{"services[0].partitioning.highKey", "does not apply to a singleton scheme", "#b"},
				{"services[0].partitioning.names", "does not apply to a singleton scheme", "#c"},
			}},
		{"singleton with count 2", head + "  - name: s\n    partitioning:\n      scheme: singleton\n      count: 2 #a\n",
			[]wantErr{{"services[0].partitioning.count", "a singleton scheme has exactly 1 partition, not 2", "#a"}}},
		{"uniformInt64 with names", head + "  - name: s\n    partitioning:\n      scheme: uniformInt64\n      lowKey: 0\n      highKey: 9\n      count: 2\n      names: [a, b] #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.names", "does not apply to a uniformInt64 scheme", "#a"}}},
		{"named with range", head + "  - name: s\n    partitioning:\n      scheme: named\n      names: [a]\n      lowKey: 0 #a\n      highKey: 1 #b\n    key: {sources: [{header: x}]}\n",
			[]wantErr{
				{"services[0].partitioning.lowKey", "does not apply to a named scheme", "#a"},
				{"services[0].partitioning.highKey", "does not apply to a named scheme", "#b"},
			}},

		// uniformInt64 ranges.
		{"missing lowKey", head + "  - name: s\n    partitioning: {scheme: uniformInt64, highKey: 9, count: 2} #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.lowKey", "is required for a uniformInt64 scheme", "#a"}}},
		{"missing the whole range", head + "  - name: s\n    partitioning: {scheme: uniformInt64} #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{
				{"services[0].partitioning.lowKey", "is required for a uniformInt64 scheme", "#a"},
				{"services[0].partitioning.highKey", "is required for a uniformInt64 scheme", "#a"},
				{"services[0].partitioning.count", "is required for a uniformInt64 scheme", "#a"},
			}},
		{"count 0", head + users + "  - name: t\n    match: {pathPrefix: /t}\n    partitioning:\n      scheme: uniformInt64\n      lowKey: 0\n      highKey: 9\n      count: 0 #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[1].partitioning.count", "0 is below 1", "#a"}}},
		{"negative count", head + "  - name: s\n    partitioning:\n      scheme: uniformInt64\n      lowKey: 0\n      highKey: 9\n      count: -3 #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.count", "-3 is below 1", "#a"}}},
		{"lowKey above highKey", head + "  - name: s\n    partitioning:\n      scheme: uniformInt64\n      lowKey: 5 #a\n      highKey: 1\n      count: 1\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.lowKey", "5 is above highKey 1", "#a"}}},
		{"more partitions than keys", head + "  - name: s\n    partitioning:\n      scheme: uniformInt64\n      lowKey: 0\n      highKey: 2\n      count: 4 #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.count", "4 is above the number of keys in [0, 2], which is 3", "#a"}}},

		// Named schemes.
		{"named without names", head + "  - name: s\n    partitioning: {scheme: named} #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.names", "a named scheme needs at least one name", "#a"}}},
		{"named with an empty list", head + "  - name: s\n    partitioning:\n      scheme: named\n      names: [] #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.names", "a named scheme needs at least one name", "#a"}}},
		{"named count differs", head + "  - name: s\n    partitioning:\n      scheme: named\n      names: [eu, us, apac]\n      count: 2 #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.count", "2 differs from the number of names, 3", "#a"}}},
		{"repeated name", head + "  - name: s\n    partitioning:\n      scheme: named\n      names:\n        - eu\n        - eu #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.names[1]", `"eu" repeats names[0]`, "#a"}}},
		{"empty partition name", head + "  - name: s\n    partitioning:\n      scheme: named\n      names:\n        - eu\n        - \"\" #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.names[1]", "a partition name must not be empty", "#a"}}},
		{"partition name with a space", head + "  - name: s\n    partitioning:\n      scheme: named\n      names:\n        - north eu #a\n    key: {sources: [{header: x}]}\n",
			[]wantErr{{"services[0].partitioning.names[0]", `"north eu" has a character outside visible ASCII`, "#a"}}},

		// Key sources.
		{"source with two kinds", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources:\n        - {header: x-a}\n        - {header: x-b, query: b} #a\n",
			[]wantErr{{"services[0].key.sources[1]", "a key source names exactly one of path, header, query, cookie or jsonBody, found 2", "#a"}}},
		{"source with no kind", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources:\n        - {} #a\n",
			[]wantErr{{"services[0].key.sources[0]", "found 0", "#a"}}},
		{"path template without variable", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources:\n        - path: /api/users #a\n",
			[]wantErr{{"services[0].key.sources[0].path", "has no {variable}", "#a"}}},
		{"bad header source", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources:\n        - header: \"x user\" #a\n",
			[]wantErr{{"services[0].key.sources[0].header", `header "x user" is not a valid header name`, "#a"}}},
		{"bad query source", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources:\n        - query: a=b #a\n",
			[]wantErr{{"services[0].key.sources[0].query", "holds a separator character", "#a"}}},
		{"bad cookie source", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources:\n        - cookie: a;b #a\n",
			[]wantErr{{"services[0].key.sources[0].cookie", "holds a separator character", "#a"}}},
		{"bad JSON pointer", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources:\n        - jsonBody: user.id #a\n",
			[]wantErr{{"services[0].key.sources[0].jsonBody", `JSON pointer "user.id" must start with /`, "#a"}}},
		{"no sources", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      transform: int64 #a\n",
			[]wantErr{{"services[0].key.sources", "a uniformInt64 service needs at least one key source", "#a"}}},
		{"no key at all", head + "  - name: s #a\n    partitioning: {scheme: named, names: [a]}\n",
			[]wantErr{{"services[0].key.sources", "a named service needs at least one key source", "#a"}}},
		{"singleton with sources", head + "  - name: s\n    partitioning: {scheme: singleton}\n    key:\n      sources: [{header: x}] #a\n",
			[]wantErr{{"services[0].key.sources", "a singleton service reads no key; remove the key sources", "#a"}}},

		// Transforms and hashes.
		{"unknown transform", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources: [{header: x}]\n      transform: crc #a\n",
			[]wantErr{{"services[0].key.transform", `"crc" is not int64, hash or name`, "#a"}}},
		{"unknown hash", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources: [{header: x}]\n      transform: hash\n      hash: md5 #a\n",
			[]wantErr{{"services[0].key.hash", `"md5" is not xxhash64 or fnv1a64`, "#a"}}},
		{"int64 on a named scheme", head + "  - name: s\n    partitioning: {scheme: named, names: [a]}\n    key:\n      sources: [{header: x}]\n      transform: int64 #a\n",
			[]wantErr{{"services[0].key.transform", "int64 does not fit a named scheme; use name", "#a"}}},
		{"hash on a named scheme", head + "  - name: s\n    partitioning: {scheme: named, names: [a]}\n    key:\n      sources: [{header: x}]\n      transform: hash #a\n",
			[]wantErr{{"services[0].key.transform", "hash does not fit a named scheme", "#a"}}},
		{"name on a uniformInt64 scheme", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources: [{header: x}]\n      transform: name #a\n",
			[]wantErr{{"services[0].key.transform", "name does not fit a uniformInt64 scheme; use int64 or hash", "#a"}}},
		{"hash without the hash transform", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources: [{header: x}]\n      transform: int64\n      hash: fnv1a64 #a\n",
			[]wantErr{{"services[0].key.hash", "is set but the transform is int64, not hash", "#a"}}},
		{"hash with the default transform", head + "  - name: s\n    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 1}\n    key:\n      sources: [{header: x}]\n      hash: xxhash64 #a\n",
			[]wantErr{{"services[0].key.hash", "is set but the transform is int64, not hash", "#a"}}},

		// Replicas.
		{"unknown read policy", head + "  - name: s\n    partitioning: {scheme: singleton}\n    replicas:\n      reads: nearest #a\n",
			[]wantErr{{"services[0].replicas.reads", `"nearest" is not primary, secondary or any`, "#a"}}},
		{"unknown selection", head + "  - name: s\n    partitioning: {scheme: singleton}\n    replicas:\n      selection: random #a\n",
			[]wantErr{{"services[0].replicas.selection", `"random" is not subset or ordered`, "#a"}}},
		{"bad read method", head + "  - name: s\n    partitioning: {scheme: singleton}\n    replicas:\n      readMethods:\n        - GET\n        - GE T #a\n",
			[]wantErr{{"services[0].replicas.readMethods[1]", `"GE T" is not an HTTP method`, "#a"}}},
		{"negative failover wait", head + "  - name: s\n    partitioning: {scheme: singleton}\n    replicas:\n      failoverWait: -1s #a\n",
			[]wantErr{{"services[0].replicas.failoverWait", "-1s is negative; 0 turns the wait off", "#a"}}},
		{"absurd failover wait", head + "  - name: s\n    partitioning: {scheme: singleton}\n    replicas:\n      failoverWait: 1h #a\n",
			[]wantErr{{"services[0].replicas.failoverWait", "1h0m0s is above the maximum of 10s", "#a"}}},
		{"failover wait without a unit", head + "  - name: s\n    partitioning: {scheme: singleton}\n    replicas:\n      failoverWait: 2 #a\n",
			[]wantErr{{"services[0].replicas.failoverWait", "into time.Duration", "#a"}}},
		{"failover wait past the idle timeout", "limits: {extproc: {streamIdleTimeout: 2s}}\n" + head + "  - name: s\n    partitioning: {scheme: singleton}\n    replicas:\n      failoverWait: 2s #a\n",
			[]wantErr{{"services[0].replicas.failoverWait", "2s must stay below limits.extproc.streamIdleTimeout (2s)", "#a"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { checkErrors(t, tc.doc, tc.want) })
	}
}

// TestParseReportsEveryError checks that one run reports every mistake of a file, in line
// order, and that the message lists each with its path and line.
func TestParseReportsEveryError(t *testing.T) {
	doc := `naming: {file: naming.yaml}
cache:
  size: 0 #a
unmatched: sometimes #b
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 33, count: 0} #c
    key: {sources: [{path: "/api/users/{id}"}]}
  - name: regions
    match: {pathPrefix: /api/regions, port: 80} #d
    partitioning: {scheme: named, names: [eu, us]}
    key: {sources: [{path: "/api/regions/{r}"}], transform: int64} #e
`
	want := []wantErr{
		{"cache.size", "0 is below 1", "#a"},
		{"unmatched", `"sometimes" is not passthrough or reject`, "#b"},
		{"services[0].partitioning.count", "0 is below 1", "#c"},
		{"services[1].match.port", "unknown field", "#d"},
		{"services[1].key.transform", "int64 does not fit a named scheme", "#e"},
	}
	checkErrors(t, doc, want)

	_, err := config.Parse([]byte(doc), "partroute.yaml")
	msg := err.Error()
	if !strings.HasPrefix(msg, "partroute.yaml: 5 error(s):\n") {
		t.Errorf("message does not start with the file and the count:\n%s", msg)
	}
	for _, w := range want {
		line := fmt.Sprintf("\n  %s: ", w.path)
		at := fmt.Sprintf("(line %d)", lineOf(t, doc, w.mark))
		i := strings.Index(msg, line)
		if i < 0 || !strings.Contains(strings.SplitN(msg[i+1:], "\n", 2)[0], at) {
			t.Errorf("message lacks %q with %s:\n%s", strings.TrimSpace(line), at, msg)
		}
	}
	if n := strings.Count(msg, "\n"); n != 5 {
		t.Errorf("message has %d lines after the first, want 5:\n%s", n, msg)
	}
}

func TestErrorStrings(t *testing.T) {
	cases := []struct {
		err  error
		want string
	}{
		{config.FieldError{Path: "services[1].partitioning.count", Line: 7, Message: "0 is below 1"}, "services[1].partitioning.count: 0 is below 1 (line 7)"},
		{config.FieldError{Path: "naming.file", Message: "needs a file"}, "naming.file: needs a file"},
		{config.FieldError{Line: 3, Message: "not valid YAML"}, "not valid YAML (line 3)"},
		{&config.Errors{File: "p.yaml", List: []config.FieldError{{Path: "a", Line: 1, Message: "x"}, {Path: "b", Message: "y"}}}, "p.yaml: 2 error(s):\n  a: x (line 1)\n  b: y"},
		{&config.Errors{List: []config.FieldError{{Path: "a", Message: "x"}}}, "1 error(s):\n  a: x"},
	}
	for _, tc := range cases {
		if got := tc.err.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestErrorsErr(t *testing.T) {
	var empty config.Errors
	if err := empty.Err(); err != nil {
		t.Errorf("Err of no errors = %v, want nil", err)
	}
	e := &config.Errors{}
	e.Add("c", 9, "third %d", 3)
	e.Add("a", 2, "first")
	e.Add("b", 2, "second")
	e.Add("z", 0, "no line")
	if e.Err() != e { //nolint:errorlint // the identity of the list is what is checked, not what it wraps
		t.Fatal("Err does not return the list itself")
	}
	var got []string
	for _, fe := range e.List {
		got = append(got, fe.Path+"="+fe.Message)
	}
	if want := "z=no line a=first b=second c=third 3"; strings.Join(got, " ") != want {
		t.Errorf("order %q, want %q (by line, stable)", strings.Join(got, " "), want)
	}
}

// Load names a broken file as its caller did: a relative path stays relative, as the user
// typed it.
func TestLoadErrorsNameTheFileAsGiven(t *testing.T) {
	t.Chdir(t.TempDir())
	if err := os.WriteFile("partroute.yaml", []byte("naming: {file: naming.yaml}\nunmatched: drop\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := config.Load("partroute.yaml")
	var errs *config.Errors
	if !errors.As(err, &errs) || errs.File != "partroute.yaml" || !strings.HasPrefix(err.Error(), "partroute.yaml: 1 error(s):\n") {
		t.Errorf("Load of a broken relative path: %v", err)
	}
}
