package etcdsource_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
)

// exampleKVs returns the example view as the key/value pairs Write stores, keys relative to the
// prefix.
func exampleKVs(t *testing.T) map[string][]byte {
	t.Helper()
	_, view := example.Load(t)
	kvs := map[string][]byte{}
	for service, list := range resolver.Entries(view) {
		for i := range list {
			seg, err := etcdsource.Segment(&list[i])
			if err != nil {
				t.Fatal(err)
			}
			v, err := etcdsource.EncodeEntry(&list[i])
			if err != nil {
				t.Fatal(err)
			}
			kvs[etcdsource.RelativeKey(service, seg)] = v
		}
	}
	return kvs
}

func TestAssembleIsTheFileView(t *testing.T) {
	cfg, file := example.Load(t)
	kvs := exampleKVs(t)
	v, err := etcdsource.Assemble(kvs, cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v.Services, file.Services) {
		t.Errorf("assembled view differs from the file's")
	}

	// The version follows the content, not its spelling: the same entry with other spacing
	// and field order is the same version; a changed entry is another.
	kvs["services/settings/partitions/singleton"] = []byte(` { "replicas" : [ {"role":"primary", "address":"127.0.0.1:8099"} ] } `)
	same, err := etcdsource.Assemble(kvs, cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if same.Version != v.Version {
		t.Errorf("respelt entry changed the version: %s, was %s", same.Version, v.Version)
	}
	kvs["services/settings/partitions/singleton"] = []byte(`{"replicas":[{"address":"127.0.0.1:8099","role":"primary","healthy":false}]}`)
	other, err := etcdsource.Assemble(kvs, cfg, "test")
	if err != nil {
		t.Fatal(err)
	}
	if other.Version == v.Version {
		t.Error("changed entry kept the version")
	}
}

func TestAssembleErrors(t *testing.T) {
	cfg, _ := example.Load(t)
	for _, tc := range []struct {
		name       string
		key, value string // the key is set to the value, or deleted when delete is set
		delete     bool
		want       []string
	}{
		{name: "key outside the layout", key: "services/users/0:8", value: `{}`,
			want: []string{"services/users/0:8: not a partition key: want services/<service>/partitions/<partition>"}},
		{name: "stray key", key: "version", value: `1`,
			want: []string{"version: not a partition key"}},
		{name: "unknown service", key: "services/orders/partitions/singleton", value: `{"replicas":[]}`,
			want: []string{"services.orders: no service of that name in the configuration"}},
		{name: "unknown partition", key: "services/regions/partitions/asia", value: `{"name":"asia","replicas":[]}`,
			want: []string{`services/regions/partitions/asia.name: "asia" is not a partition name of the scheme`}},
		{name: "range that is not a partition", key: "services/users/partitions/0:9", value: `{"lowKey":0,"highKey":9,"replicas":[]}`,
			want: []string{"services/users/partitions/0:9: [0, 9] is not a partition of the scheme"}},
		{name: "key and value disagree", key: "services/users/partitions/0:8", value: `{"lowKey":9,"highKey":17,"replicas":[]}`,
			want: []string{`services/users/partitions/0:8: the key names partition "0:8" but its value describes partition "9:17"`}},
		{name: "half a range", key: "services/users/partitions/0:8", value: `{"lowKey":0,"replicas":[]}`,
			want: []string{"services/users/partitions/0:8: a partition with a key range needs both lowKey and highKey"}},
		{name: "not JSON", key: "services/settings/partitions/singleton", value: `replicas: []`,
			want: []string{"services/settings/partitions/singleton: value is not a partition entry in JSON"}},
		{name: "unknown field", key: "services/settings/partitions/singleton", value: `{"replicas":[{"address":"127.0.0.1:1","role":"primary","healty":false}]}`,
			want: []string{`services/settings/partitions/singleton: value is not a partition entry in JSON: json: unknown field "healty"`}},
		{name: "data after the entry", key: "services/settings/partitions/singleton", value: `{"replicas":[]} {}`,
			want: []string{"data after the entry"}},
		{name: "fraction", key: "services/users/partitions/0:8", value: `{"lowKey":0.5,"highKey":8,"replicas":[]}`,
			want: []string{"services/users/partitions/0:8: value is not a partition entry in JSON"}},
		{name: "two primaries", key: "services/settings/partitions/singleton", value: `{"replicas":[{"address":"127.0.0.1:1","role":"primary"},{"address":"127.0.0.1:2","role":"primary"}]}`,
			want: []string{"services/settings/partitions/singleton.replicas[1].role: a partition has at most one primary"}},
		{name: "repeated id", key: "services/users/partitions/9:17", value: `{"id":"users-0","lowKey":9,"highKey":17,"replicas":[]}`,
			want: []string{`services/users/partitions/9:17.id: "users-0" is already the id of services/users/partitions/0:8`}},
		{name: "missing partition", key: "services/regions/partitions/us", delete: true,
			want: []string{`services.regions.partitions: scheme partition "us" is missing`}},
		{name: "missing service", key: "services/settings/partitions/singleton", delete: true,
			want: []string{"services.settings: configured service is missing from the naming view"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kvs := exampleKVs(t)
			if tc.delete {
				delete(kvs, tc.key)
			} else {
				kvs[tc.key] = []byte(tc.value)
			}
			_, err := etcdsource.Assemble(kvs, cfg, "etcd prefix /p/ at revision 7")
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "etcd prefix /p/ at revision 7: ") {
				t.Errorf("message does not name the source: %s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("message lacks %q:\n%s", w, msg)
				}
			}
			if n := strings.Count(msg, "\n  "); n != len(tc.want) {
				t.Errorf("%d errors, want %d:\n%s", n, len(tc.want), msg)
			}
		})
	}
}

