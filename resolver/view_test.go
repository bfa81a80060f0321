package resolver_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// The example files that the demo and the docs use.
const (
	exampleConfig = "../envoy-config/examples/partroute.yaml"
	exampleNaming = "../envoy-config/examples/naming.yaml"
)

// readFile returns a file's content or stops the test.
func readFile(t testing.TB, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// replace replaces the first old in s with replacement, failing the test when s has no old,
// so that a test notices when a fixture it edits has changed.
func replace(t testing.TB, s, old, replacement string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("%q not found in the fixture", old)
	}
	return strings.Replace(s, old, replacement, 1)
}

// edit replaces old with replacement in doc like replace, and marks the line where the
// replacement ends with the comment "#a".
func edit(t testing.TB, doc, old, replacement string) string {
	t.Helper()
	i := strings.Index(doc, old)
	doc = replace(t, doc, old, replacement)
	end := i + len(strings.TrimRight(replacement, "\n"))
	if j := strings.IndexByte(doc[end:], '\n'); j >= 0 {
		end += j
	} else {
		end = len(doc)
	}
	return doc[:end] + " #a" + doc[end:]
}

func primary(addr string) resolver.Replica {
	return resolver.Replica{Address: addr, Role: resolver.RolePrimary, Healthy: true}
}

func secondary(addr string) resolver.Replica {
	return resolver.Replica{Address: addr, Role: resolver.RoleSecondary, Healthy: true}
}

func down(r resolver.Replica) resolver.Replica {
	r.Healthy = false
	return r
}

func TestParseViewExample(t *testing.T) {
	cfg, view := example.Load(t)
	data := readFile(t, exampleNaming)
	sum := sha256.Sum256([]byte(data))
	if want := hex.EncodeToString(sum[:8]); view.Version != want {
		t.Errorf("Version = %q, want %q", view.Version, want)
	}
	want := map[string]*resolver.ServiceView{
		"users": {Name: "users", Kind: keying.UniformInt64, Partitions: []resolver.Partition{
			{ID: "users-0", Index: 0, LowKey: 0, HighKey: 8, Replicas: []resolver.Replica{
				primary("127.0.0.1:8081"), secondary("127.0.0.1:8082"), down(secondary("127.0.0.1:8083"))}},
			{ID: "users-1", Index: 1, LowKey: 9, HighKey: 17, Replicas: []resolver.Replica{
				primary("127.0.0.1:8084"), secondary("127.0.0.1:8085")}},
			{ID: "users-2", Index: 2, LowKey: 18, HighKey: 25, Replicas: []resolver.Replica{
				primary("127.0.0.1:8086"), secondary("127.0.0.1:8087")}},
			{ID: "users-3", Index: 3, LowKey: 26, HighKey: 33, Replicas: []resolver.Replica{
				primary("127.0.0.1:8088")}},
		}},
		"sessions": {Name: "sessions", Kind: keying.UniformInt64, Partitions: []resolver.Partition{
			{ID: "sessions/-9223372036854775808:-1", Index: 0, LowKey: math.MinInt64, HighKey: -1, Replicas: []resolver.Replica{
				primary("127.0.0.1:8071"), secondary("127.0.0.1:8072")}},
			{ID: "sessions/0:9223372036854775807", Index: 1, LowKey: 0, HighKey: math.MaxInt64, Replicas: []resolver.Replica{
				primary("127.0.0.1:8073"), secondary("127.0.0.1:8074")}},
		}},
		"regions": {Name: "regions", Kind: keying.Named, Partitions: []resolver.Partition{
			{ID: "regions/eu", Index: 0, Name: "eu", Replicas: []resolver.Replica{primary("127.0.0.1:8091"), secondary("127.0.0.1:8092")}},
			{ID: "regions/us", Index: 1, Name: "us", Replicas: []resolver.Replica{primary("127.0.0.1:8093")}},
			{ID: "regions/apac", Index: 2, Name: "apac", Replicas: []resolver.Replica{primary("127.0.0.1:8094")}},
		}},
		"settings": {Name: "settings", Kind: keying.Singleton, Partitions: []resolver.Partition{
			{ID: "settings", Index: 0, Replicas: []resolver.Replica{primary("127.0.0.1:8099")}},
		}},
	}
	if len(view.Services) != len(want) {
		t.Errorf("%d services, want %d", len(view.Services), len(want))
	}
	for name, w := range want {
		if got := view.Services[name]; !reflect.DeepEqual(got, w) {
			t.Errorf("services[%s] =\n%+v\nwant\n%+v", name, got, w)
		}
	}
	// The view answers lookups by partition index, from memory.
	users := cfg.Service("users")
	for i := range 4 {
		p, err := view.Partition(context.Background(), users, keying.Key{Index: i})
		if err != nil || p != &view.Services["users"].Partitions[i] {
			t.Errorf("Partition(users, %d) = %v, %v", i, p, err)
		}
	}
	for _, i := range []int{-1, 4} {
		if p, err := view.Partition(context.Background(), users, keying.Key{Index: i}); err == nil {
			t.Errorf("Partition(users, %d) = %+v, want an error", i, p)
		}
	}
}

