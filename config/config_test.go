package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
)

// examplePath is the example configuration that the demo and the docs use.
const examplePath = "../envoy-config/examples/partroute.yaml"

// mustParse parses a configuration that must be valid.
func mustParse(t testing.TB, yaml string) *config.Config {
	t.Helper()
	c, err := config.Parse([]byte(yaml), "/etc/partroute/partroute.yaml")
	if err != nil {
		t.Fatalf("Parse: %v\n%s", err, yaml)
	}
	return c
}

func TestLoadExample(t *testing.T) {
	c, err := config.Load(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	if c.Path != abs {
		t.Errorf("Path = %q, want %q", c.Path, abs)
	}
	if want := filepath.Join(filepath.Dir(abs), "naming.yaml"); !reflect.DeepEqual(c.Naming, config.Naming{Source: "file", File: want}) {
		t.Errorf("Naming = %+v, want file %q", c.Naming, want)
	}
	if want := (config.Listen{ExtProc: "127.0.0.1:50051", Admin: "127.0.0.1:9901"}); c.Listen != want {
		t.Errorf("Listen = %+v, want %+v", c.Listen, want)
	}
	if want := (config.Cache{Size: 100000, TTL: 30 * time.Second, StaleIfError: 5 * time.Minute, ResolveTimeout: 100 * time.Millisecond}); c.Cache != want {
		t.Errorf("Cache = %+v, want %+v", c.Cache, want)
	}
	if c.Unmatched != config.PassThrough {
		t.Errorf("Unmatched = %v, want PassThrough", c.Unmatched)
	}

	type svc struct {
		name      string
		match     config.Match
		kind      keying.SchemeKind
		count     int
		low, high int64
		names     []string
		sources   []string
		transform keying.Transform
		hash      keying.HashFunc
		reads     config.ReadPolicy
	}
	want := []svc{
		{"users", config.Match{Authority: "*.example.com", PathPrefix: "/api/users"}, keying.UniformInt64, 4, 0, 33, nil,
			[]string{`path "/api/users/{id}"`, `header "x-user-id"`, `query "user"`}, keying.TransformInt64, keying.XXHash64, config.ReadAny},
		{"sessions", config.Match{PathPrefix: "/api/sessions"}, keying.UniformInt64, 2, -1 << 63, 1<<63 - 1, nil,
			[]string{`cookie "session"`, `header "x-session"`}, keying.TransformHash, keying.XXHash64, config.ReadSecondary},
		{"regions", config.Match{PathPrefix: "/api/regions"}, keying.Named, 3, 0, 0, []string{"eu", "us", "apac"},
			[]string{`path "/api/regions/{region}"`}, keying.TransformName, keying.XXHash64, config.ReadPrimary},
		{"settings", config.Match{PathPrefix: "/api/settings"}, keying.Singleton, 1, 0, 0, nil,
			nil, 0, 0, config.ReadPrimary},
	}
	if len(c.Services) != len(want) {
		t.Fatalf("%d services, want %d", len(c.Services), len(want))
	}
	for i, w := range want {
		s := c.Services[i]
		if s.Name != w.name || s.Index != i || s.Match != w.match || s.Reads != w.reads {
			t.Errorf("services[%d] = {%s %d %+v %v}, want {%s %d %+v %v}", i, s.Name, s.Index, s.Match, s.Reads, w.name, i, w.match, w.reads)
		}
		sc := s.Scheme()
		if sc.Kind() != w.kind || sc.Count() != w.count {
			t.Errorf("%s: scheme %v with %d partitions, want %v with %d", w.name, sc.Kind(), sc.Count(), w.kind, w.count)
		}
		if w.kind == keying.UniformInt64 && (sc.LowKey() != w.low || sc.HighKey() != w.high) {
			t.Errorf("%s: range [%d, %d], want [%d, %d]", w.name, sc.LowKey(), sc.HighKey(), w.low, w.high)
		}
		if !reflect.DeepEqual(sc.Names(), w.names) {
			t.Errorf("%s: names %q, want %q", w.name, sc.Names(), w.names)
		}
		var got []string
		for _, src := range s.Keyer.Sources() {
			got = append(got, src.String())
		}
		if !reflect.DeepEqual(got, w.sources) {
			t.Errorf("%s: sources %q, want %q", w.name, got, w.sources)
		}
		if s.Keyer.Transform() != w.transform || s.Keyer.Hash() != w.hash {
			t.Errorf("%s: transform %v hash %v, want %v %v", w.name, s.Keyer.Transform(), s.Keyer.Hash(), w.transform, w.hash)
		}
		if c.Service(w.name) != s {
			t.Errorf("Service(%q) is not services[%d]", w.name, i)
		}
	}
	if c.Service("nope") != nil {
		t.Error(`Service("nope") is not nil`)
	}
}

func TestLoadMissingFile(t *testing.T) {
	if _, err := config.Load(filepath.Join(t.TempDir(), "absent.yaml")); !os.IsNotExist(err) {
		t.Errorf("Load of a missing file: %v, want a not-exist error", err)
	}
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, `
naming: {file: naming.yaml}
services:
  - name: users
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 9, count: 2}
    key: {sources: [{header: x-user}]}
`)
	checks := []struct {
		what      string
		got, want any
	}{
		{"listen", c.Listen, config.Listen{ExtProc: config.DefaultExtProcAddr, Admin: config.DefaultAdminAddr}},
		{"listen.extproc", config.DefaultExtProcAddr, "127.0.0.1:50051"},
		{"listen.admin", config.DefaultAdminAddr, "127.0.0.1:9901"},
		{"naming", c.Naming, config.Naming{Source: "file", File: "/etc/partroute/naming.yaml"}},
		{"cache", c.Cache, config.Cache{Size: 100000, TTL: 30 * time.Second, StaleIfError: 5 * time.Minute, ResolveTimeout: 100 * time.Millisecond}},
		{"headers", c.Headers, config.Headers{Partition: "x-partition-id", Role: "x-partition-role", Key: "x-partition-key", Consistency: "x-partroute-consistency", SetBy: config.DefaultSetBy}},
		{"unmatched", c.Unmatched, config.PassThrough},
		{"maxBodyBytes", c.MaxBodyBytes, 1 << 20},
		{"reads", c.Services[0].Reads, config.ReadPrimary},
		{"readMethods", c.Services[0].ReadMethods, []string{"GET", "HEAD", "OPTIONS"}},
		{"match", c.Services[0].Match, config.Match{}},
		{"transform", c.Services[0].Keyer.Transform(), keying.TransformInt64},
		{"hash", c.Services[0].Keyer.Hash(), keying.XXHash64},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.what, ch.got, ch.want)
		}
	}
}