// A value that is not a partition entry is an error that keeps the JSON decoder's, so that a
// caller can tell where in the value the decoder stopped.
func TestDecodeEntryErrorKeepsTheCause(t *testing.T) {
	var syntax *json.SyntaxError
	var typ *json.UnmarshalTypeError
	for _, tc := range []struct {
		value string
		as    any
	}{
		{`replicas: []`, &syntax},
		{`{"replicas": [}`, &syntax},
		{`{"lowKey": 0.5, "highKey": 8, "replicas": []}`, &typ},
		{`{"replicas": "none"}`, &typ},
	} {
		_, err := etcdsource.DecodeEntry([]byte(tc.value))
		if err == nil || !errors.As(err, tc.as) {
			t.Errorf("DecodeEntry(%s) = %v, want an error that is a %v", tc.value, err, reflect.TypeOf(tc.as).Elem())
		}
	}
}

func TestSplitKey(t *testing.T) {
	for _, tc := range []struct{ key, service, segment string }{
		{"services/users/partitions/0:8", "users", "0:8"},
		{"services/sessions/partitions/-9223372036854775808:-1", "sessions", "-9223372036854775808:-1"},
		{"services/regions/partitions/eu/west", "regions", "eu/west"}, // a name may hold a slash
		{"services/settings/partitions/singleton", "settings", "singleton"},
	} {
		svc, seg, err := etcdsource.SplitKey(tc.key)
		if err != nil || svc != tc.service || seg != tc.segment {
			t.Errorf("SplitKey(%q) = %q, %q, %v", tc.key, svc, seg, err)
		}
	}
	for _, bad := range []string{"", "services/", "services/users", "services/users/partitions/", "services//partitions/x", "x/users/partitions/1"} {
		if _, _, err := etcdsource.SplitKey(bad); err == nil {
			t.Errorf("SplitKey(%q) accepted", bad)
		}
	}
}

func TestNormalizePrefix(t *testing.T) {
	for in, want := range map[string]string{"": "/partroute/naming/", "/a/b": "/a/b/", "/a/b/": "/a/b/"} {
		if got := etcdsource.NormalizePrefix(in); got != want {
			t.Errorf("NormalizePrefix(%q) = %q, want %q", in, got, want)
		}
	}
}