func TestViewPartitionUnknownService(t *testing.T) {
	_, view := example.Load(t)
	other, _ := example.LoadPair(t, "testdata/partroute.yaml", "testdata/naming.yaml")
	_, err := view.Partition(context.Background(), other.Service("orders"), keying.Key{})
	if err == nil || !strings.Contains(err.Error(), "has no partition 0 of service orders") || !strings.Contains(err.Error(), view.Version) {
		t.Errorf("error = %v, want one naming the view version, partition and service", err)
	}
}

func TestParseViewDefaults(t *testing.T) {
	_, view := example.LoadPair(t, "testdata/partroute.yaml", "testdata/naming.yaml")
	orders := view.Services["orders"].Partitions
	var ids []string
	for _, p := range orders {
		ids = append(ids, p.ID)
	}
	if want := []string{"orders/1:34", "orders/35:67", "orders/68:100"}; !reflect.DeepEqual(ids, want) {
		t.Errorf("derived ids %q, want %q", ids, want)
	}
	// healthy defaults to true; an explicit false is kept.
	health := fmt.Sprint(orders[1].Replicas[0].Healthy, orders[1].Replicas[1].Healthy, orders[2].Replicas[0].Healthy, orders[2].Replicas[1].Healthy)
	if health != "true false false true" {
		t.Errorf("health %s, want true false false true", health)
	}
}

func TestDefaultPartitionID(t *testing.T) {
	cases := []struct {
		service   string
		kind      keying.SchemeKind
		low, high int64
		name      string
		want      string
	}{
		{"users", keying.UniformInt64, 0, 8, "", "users/0:8"},
		{"users", keying.UniformInt64, -5, -1, "", "users/-5:-1"},
		{"s", keying.UniformInt64, math.MinInt64, math.MaxInt64, "", "s/-9223372036854775808:9223372036854775807"},
		{"regions", keying.Named, 0, 0, "eu", "regions/eu"},
		{"settings", keying.Singleton, 0, 0, "", "settings"},
	}
	for _, tc := range cases {
		if got := resolver.DefaultPartitionID(tc.service, tc.kind, tc.low, tc.high, tc.name); got != tc.want {
			t.Errorf("DefaultPartitionID(%q, %v, %d, %d, %q) = %q, want %q", tc.service, tc.kind, tc.low, tc.high, tc.name, got, tc.want)
		}
	}
}