func TestListenTLS(t *testing.T) {
	c := mustParse(t, `
listen:
  xds: 127.0.0.1:18000
  tls:
    extproc: {cert: tls/server.pem, key: tls/server.key, clientCA: /etc/ca/envoy.pem, requireClientCert: true}
    xds: {cert: /etc/tls/xds.pem, key: /etc/tls/xds.key, clientCA: tls/ca.pem}
naming: {file: naming.yaml}
`)
	want := config.ListenTLS{
		ExtProc: config.ServerTLS{Cert: "/etc/partroute/tls/server.pem", Key: "/etc/partroute/tls/server.key", ClientCA: "/etc/ca/envoy.pem", RequireClientCert: true},
		XDS:     config.ServerTLS{Cert: "/etc/tls/xds.pem", Key: "/etc/tls/xds.key", ClientCA: "/etc/partroute/tls/ca.pem"},
	}
	if c.Listen.TLS != want {
		t.Errorf("listen.tls = %#v, want %#v", c.Listen.TLS, want)
	}
	if !c.Listen.TLS.ExtProc.On() || !c.Listen.TLS.XDS.On() || c.Listen.TLS.Admin.On() {
		t.Errorf("On: extproc %v xds %v admin %v, want true true false", c.Listen.TLS.ExtProc.On(), c.Listen.TLS.XDS.On(), c.Listen.TLS.Admin.On())
	}
}

