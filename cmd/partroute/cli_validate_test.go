package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/partroute/partroute/internal/testkit/certs"
)

func TestCLIValidate(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want []string
	}{
		{"examples, naming file from the configuration", []string{"-config", cliExampleConfig}, []string{
			`users: match authority=*.example.com pathPrefix=/api/users; uniformInt64 [0, 33] in 4 partitions; key from path "/api/users/{id}", header "x-user-id", query "user" by int64; reads any; 8 replicas (7 healthy)`,
			`sessions: match pathPrefix=/api/sessions; uniformInt64 [-9223372036854775808, 9223372036854775807] in 2 partitions; key from cookie "session", header "x-session" by hash (xxhash64); reads secondary; 4 replicas (4 healthy)`,
			`regions: match pathPrefix=/api/regions; named [eu us apac]; key from path "/api/regions/{region}" by name; reads primary; 4 replicas (4 healthy)`,
			`settings: match pathPrefix=/api/settings; singleton; reads primary; 1 replica (1 healthy)`,
		}},
		{"examples, naming file given", []string{"-config", cliExampleConfig, "-naming", cliExampleNaming}, []string{
			`users: match authority=*.example.com pathPrefix=/api/users; uniformInt64 [0, 33] in 4 partitions; key from path "/api/users/{id}", header "x-user-id", query "user" by int64; reads any; 8 replicas (7 healthy)`,
			`sessions: match pathPrefix=/api/sessions; uniformInt64 [-9223372036854775808, 9223372036854775807] in 2 partitions; key from cookie "session", header "x-session" by hash (xxhash64); reads secondary; 4 replicas (4 healthy)`,
			`regions: match pathPrefix=/api/regions; named [eu us apac]; key from path "/api/regions/{region}" by name; reads primary; 4 replicas (4 healthy)`,
			`settings: match pathPrefix=/api/settings; singleton; reads primary; 1 replica (1 healthy)`,
		}},
		{"examples, another naming view", []string{"-naming", "testdata/unhealthy-naming.yaml", "-config", cliExampleConfig}, []string{
			`users: match authority=*.example.com pathPrefix=/api/users; uniformInt64 [0, 33] in 4 partitions; key from path "/api/users/{id}", header "x-user-id", query "user" by int64; reads any; 8 replicas (6 healthy)`,
			`sessions: match pathPrefix=/api/sessions; uniformInt64 [-9223372036854775808, 9223372036854775807] in 2 partitions; key from cookie "session", header "x-session" by hash (xxhash64); reads secondary; 4 replicas (3 healthy)`,
			`regions: match pathPrefix=/api/regions; named [eu us apac]; key from path "/api/regions/{region}" by name; reads primary; 4 replicas (4 healthy)`,
			`settings: match pathPrefix=/api/settings; singleton; reads primary; 1 replica (1 healthy)`,
		}},
		{"test configuration", []string{"-config", cliTestConfig}, []string{
			`orders: match pathPrefix=/orders; uniformInt64 [1, 100] in 3 partitions; key from jsonBody "/customer/id" by int64; reads secondary; 5 replicas (4 healthy)`,
			`carts: match authority=shop.example.com; uniformInt64 [0, 999] in 4 partitions; key from query "cart" by hash (fnv1a64); reads primary; 4 replicas (4 healthy)`,
			`tokens: match pathPrefix=/tokens; uniformInt64 [0, 999] in 2 partitions; key from header "x-token" by hash (xxhash64); reads any; 3 replicas (3 healthy)`,
		}},
		{"service that takes every request", []string{"-config", "testdata/catchall.yaml"}, []string{
			`everything: match every request; singleton; reads secondary; 2 replicas (1 healthy)`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := cliRun(append([]string{"validate"}, tc.args...)...)
			if r.code != 0 || r.stderr != "" {
				t.Fatalf("exit code %d, stderr:\n%s", r.code, r.stderr)
			}
			if want := strings.Join(tc.want, "\n") + "\n"; r.stdout != want {
				t.Errorf("stdout\n%s\nwant\n%s", r.stdout, want)
			}
		})
	}
}