func TestViewVersion(t *testing.T) {
	cfg, _ := example.Load(t)
	data := readFile(t, exampleNaming)
	parse := func(doc string) string {
		t.Helper()
		v, err := resolver.ParseView([]byte(doc), "naming.yaml", cfg)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Version) != 16 {
			t.Errorf("version %q is not 16 hex digits", v.Version)
		}
		return v.Version
	}
	base := parse(data)
	if again := parse(strings.Clone(data)); again != base {
		t.Errorf("the same bytes gave versions %s and %s", base, again)
	}
	changes := []struct{ old, new string }{
		{"127.0.0.1:8088, role: primary}", "127.0.0.1:8088, role: primary, healthy: false}"},
		{"127.0.0.1:8093", "127.0.0.1:8095"},
		{"id: users-0", "id: users-zero"},
		{"role: secondary, healthy: false}", "role: secondary}"},
	}
	seen := map[string]bool{base: true}
	for _, c := range changes {
		v := parse(replace(t, data, c.old, c.new))
		if seen[v] {
			t.Errorf("changing %q to %q gave version %s, which is not new", c.old, c.new, v)
		}
		seen[v] = true
	}
}

// namingConfig is the configuration the naming error cases are checked against.
const namingConfig = `
naming: {file: naming.yaml}
services:
  - name: users
    match: {pathPrefix: /api/users}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 33, count: 4}
    key: {sources: [{path: "/api/users/{id}"}]}
  - name: regions
    match: {pathPrefix: /api/regions}
    partitioning: {scheme: named, names: [eu, us, apac]}
    key: {sources: [{path: "/api/regions/{region}"}]}
  - name: settings
    match: {pathPrefix: /api/settings}
    partitioning: {scheme: singleton}
`

// Valid naming blocks of namingConfig's services, for building views around one mistake.
const (
	usersBlock = `  users:
    partitions:
      - {lowKey: 0, highKey: 8, id: users-0, replicas: [{address: 10.0.0.1:80, role: primary}]}
      - {lowKey: 9, highKey: 17, replicas: [{address: 10.0.0.2:80, role: primary}]}
      - {lowKey: 18, highKey: 25, replicas: [{address: 10.0.0.3:80, role: primary}]}
      - {lowKey: 26, highKey: 33, replicas: [{address: 10.0.0.4:80, role: primary}]}
`
	regionsBlock = `  regions:
    partitions:
      - {name: eu, replicas: [{address: 10.0.1.1:80, role: primary}]}
      - {name: us, replicas: [{address: 10.0.1.2:80, role: primary}]}
      - {name: apac, replicas: [{address: 10.0.1.3:80, role: primary}]}
`
	settingsBlock = `  settings:
    partitions:
      - replicas:
          - {address: 10.0.2.1:80, role: primary}
          - {address: 10.0.2.2:80, role: secondary}
`
)

// wantErr is one expected naming error: its exact path, a fragment of its message, and the
// marker comment on the line it must report; an empty mark means line 0.
type wantErr struct {
	path, fragment, mark string
}

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