// TestListenTLSNodeID: mutual TLS on the xDS listener binds node ids to client certificates
// unless nodeID says any; without requireClientCert there is no binding.
func TestListenTLSNodeID(t *testing.T) {
	for _, tc := range []struct {
		name, xds string
		want      bool
	}{
		{"mutual TLS binds by default", "{cert: c.pem, key: k.pem, clientCA: ca.pem, requireClientCert: true}", true},
		{"certificate said", "{cert: c.pem, key: k.pem, clientCA: ca.pem, requireClientCert: true, nodeID: certificate}", true},
		{"any", "{cert: c.pem, key: k.pem, clientCA: ca.pem, requireClientCert: true, nodeID: any}", false},
		{"optional client certificates", "{cert: c.pem, key: k.pem, clientCA: ca.pem}", false},
		{"server TLS alone", "{cert: c.pem, key: k.pem}", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := mustParse(t, "listen:\n  xds: 127.0.0.1:18000\n  tls:\n    xds: "+tc.xds+"\nnaming: {file: naming.yaml}\n")
			if got := c.Listen.TLS.XDS.BindNodeID; got != tc.want {
				t.Errorf("BindNodeID = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSettings(t *testing.T) {
	c := mustParse(t, `
listen: {extproc: ":50052", xds: 127.0.0.1:18000, admin: "[::1]:9902"}
naming: {source: file, file: /var/lib/partroute/naming.yaml}
cache: {size: 10, ttl: 1m, staleIfError: 0s, resolveTimeout: 199ms}
headers: {partition: X-Part, role: x-role, key: x-key, consistency: X-Consistency, setBy: envoy}
unmatched: reject
maxBodyBytes: 4096
services:
  - name: named
    partitioning: {scheme: named, names: [eu, us], count: 2}
    key: {sources: [{query: region}]}
    replicas: {reads: secondary, readMethods: [get, Propfind]}
  - name: hashed
    match: {authority: API.Example.COM}
    partitioning: {scheme: uniformInt64, lowKey: -5, highKey: 5, count: 3}
    key: {sources: [{cookie: sid}, {jsonBody: /user/id}], transform: hash, hash: fnv1a64}
    replicas: {reads: any, readMethods: [], failoverWait: 1500ms, selection: ordered}
  - name: one
    match: {pathPrefix: /one}
    partitioning: {scheme: singleton, count: 1}
    replicas: {reads: primary, failoverWait: 0s, selection: subset}
`)
	named, hashed, one := c.Services[0], c.Services[1], c.Services[2]
	checks := []struct {
		what      string
		got, want any
	}{
		{"listen", c.Listen, config.Listen{ExtProc: ":50052", XDS: "127.0.0.1:18000", Admin: "[::1]:9902"}},
		{"naming", c.Naming, config.Naming{Source: "file", File: "/var/lib/partroute/naming.yaml"}},
		{"cache", c.Cache, config.Cache{Size: 10, TTL: time.Minute, StaleIfError: 0, ResolveTimeout: 199 * time.Millisecond}},
		{"headers", c.Headers, config.Headers{Partition: "x-part", Role: "x-role", Key: "x-key", Consistency: "x-consistency", SetBy: config.SetByEnvoy}},
		{"unmatched", c.Unmatched, config.Reject},
		{"maxBodyBytes", c.MaxBodyBytes, 4096},
		{"named reads", named.Reads, config.ReadSecondary},
		{"named readMethods", named.ReadMethods, []string{"GET", "PROPFIND"}},
		{"named transform", named.Keyer.Transform(), keying.TransformName},
		{"hashed match", hashed.Match, config.Match{Authority: "api.example.com"}},
		{"hashed reads", hashed.Reads, config.ReadAny},
		{"hashed readMethods", len(hashed.ReadMethods), 0},
		{"hashed transform", hashed.Keyer.Transform(), keying.TransformHash},
		{"hashed hash", hashed.Keyer.Hash(), keying.FNV1a64},
		{"hashed needs body", hashed.Keyer.NeedsBody(), true},
		{"named needs body", named.Keyer.NeedsBody(), false},
		{"one reads", one.Reads, config.ReadPrimary},
		{"named failoverWait (default off)", named.FailoverWait, time.Duration(0)},
		{"hashed failoverWait", hashed.FailoverWait, 1500 * time.Millisecond},
		{"one failoverWait", one.FailoverWait, time.Duration(0)},
		{"longest failoverWait", c.LongestFailoverWait(), 1500 * time.Millisecond},
		{"one sources", len(one.Keyer.Sources()), 0},
		{"named selection (default subset)", named.Selection, config.SelectSubset},
		{"hashed selection", hashed.Selection, config.SelectOrdered},
		{"one selection", one.Selection, config.SelectSubset},
		{"a service orders replicas", c.OrdersReplicas(), true},
	}
	for _, ch := range checks {
		if !reflect.DeepEqual(ch.got, ch.want) {
			t.Errorf("%s = %#v, want %#v", ch.what, ch.got, ch.want)
		}
	}
	for _, m := range []struct {
		svc    *config.Service
		method string
		read   bool
	}{
		{named, "GET", true}, {named, "PROPFIND", true}, {named, "HEAD", false}, {named, "get", false},
		{hashed, "GET", false}, {one, "GET", true}, {one, "HEAD", true}, {one, "OPTIONS", true},
		{one, "POST", false}, {one, "PUT", false}, {one, "DELETE", false}, {one, "PATCH", false},
	} {
		if got := m.svc.IsRead(m.method); got != m.read {
			t.Errorf("%s.IsRead(%q) = %v, want %v", m.svc.Name, m.method, got, m.read)
		}
	}
}

func TestNamingFileRelativeToConfig(t *testing.T) {
	dir := t.TempDir()
	sub := filepath.Join(dir, "conf")
	if err := os.Mkdir(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		naming, want string
	}{
		{"naming.yaml", filepath.Join(sub, "naming.yaml")},
		{"views/naming.yaml", filepath.Join(sub, "views", "naming.yaml")},
		{"../naming.yaml", filepath.Join(dir, "naming.yaml")},
		{"/srv/naming.yaml", "/srv/naming.yaml"},
	}
	for _, tc := range cases {
		t.Run(tc.naming, func(t *testing.T) {
			path := filepath.Join(sub, "partroute.yaml")
			if err := os.WriteFile(path, []byte("naming: {file: "+tc.naming+"}\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			// Load is given a path relative to the working directory, as a command line would.
			rel, err := filepath.Rel(mustGetwd(t), path)
			if err != nil {
				t.Fatal(err)
			}
			c, err := config.Load(rel)
			if err != nil {
				t.Fatal(err)
			}
			if c.Naming.File != tc.want {
				t.Errorf("naming.file %q resolved to %q, want %q", tc.naming, c.Naming.File, tc.want)
			}
			if c.Path != path {
				t.Errorf("Path = %q, want %q", c.Path, path)
			}
		})
	}
}

func mustGetwd(t *testing.T) string {
	t.Helper()
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	return wd
}

func TestEmptyServiceList(t *testing.T) {
	for _, doc := range []string{"naming: {file: n.yaml}\n", "naming: {file: n.yaml}\nservices: []\n", "naming: {file: n.yaml}\nservices:\n"} {
		c := mustParse(t, doc)
		if len(c.Services) != 0 || len(c.ServicesByPrecedence()) != 0 {
			t.Errorf("%q: %d services", doc, len(c.Services))
		}
		if s := c.Match("api.example.com", "/"); s != nil {
			t.Errorf("%q: Match found %s", doc, s.Name)
		}
	}
}

func TestReadPolicyString(t *testing.T) {
	for p, want := range map[config.ReadPolicy]string{
		config.ReadPrimary: "primary", config.ReadSecondary: "secondary", config.ReadAny: "any", 0: "unknown", 9: "unknown",
	} {
		if got := p.String(); got != want {
			t.Errorf("ReadPolicy(%d).String() = %q, want %q", p, got, want)
		}
	}
}

// ParseSetBy reads each shape by the name String gives it, and the empty name as the
// default, as the loader does; OrDefault reads the zero shape as the default and keeps others.
func TestParseSetBy(t *testing.T) {
	for _, s := range []config.SetBy{config.SetByExtProc, config.SetByEnvoy, config.SetByNone} {
		got, err := config.ParseSetBy(s.String())
		if err != nil || got != s {
			t.Errorf("ParseSetBy(%q) = %v, %v; want %v", s.String(), got, err, s)
		}
		if s.OrDefault() != s {
			t.Errorf("%v.OrDefault() = %v", s, s.OrDefault())
		}
	}
	if got, err := config.ParseSetBy(""); err != nil || got != config.DefaultSetBy {
		t.Errorf("ParseSetBy(\"\") = %v, %v; want the default %v", got, err, config.DefaultSetBy)
	}
	if _, err := config.ParseSetBy("route"); err == nil || !strings.Contains(err.Error(), `"route" is not extproc, envoy or none`) {
		t.Errorf("ParseSetBy(\"route\"): %v", err)
	}
	if got := config.SetBy(0).OrDefault(); got != config.DefaultSetBy {
		t.Errorf("SetBy(0).OrDefault() = %v, want %v", got, config.DefaultSetBy)
	}
}

// The largest maxBodyBytes is accepted as such: the limit refuses only what lies above it.
func TestMaxBodyBytesAtTheLimit(t *testing.T) {
	c := mustParse(t, "naming: {file: n.yaml}\nmaxBodyBytes: 67108864\n")
	if c.MaxBodyBytes != config.MaxBodyBytesLimit {
		t.Errorf("maxBodyBytes %d, want %d", c.MaxBodyBytes, config.MaxBodyBytesLimit)
	}
}

// listen.extproc may be a unix domain socket, named as gRPC names one.
func TestListenOnAUnixSocket(t *testing.T) {
	c := mustParse(t, "listen: {extproc: \"unix:/run/partroute/extproc.sock\"}\nnaming: {file: n.yaml}\n")
	if path, ok := config.UnixSocketPath(c.Listen.ExtProc); !ok || path != "/run/partroute/extproc.sock" {
		t.Errorf("listen.extproc %q: socket path %q, %v", c.Listen.ExtProc, path, ok)
	}
	if _, ok := config.UnixSocketPath("127.0.0.1:50051"); ok {
		t.Error("a TCP address is taken for a socket path")
	}
}
