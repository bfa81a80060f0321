package e2e

import (
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/etcdsource/etcdtest"
)

// namingGetView runs naming get and reads its output back as a naming file.
func namingGetView(t *testing.T, endpoint string, cfg *config.Config) (*resolver.View, string) {
	t.Helper()
	r := cli(t, "naming", "get", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", endpoint)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("naming get: %+v", r)
	}
	path := filepath.Join(t.TempDir(), "got.yaml")
	if err := os.WriteFile(path, []byte(r.stdout), 0o644); err != nil {
		t.Fatal(err)
	}
	view, err := resolver.LoadViewFile(path, cfg)
	if err != nil {
		t.Fatalf("naming get printed a file that does not load: %v\n%s", err, r.stdout)
	}
	return view, r.stdout
}

func namingExample(t *testing.T) (*config.Config, *resolver.View) {
	t.Helper()
	cfg, err := config.Load(testkit.Example(t, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	view, err := resolver.LoadViewFile(testkit.Example(t, "naming.yaml"), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cfg, view
}

func TestNamingPutGetRoundTrip(t *testing.T) {
	ep := etcdtest.StartEtcd(t)
	cfg, file := namingExample(t)

	r := cli(t, "naming", "put", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-file", testkit.Example(t, "naming.yaml"))
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("naming put: %+v", r)
	}
	m := regexp.MustCompile(`: 10 partition keys written, 0 unchanged, 0 deleted under /partroute/naming/ at revision \d+; view version ([0-9a-f]{16})\n$`).FindStringSubmatch(r.stdout)
	if m == nil {
		t.Fatalf("naming put printed %q", r.stdout)
	}

	got, out := namingGetView(t, ep, cfg)
	if !reflect.DeepEqual(got.Services, file.Services) {
		t.Errorf("the view read back differs from the file's:\n%s", out)
	}
	if !strings.HasPrefix(out, "# naming view from etcd prefix /partroute/naming/ at revision ") || !strings.Contains(out, "version "+m[1]+"\n") {
		t.Errorf("get's header does not give the prefix, revision and put's version %s:\n%s", m[1], out)
	}

	// Putting the same file again writes nothing.
	r = cli(t, "naming", "put", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep)
	if r.code != 0 || !strings.Contains(r.stdout, ": 0 partition keys written, 10 unchanged, 0 deleted") {
		t.Errorf("second put: %+v", r)
	}
}

func TestNamingPutUnderAnotherPrefix(t *testing.T) {
	ep := etcdtest.StartEtcd(t)
	r := cli(t, "naming", "put", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-prefix", "/team-a/naming")
	if r.code != 0 || !strings.Contains(r.stdout, "under /team-a/naming/") {
		t.Fatalf("naming put: %+v", r)
	}
	r = cli(t, "naming", "get", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep)
	if r.code != 1 || !strings.Contains(r.stderr, "services.users: configured service is missing from the naming view") {
		t.Errorf("get under the default prefix: %+v", r)
	}
	r = cli(t, "naming", "get", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-prefix", "/team-a/naming/")
	if r.code != 0 {
		t.Errorf("get under the prefix: %+v", r)
	}
}

// TestNamingEtcdFromTheConfiguration checks that a configuration whose naming source is etcd
// gives the endpoints and prefix, and that put then needs -file.
func TestNamingEtcdFromTheConfiguration(t *testing.T) {
	ep := etcdtest.StartEtcd(t)
	src, err := os.ReadFile(testkit.Example(t, "partroute.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	fileNaming := "naming:\n  source: file\n  file: naming.yaml             # relative to this file\n"
	if !strings.Contains(string(src), fileNaming) {
		t.Fatalf("the example configuration's naming section changed; update this test")
	}
	etcdNaming := "naming:\n  source: etcd\n  etcd: {endpoints: [" + strings.TrimPrefix(ep, "http://") + "], prefix: /from-config/}\n"
	cfgPath := filepath.Join(t.TempDir(), "partroute.yaml")
	if err := os.WriteFile(cfgPath, []byte(strings.Replace(string(src), fileNaming, etcdNaming, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := cli(t, "naming", "put", "-config", cfgPath); r.code != 1 || !strings.Contains(r.stderr, "no naming file: give -file") {
		t.Errorf("put without -file: %+v", r)
	}
	r := cli(t, "naming", "put", "-config", cfgPath, "-file", testkit.Example(t, "naming.yaml"))
	if r.code != 0 || !strings.Contains(r.stdout, "under /from-config/ at revision") {
		t.Fatalf("put: %+v", r)
	}
	if r := cli(t, "naming", "get", "-config", cfgPath); r.code != 0 || !strings.HasPrefix(r.stdout, "# naming view from etcd prefix /from-config/") {
		t.Errorf("get: %+v", r)
	}
}

func TestNamingPutRejectsAnInvalidFile(t *testing.T) {
	ep := etcdtest.StartEtcd(t)
	bad := filepath.Join(t.TempDir(), "naming.yaml")
	if err := os.WriteFile(bad, []byte("services:\n  settings:\n    partitions:\n      - replicas: [{address: 127.0.0.1:1, role: leader}]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := cli(t, "naming", "put", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-file", bad)
	if r.code != 1 || !strings.Contains(r.stderr, `services.settings.partitions[0].replicas[0].role: "leader" is not primary or secondary (line 4)`) || !strings.Contains(r.stderr, "services.users: configured service is missing") {
		t.Errorf("put of an invalid file: %+v", r)
	}
	c, err := etcdsource.Dial([]string{ep}, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ct, err := etcdsource.Read(t.Context(), c, "")
	if err != nil {
		t.Fatal(err)
	}
	if len(ct.KVs) != 0 {
		t.Errorf("an invalid file wrote %d keys", len(ct.KVs))
	}
}

func TestNamingFailoverSwapsRoles(t *testing.T) {
	ep := etcdtest.StartEtcd(t)
	cfg, _ := namingExample(t)
	if r := cli(t, "naming", "put", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep); r.code != 0 {
		t.Fatalf("naming put: %+v", r)
	}

	r := cli(t, "naming", "failover", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-service", "users", "-partition", "users-1", "-to", "127.0.0.1:8085")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("failover: %+v", r)
	}
	if !regexp.MustCompile(`^/partroute/naming/services/users/partitions/9:17: 127\.0\.0\.1:8085 is now the primary of partition users-1; 127\.0\.0\.1:8084 is now a secondary; revision \d+\n$`).MatchString(r.stdout) {
		t.Errorf("failover printed %q", r.stdout)
	}
	view, _ := namingGetView(t, ep, cfg)
	want := []resolver.Replica{{Address: "127.0.0.1:8084", Role: resolver.RoleSecondary, Healthy: true}, {Address: "127.0.0.1:8085", Role: resolver.RolePrimary, Healthy: true}}
	if got := view.Services["users"].Partitions[1].Replicas; !reflect.DeepEqual(got, want) {
		t.Errorf("replicas after the failover: %+v", got)
	}

	// The partition may be named by its key's segment too; the primary again is a no-op.
	r = cli(t, "naming", "failover", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-service", "users", "-partition", "9:17", "-to", "127.0.0.1:8085")
	if r.code != 0 || !strings.Contains(r.stdout, "127.0.0.1:8085 is already the primary of partition users-1; nothing written") {
		t.Errorf("failover to the primary: %+v", r)
	}

	// An unhealthy replica is promoted with a warning.
	r = cli(t, "naming", "failover", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-service", "users", "-partition", "users-0", "-to", "127.0.0.1:8083")
	if r.code != 0 || !strings.Contains(r.stderr, "warning: 127.0.0.1:8083 is marked unhealthy") {
		t.Errorf("failover to an unhealthy replica: %+v", r)
	}
}

func TestNamingFailoverFailsClearly(t *testing.T) {
	ep := etcdtest.StartEtcd(t)
	if r := cli(t, "naming", "put", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep); r.code != 0 {
		t.Fatalf("naming put: %+v", r)
	}
	for _, tc := range []struct {
		service, partition, to, want string
	}{
		{"users", "users-1", "127.0.0.1:9999", "partroute naming failover: partition users-1 of service users has no replica at 127.0.0.1:9999; its replicas: 127.0.0.1:8084 (primary), 127.0.0.1:8085 (secondary)\n"},
		{"users", "users-7", "127.0.0.1:8085", `partroute naming failover: service users has no partition "users-7" under /partroute/naming/; its partitions: users-0, users-1, users-2, users-3` + "\n"},
		{"orders", "0", "127.0.0.1:8085", `partroute naming failover: no service "orders" in the configuration` + "\n"},
	} {
		r := cli(t, "naming", "failover", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", ep, "-service", tc.service, "-partition", tc.partition, "-to", tc.to)
		if r.code != 1 || r.stdout != "" || r.stderr != tc.want {
			t.Errorf("failover %s %s %s: %+v\nwant stderr %q", tc.service, tc.partition, tc.to, r, tc.want)
		}
	}
}

func TestNamingUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"naming"},
		{"naming", "list"},
		{"naming", "get", "-etcd", "127.0.0.1:2379"},
		{"naming", "-config", testkit.Example(t, "partroute.yaml")},
		{"naming", "failover", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", "127.0.0.1:2379", "-service", "users"},
		{"naming", "get", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", "127.0.0.1:2379", "extra"},
	} {
		r := cli(t, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "usage:") {
			t.Errorf("%v: %+v", args, r)
		}
	}
	// The example configuration uses the file source, so it cannot stand in for -etcd.
	if r := cli(t, "naming", "get", "-config", testkit.Example(t, "partroute.yaml")); r.code != 1 || !strings.Contains(r.stderr, "no etcd endpoints: give -etcd") {
		t.Errorf("get without -etcd: %+v", r)
	}
	if r := cli(t, "naming", "-h"); r.code != 0 || !strings.Contains(r.stdout, "partroute naming failover") || r.stderr != "" {
		t.Errorf("naming -h: %+v", r)
	}
	if r := cli(t, "help"); !strings.Contains(r.stdout, "naming") {
		t.Errorf("the command list lacks naming: %+v", r)
	}
}

func TestNamingUnreachableEtcd(t *testing.T) {
	// A port that was just free: nothing answers there.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	r := cli(t, "naming", "get", "-config", testkit.Example(t, "partroute.yaml"), "-etcd", addr, "-timeout", "500ms")
	if r.code != 1 || !strings.Contains(r.stderr, "etcd at "+addr+" did not answer within 500ms") {
		t.Errorf("get from an unreachable etcd: %+v", r)
	}
}