func TestParseViewErrors(t *testing.T) {
	cfg, err := config.Parse([]byte(namingConfig), "/etc/partroute/partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	valid := "services:\n" + usersBlock + regionsBlock + settingsBlock
	if _, err := resolver.ParseView([]byte(valid), "naming.yaml", cfg); err != nil {
		t.Fatalf("the base view is invalid: %v", err)
	}
	cases := []struct {
		name string
		doc  string
		want []wantErr
	}{
		{"range not in the scheme", edit(t, valid, "{lowKey: 0, highKey: 8, id: users-0,", "{lowKey: 0, highKey: 9, id: users-0,"),
			[]wantErr{
				{"services.users.partitions", "scheme partition [0, 8] is missing", "partitions: #users"},
				{"services.users.partitions[0]", "[0, 9] is not a partition of the scheme; its partitions are [0, 8] [9, 17] [18, 25] [26, 33]", "#a"},
			}},
		{"range outside the scheme", edit(t, valid, "{lowKey: 26, highKey: 33,", "{lowKey: 26, highKey: 34,"),
			[]wantErr{
				{"services.users.partitions", "scheme partition [26, 33] is missing", "partitions: #users"},
				{"services.users.partitions[3]", "[26, 34] is not a partition of the scheme", "#a"},
			}},
		{"range below the scheme", edit(t, valid, "{lowKey: 0, highKey: 8,", "{lowKey: -1, highKey: 8,"),
			[]wantErr{
				{"services.users.partitions", "scheme partition [0, 8] is missing", "partitions: #users"},
				{"services.users.partitions[0]", "[-1, 8] is not a partition of the scheme", "#a"},
			}},
		{"missing partition", replace(t, valid, "      - {lowKey: 26, highKey: 33, replicas: [{address: 10.0.0.4:80, role: primary}]}\n", ""),
			[]wantErr{{"services.users.partitions", "scheme partition [26, 33] is missing", "partitions: #users"}}},
		{"missing named partition", replace(t, valid, "      - {name: us, replicas: [{address: 10.0.1.2:80, role: primary}]}\n", ""),
			[]wantErr{{"services.regions.partitions", `scheme partition "us" is missing`, "partitions: #regions"}}},
		{"missing singleton partition", edit(t, valid, settingsBlock, "  settings:\n    partitions: []\n"),
			[]wantErr{{"services.settings.partitions", "scheme partition (the singleton) is missing", "#a"}}},
		{"duplicate partition", replace(t, valid, "      - {lowKey: 9, highKey: 17,", "      - {lowKey: 0, highKey: 8, replicas: []}\n      - {lowKey: 9, highKey: 17,"),
			[]wantErr{{"services.users.partitions[1]", "repeats partitions[0]", "{lowKey: 0, highKey: 8, replicas: []}"}}},
		{"duplicate named partition", replace(t, valid, "      - {name: apac,", "      - {name: eu, replicas: []}\n      - {name: apac,"),
			[]wantErr{{"services.regions.partitions[2]", "repeats partitions[0]", "{name: eu, replicas: []}"}}},
		{"name on an int64 partition", edit(t, valid, "{lowKey: 9, highKey: 17,", "{lowKey: 9, highKey: 17, name: eu,"),
			[]wantErr{
				{"services.users.partitions", "scheme partition [9, 17] is missing", "partitions: #users"},
				{"services.users.partitions[1].name", "a uniformInt64 partition is given by lowKey and highKey, not a name", "#a"},
			}},
		{"int64 partition without highKey", edit(t, valid, "{lowKey: 9, highKey: 17,", "{lowKey: 9,"),
			[]wantErr{
				{"services.users.partitions", "scheme partition [9, 17] is missing", "partitions: #users"},
				{"services.users.partitions[1]", "a uniformInt64 partition needs lowKey and highKey", "#a"},
			}},
		{"unknown name", edit(t, valid, "{name: apac,", "{name: asia,"),
			[]wantErr{
				{"services.regions.partitions", `scheme partition "apac" is missing`, "partitions: #regions"},
				{"services.regions.partitions[2].name", `"asia" is not a partition name of the scheme ["eu" "us" "apac"]`, "#a"},
			}},
		{"names are case-sensitive", edit(t, valid, "{name: eu,", "{name: EU,"),
			[]wantErr{
				{"services.regions.partitions", `scheme partition "eu" is missing`, "partitions: #regions"},
				{"services.regions.partitions[0].name", `"EU" is not a partition name`, "#a"},
			}},
		{"named partition with a range", edit(t, valid, "{name: us,", "{name: us, lowKey: 1,"),
			[]wantErr{
				{"services.regions.partitions", `scheme partition "us" is missing`, "partitions: #regions"},
				{"services.regions.partitions[1]", "a named partition is given by name, not lowKey and highKey", "#a"},
			}},
		{"singleton with a key", replace(t, valid, "      - replicas:\n          - {address: 10.0.2.1:80", "      - lowKey: 0\n        replicas:\n          - {address: 10.0.2.1:80"),
			[]wantErr{
				{"services.settings.partitions", "scheme partition (the singleton) is missing", "partitions: #settings"},
				{"services.settings.partitions[0]", "a singleton partition takes no lowKey, highKey or name", "- lowKey: 0"},
			}},
		{"singleton with a name", replace(t, valid, "      - replicas:\n          - {address: 10.0.2.1:80", "      - name: main\n        replicas:\n          - {address: 10.0.2.1:80"),
			[]wantErr{
				{"services.settings.partitions", "scheme partition (the singleton) is missing", "partitions: #settings"},
				{"services.settings.partitions[0]", "a singleton partition takes no lowKey, highKey or name", "- name: main"},
			}},
		{"address without port", edit(t, valid, "{address: 10.0.2.1:80,", "{address: 10.0.2.1,"),
			[]wantErr{{"services.settings.partitions[0].replicas[0].address", `"10.0.2.1" is not host:port`, "#a"}}},
		{"address without host", edit(t, valid, "{address: 10.0.2.1:80,", `{address: ":80",`),
			[]wantErr{{"services.settings.partitions[0].replicas[0].address", `":80" is not host:port`, "#a"}}},
		{"empty address", edit(t, valid, "{address: 10.0.2.1:80, role: primary}", "{role: primary}"),
			[]wantErr{{"services.settings.partitions[0].replicas[0].address", `"" is not host:port`, "#a"}}},
		{"port 0", edit(t, valid, "{address: 10.0.2.1:80,", "{address: 10.0.2.1:0,"),
			[]wantErr{{"services.settings.partitions[0].replicas[0].address", `"10.0.2.1:0" has port "0", not a number from 1 to 65535`, "#a"}}},
		{"port above 65535", edit(t, valid, "{address: 10.0.2.2:80,", "{address: 10.0.2.2:65536,"),
			[]wantErr{{"services.settings.partitions[0].replicas[1].address", `has port "65536"`, "#a"}}},
		{"named port", edit(t, valid, "{address: 10.0.2.2:80,", "{address: \"db:http\","),
			[]wantErr{{"services.settings.partitions[0].replicas[1].address", `"db:http" has port "http"`, "#a"}}},
		{"duplicate address", edit(t, valid, "{address: 10.0.2.2:80,", "{address: 10.0.2.1:80,"),
			[]wantErr{{"services.settings.partitions[0].replicas[1].address", `"10.0.2.1:80" is already services.settings.partitions[0].replicas[0]`, "#a"}}},
		{"address in two partitions", edit(t, valid, "{lowKey: 9, highKey: 17, replicas: [{address: 10.0.0.2:80, role: primary}]}", "{lowKey: 9, highKey: 17, replicas: [{address: 10.0.0.1:80, role: primary}]} #a"),
			[]wantErr{{"services.users.partitions[1].replicas[0].address", `"10.0.0.1:80" is already services.users.partitions[0].replicas[0]`, "#a"}}},
		{"two primaries", edit(t, valid, "{address: 10.0.2.2:80, role: secondary}", "{address: 10.0.2.2:80, role: primary}"),
			[]wantErr{{"services.settings.partitions[0].replicas[1].role", "a partition has at most one primary", "#a"}}},
		{"bad role", edit(t, valid, "{address: 10.0.2.2:80, role: secondary}", "{address: 10.0.2.2:80, role: leader}"),
			[]wantErr{{"services.settings.partitions[0].replicas[1].role", `"leader" is not primary or secondary`, "#a"}}},
		{"missing role", edit(t, valid, "{address: 10.0.2.2:80, role: secondary}", "{address: 10.0.2.2:80}"),
			[]wantErr{{"services.settings.partitions[0].replicas[1].role", `"" is not primary or secondary`, "#a"}}},
		// The error is at the line of the service's value, which a block mapping starts on the
		// next line.
		{"unknown service", valid + "  orders:\n    partitions: [] #a\n",
			[]wantErr{{"services.orders", "no service of that name in the configuration", "#a"}}},
		{"unknown service, flow style", valid + "  orders: {partitions: []} #a\n",
			[]wantErr{{"services.orders", "no service of that name in the configuration", "#a"}}},
		{"configured service missing", replace(t, valid, regionsBlock, ""),
			[]wantErr{{"services.regions", "configured service is missing from the naming view", ""}}},
		{"duplicate id", edit(t, valid, "{lowKey: 9, highKey: 17,", "{lowKey: 9, highKey: 17, id: users-0,"),
			[]wantErr{{"services.users.partitions[1].id", `"users-0" is already the id of partitions[0]`, "#a"}}},
		{"explicit id equal to a derived one", replace(t, valid, "{lowKey: 9, highKey: 17,", "{lowKey: 9, highKey: 17, id: users/18:25,"),
			[]wantErr{{"services.users.partitions[2].id", `"users/18:25" is already the id of partitions[1]`, "{lowKey: 18, highKey: 25"}}},
		{"id with a space", edit(t, valid, "id: users-0,", `id: "users 0",`),
			[]wantErr{{"services.users.partitions[0].id", `"users 0" may hold only visible ASCII without spaces or quotes`, "#a"}}},
		{"id with a quote", edit(t, valid, "id: users-0,", `id: 'users"0',`),
			[]wantErr{{"services.users.partitions[0].id", "may hold only visible ASCII", "#a"}}},
		{"unknown replica field", edit(t, valid, "{address: 10.0.2.2:80, role: secondary}", "{address: 10.0.2.2:80, role: secondary, weight: 2}"),
			[]wantErr{{"services.settings.partitions[0].replicas[1].weight", "unknown field; known fields here: address, role, healthy", "#a"}}},
		{"unknown partition field", edit(t, valid, "{name: us,", "{name: us, shard: 2,"),
			[]wantErr{{"services.regions.partitions[1].shard", "unknown field; known fields here: id, lowKey, highKey, name, replicas", "#a"}}},
		{"unknown top-level field", valid + "version: 3 #a\n",
			[]wantErr{{"version", "unknown field; known fields here: services", "#a"}}},
		{"healthy not a boolean", edit(t, valid, "{address: 10.0.2.2:80, role: secondary}", "{address: 10.0.2.2:80, role: secondary, healthy: maybe}"),
			[]wantErr{{"services.settings.partitions[0].replicas[1].healthy", "cannot unmarshal !!str `maybe` into bool", "#a"}}},
		{"repeated service", valid + "  settings: #a\n    partitions: []\n",
			[]wantErr{{"services.settings", "appears more than once", "#a"}}},
		{"not YAML", "services: [\n",
			[]wantErr{{"", "not valid YAML", ""}}},
		{"empty file", "",
			[]wantErr{
				{"services.users", "configured service is missing", ""},
				{"services.regions", "configured service is missing", ""},
				{"services.settings", "configured service is missing", ""},
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Markers for the partitions: line of each service.
			doc := strings.NewReplacer(
				"  users:\n    partitions:", "  users:\n    partitions: #users",
				"  regions:\n    partitions:", "  regions:\n    partitions: #regions",
				"  settings:\n    partitions:\n", "  settings:\n    partitions: #settings\n",
			).Replace(tc.doc)
			v, err := resolver.ParseView([]byte(doc), "/etc/partroute/naming.yaml", cfg)
			if err == nil {
				t.Fatalf("ParseView accepted:\n%s", doc)
			}
			if v != nil {
				t.Error("ParseView returned a view along with an error")
			}
			var errs *config.Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error %T is not *config.Errors: %v", err, err)
			}
			if errs.File != "/etc/partroute/naming.yaml" {
				t.Errorf("Errors.File = %q", errs.File)
			}
			got := errs.List
			if len(got) != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%v", len(got), len(tc.want), err)
			}
			for i := 0; i < len(got) && i < len(tc.want); i++ {
				g, w := got[i], tc.want[i]
				line := lineOf(t, doc, w.mark)
				if g.Path != w.path || !strings.Contains(g.Message, w.fragment) || g.Line != line {
					t.Errorf("error %d = %q (line %d), want path %q, line %d, message containing %q", i, g.Path+": "+g.Message, g.Line, w.path, line, w.fragment)
				}
			}
		})
	}
}