func TestCLIValidateReportsEveryError(t *testing.T) {
	cases := []struct {
		name string
		args []string
		head string
		want []string
	}{
		{"broken configuration", []string{"-config", "testdata/broken.yaml"}, "testdata/broken.yaml: 5 error(s):", []string{
			"cache.resolveTimeout: 250ms must stay below Envoy's ext_proc message_timeout (200ms by default) so that partroute answers 503 before Envoy times out (line 3)",
			`headers.partition: "x-envoy-partition" cannot be set by an ext_proc server (pseudo-headers, host and x-envoy-* are Envoy's) (line 4)`,
			"services[0].partitioning.count: 0 is below 1 (line 8)",
			"services[1].partitioning.lowKey: does not apply to a named scheme (line 12)",
			"services[1].key.sources[0]: a key source names exactly one of path, header, query, cookie or jsonBody, found 2 (line 13)",
		}},
		{"broken naming view", []string{"-config", cliExampleConfig, "-naming", "testdata/broken-naming.yaml"}, "testdata/broken-naming.yaml: 5 error(s):", []string{
			"services.settings: configured service is missing from the naming view",
			"services.users.partitions: scheme partition [0, 8] is missing (line 4)",
			"services.users.partitions[0]: [0, 9] is not a partition of the scheme; its partitions are [0, 8] [9, 17] [18, 25] [26, 33] (line 5)",
			`services.users.partitions[3].replicas[0].address: "127.0.0.1:0" has port "0", not a number from 1 to 65535 (line 8)`,
			`services.sessions.partitions[0].replicas[0].role: "leader" is not primary or secondary (line 11)`,
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := cliRun(append([]string{"validate"}, tc.args...)...)
			if r.code != 1 {
				t.Errorf("exit code %d, want 1", r.code)
			}
			if r.stdout != "" {
				t.Errorf("stdout %q, want nothing", r.stdout)
			}
			lines := strings.Split(strings.TrimSuffix(r.stderr, "\n"), "\n")
			if len(lines) != len(tc.want)+1 || !strings.HasSuffix(lines[0], tc.head) {
				t.Fatalf("stderr is not %q and %d errors:\n%s", tc.head, len(tc.want), r.stderr)
			}
			for i, w := range tc.want {
				if got := strings.TrimPrefix(lines[i+1], "  "); got != w {
					t.Errorf("error %d:\n%s\nwant\n%s", i, got, w)
				}
			}
		})
	}
}

// TestCLIValidateChecksTLSFiles: validate reads the files of listen.tls as serve does at start.
func TestCLIValidateChecksTLSFiles(t *testing.T) {
	dir := t.TempDir()
	certs.NewMutual(t, dir)
	write := func(name, content string) string {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("naming.yaml", "services: {s: {partitions: [{replicas: [{address: 127.0.0.1:9, role: primary}]}]}}\n")
	const services = "naming: {file: naming.yaml}\nservices: [{name: s, partitioning: {scheme: singleton}}]\n"
	good := write("good.yaml", "listen:\n  tls:\n    extproc: {cert: server.pem, key: server.key, clientCA: ca.pem, requireClientCert: true}\n"+services)
	if r := cliRun("validate", "-config", good); r.code != 0 || r.stderr != "" {
		t.Errorf("valid TLS files: exit code %d, stderr:\n%s", r.code, r.stderr)
	}
	bad := write("bad.yaml", "listen:\n  tls:\n    extproc: {cert: server.pem, key: client.key}\n"+services)
	r := cliRun("validate", "-config", bad)
	want := bad + ": 1 error(s):\n  listen.tls.extproc.key: " + filepath.Join(dir, "client.key") + ": is not the private key of the certificate in " + filepath.Join(dir, "server.pem") + ": tls: private key does not match public key\n"
	if r.code != 1 || r.stderr != want {
		t.Errorf("exit code %d, stderr:\n%s\nwant 1 and\n%s", r.code, r.stderr, want)
	}
}