func TestParseViewListsLongSchemesShort(t *testing.T) {
	cfg, err := config.Parse([]byte(`
naming: {file: naming.yaml}
services:
  - name: big
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 10}
    key: {sources: [{header: x-key}]}
`), "partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	_, err = resolver.ParseView([]byte("services:\n  big:\n    partitions:\n      - {lowKey: 0, highKey: 10, replicas: []}\n"), "naming.yaml", cfg)
	if err == nil {
		t.Fatal("ParseView accepted a partition that is not in the scheme")
	}
	want := "[0, 10] is not a partition of the scheme; its partitions are [0, 9] [10, 19] [20, 29] [30, 39] [40, 49] [50, 59] [60, 69] [70, 79] ... (10 in all)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error does not hold %q:\n%v", want, err)
	}
	// Each of the ten missing partitions is reported.
	if n := strings.Count(err.Error(), "is missing"); n != 10 {
		t.Errorf("%d missing partitions reported, want 10:\n%v", n, err)
	}
}

func TestParseViewReportsEveryError(t *testing.T) {
	cfg, err := config.Parse([]byte(namingConfig), "partroute.yaml")
	if err != nil {
		t.Fatal(err)
	}
	doc := "services:\n" + usersBlock + regionsBlock + settingsBlock
	doc = replace(t, doc, "{name: us,", "{name: uk,")
	doc = replace(t, doc, "{address: 10.0.2.2:80, role: secondary}", "{address: 10.0.2.2:0, role: master}")
	doc = replace(t, doc, "id: users-0,", "id: 'a b',")
	doc += "  billing:\n    partitions: []\n"
	_, err = resolver.ParseView([]byte(doc), "naming.yaml", cfg)
	var errs *config.Errors
	if !errors.As(err, &errs) {
		t.Fatalf("error %v is not *config.Errors", err)
	}
	var paths []string
	for _, e := range errs.List {
		paths = append(paths, e.Path)
	}
	want := []string{
		"services.users.partitions[0].id",
		"services.regions.partitions",
		"services.regions.partitions[1].name",
		"services.settings.partitions[0].replicas[1].address",
		"services.settings.partitions[0].replicas[1].role",
		"services.billing",
	}
	if !reflect.DeepEqual(paths, want) {
		t.Errorf("error paths\n%q\nwant\n%q\n%v", paths, want, err)
	}
}

// A view fits only the configuration whose schemes it has: one built for an earlier
// configuration is told apart service by service.
func TestViewFits(t *testing.T) {
	cfg, view := example.Load(t)
	if err := view.Fits(cfg); err != nil {
		t.Fatalf("the example view does not fit its configuration: %v", err)
	}
	data, err := os.ReadFile(exampleConfig)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name, old, new, service string
	}{
		{"more partitions", "highKey: 33, count: 4", "highKey: 33, count: 5", "users"},
		{"other bounds", "highKey: 33, count: 4", "highKey: 34, count: 4", "users"},
		{"other names", "names: [eu, us, apac]", "names: [eu, apac, us]", "regions"},
		{"other scheme", "{scheme: named, names: [eu, us, apac]}\n    key: {sources: [{path: \"/api/regions/{region}\"}], transform: name}",
			"{scheme: uniformInt64, lowKey: 0, highKey: 2, count: 3}\n    key: {sources: [{path: \"/api/regions/{region}\"}], transform: hash}", "regions"},
	} {
		t.Run(c.name, func(t *testing.T) {
			text := string(data)
			if !strings.Contains(text, c.old) {
				t.Fatalf("%q is not in the example configuration", c.old)
			}
			other, err := config.Parse([]byte(strings.Replace(text, c.old, c.new, 1)), exampleConfig)
			if err != nil {
				t.Fatal(err)
			}
			err = view.Fits(other)
			if err == nil || !strings.Contains(err.Error(), "service "+c.service+":") {
				t.Fatalf("Fits = %v, want an error naming service %s", err, c.service)
			}
			if n := strings.Count(err.Error(), "service "); n != 1 {
				t.Errorf("Fits names %d services, want only %s: %v", n, c.service, err)
			}
		})
	}
}
