package servicefabric

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

func TestEnumerate(t *testing.T) {
	env := newEnv(t, nil, nil)
	view, err := env.src.Enumerate(context.Background(), env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(view.Version) != 16 || strings.Trim(view.Version, "0123456789abcdef") != "" || len(view.Services) != 4 {
		t.Fatalf("view %s with %d services", view.Version, len(view.Services))
	}
	type part struct {
		id       string
		low, hi  int64
		name     string
		replicas []string
	}
	want := map[string][]part{
		// Page two of [0, 8]'s replicas: the secondary in HealthState Error is kept but
		// unhealthy; the InBuild idle secondary and the Down one are left out.
		"users": {
			{users0, 0, 8, "", []string{"primary 10.0.0.4:8080", "secondary 10.0.0.5:8080", "secondary 10.0.0.6:8080 unhealthy"}},
			{users1, 9, 17, "", []string{"primary 10.0.0.7:8080", "secondary 10.0.0.8:8080"}},
			{users2, 18, 25, "", []string{"primary 10.0.0.10:8080", "secondary 10.0.0.11:8080"}},
			{users3, 26, 33, "", []string{"primary 10.0.0.12:8080", "secondary 10.0.0.15:8080"}},
		},
		// Listed us, eu, apac; kept in partroute.yaml's order, through the Zed listener.
		"regions": {
			{regionEU, 0, 0, "eu", []string{"primary 10.0.1.4:8080"}},
			{regionUS, 0, 0, "us", []string{"primary 10.0.1.5:8080"}},
			{regionAP, 0, 0, "apac", []string{"primary 10.0.1.6:8080"}},
		},
		"settings": {{settings, 0, 0, "", []string{"primary 10.0.2.4:7000"}}},
		"catalog":  {{catalog, 0, 0, "", []string{"primary 10.0.3.4:80", "primary 10.0.3.5:80", "primary [fd00::6]:443 unhealthy"}}},
	}
	for name, parts := range want {
		sv := view.Services[name]
		if sv == nil || sv.Name != name || sv.Kind != env.cfg.Service(name).Scheme().Kind() || len(sv.Partitions) != len(parts) {
			t.Errorf("service %s: %+v", name, sv)
			continue
		}
		for i, w := range parts {
			p := sv.Partitions[i]
			got := part{p.ID, p.LowKey, p.HighKey, p.Name, replicaList(p.Replicas)}
			if p.Index != i || !reflect.DeepEqual(got, w) {
				t.Errorf("%s partition %d: %+v (index %d), want %+v", name, i, got, p.Index, w)
			}
		}
	}
	// The view answers like any naming source.
	p, err := view.Partition(context.Background(), env.cfg.Service("users"), keying.Key{Index: 2})
	if err != nil || p.ID != users2 {
		t.Errorf("view.Partition: %v, %v", p, err)
	}
	// Both listings followed their continuation tokens.
	if n := len(env.gw.requests("/Services/shop~users/$/GetPartitions")); n != 2 {
		t.Errorf("%d partition pages", n)
	}
	if n := len(env.gw.requests("/Partitions/" + users0)); n != 2 {
		t.Errorf("%d replica pages", n)
	}
}

func TestEnumerateVersionFollowsContent(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	v1, err := env.src.Enumerate(ctx, env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	// The same replicas listed in another order: the same content, the same version.
	env.gw.on("/Partitions/"+users1+"/$/GetReplicas", reply{status: 200, body: reversedItems(t, "replicas-users-1.json")})
	v2, err := env.src.Enumerate(ctx, env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Version != v1.Version {
		t.Errorf("reordered replicas changed the version: %s, %s", v1.Version, v2.Version)
	}
	// A failover changes it.
	env.gw.on("/Partitions/"+users0+"/$/GetReplicas", ok("replicas-users-0-page1-failover.json"))
	v3, err := env.src.Enumerate(ctx, env.cfg)
	if err != nil {
		t.Fatal(err)
	}
	if v3.Version == v1.Version {
		t.Error("a new primary left the version unchanged")
	}
}

// reversedItems serves a fixture of testdata with its Items in the opposite order.
func reversedItems(t *testing.T, file string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", file))
	if err != nil {
		t.Fatal(err)
	}
	var page map[string]any
	if err := json.Unmarshal(data, &page); err != nil {
		t.Fatal(err)
	}
	items, _ := page["Items"].([]any)
	slices.Reverse(items)
	out, err := json.Marshal(page)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestEnumerateSchemeMismatch(t *testing.T) {
	for _, tc := range []struct {
		name, service, want string
	}{
		{"int64 count", `{name: users, partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 33, count: 3}, key: {sources: [{header: k}], transform: int64}}`,
			"service users (fabric:/shop/users): the Service Fabric partition " + users0 + " covers [0, 8], which is not a partition of partroute.yaml's scheme [0, 11] [12, 22] [23, 33]"},
		{"int64 range", `{name: users, partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 40, count: 4}, key: {sources: [{header: k}], transform: int64}}`,
			"covers [0, 8], which is not a partition"},
		{"extra name", `{name: regions, partitioning: {scheme: named, names: [eu, us]}, key: {sources: [{header: k}], transform: name}}`,
			`is named "apac", which partroute.yaml's names "eu" "us" do not include`},
		{"missing name", `{name: regions, partitioning: {scheme: named, names: [eu, us, apac, latam]}, key: {sources: [{header: k}], transform: name}}`,
			`Service Fabric has no partition for partroute.yaml's "latam"`},
		{"kind", `{name: settings, partitioning: {scheme: named, names: [a]}, key: {sources: [{header: k}], transform: name}}`,
			"partroute.yaml says named but the Service Fabric partition " + settings + " is Singleton"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := newEnv(t, nil, nil)
			cfg := loadConfig(t, "naming: {source: file, file: naming.yaml}\nservices:\n  - "+tc.service+"\n")
			_, err := env.src.Enumerate(context.Background(), cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestEnumerateUnmappedService(t *testing.T) {
	env := newEnv(t, nil, func(o *SourceOptions) {
		o.Services = map[string]ServiceMapping{"users": {FabricName: "fabric:/shop/users"}}
	})
	_, err := env.src.Enumerate(context.Background(), env.cfg)
	if err == nil || !strings.Contains(err.Error(), "service catalog is not mapped") || !strings.Contains(err.Error(), "service settings is not mapped") {
		t.Errorf("error %v", err)
	}
}

func TestRefreshInvalidatesChangedPartitions(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	users := env.cfg.Service("users")
	resolves := func() int { return len(env.gw.requests("/Services/shop~users/$/ResolvePartition")) }
	if _, err := env.src.Partition(ctx, users, keying.Key{Index: 0}); err != nil {
		t.Fatal(err)
	}

	view1, changed, err := env.src.Refresh(ctx, env.cfg)
	if err != nil || !changed || view1 == nil {
		t.Fatalf("first refresh: %v, changed %v", err, changed)
	}
	view2, changed, err := env.src.Refresh(ctx, env.cfg)
	if err != nil || changed || view2.Version != view1.Version {
		t.Fatalf("second refresh: %v, changed %v", err, changed)
	}
	if _, err := env.src.Partition(ctx, users, keying.Key{Index: 0}); err != nil || resolves() != 1 {
		t.Fatalf("an unchanged partition was re-resolved (%d resolutions): %v", resolves(), err)
	}

	// The enumeration sees the failover before any request fails: the entry is refreshed.
	env.gw.on("/Partitions/"+users0+"/$/GetReplicas", ok("replicas-users-0-page1-failover.json"))
	env.gw.on("/Services/shop~users/$/ResolvePartition?PartitionKeyType=2&PartitionKeyValue=0", ok("resolve-users-0-v2.json"))
	view3, changed, err := env.src.Refresh(ctx, env.cfg)
	if err != nil || !changed || view3.Version == view1.Version {
		t.Fatalf("refresh after the failover: %v, changed %v", err, changed)
	}
	if n := counter(t, env.reg, "partroute_servicefabric_partition_changes_total", nil); n != 1 {
		t.Errorf("partition changes %v, want 1", n)
	}
	p, err := env.src.Partition(ctx, users, keying.Key{Index: 0})
	if err != nil || resolves() != 2 || replicaList(p.Replicas)[0] != "primary 10.0.0.5:8080" {
		t.Fatalf("after the refresh: %v (%d resolutions), %v", p, resolves(), err)
	}
	reqs := env.gw.requests("/Services/shop~users/$/ResolvePartition")
	if got := reqs[1].URL.Query().Get("PreviousRspVersion"); got != "132587449886596373" {
		t.Errorf("PreviousRspVersion %q", got)
	}
	// Other partitions kept their entries.
	if n := counter(t, env.reg, "partroute_servicefabric_reresolves_total", map[string]string{"result": "accepted"}); n != 0 {
		t.Errorf("enumeration-driven refreshes are not failure signals, yet %v were counted", n)
	}
}

func TestRefreshKeepsFailingServices(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx := context.Background()
	env.gw.on("/Services/shop~regions/$/GetPartitions", reply{status: 503, file: "error-service-offline.json"})
	view, changed, err := env.src.Refresh(ctx, env.cfg)
	if err == nil || !strings.Contains(err.Error(), "service regions (fabric:/shop/regions)") || !changed || view == nil {
		t.Fatalf("refresh with regions failing: %v, changed %v", err, changed)
	}
	if view.Services["regions"] != nil || view.Services["users"] == nil {
		t.Fatalf("services %v", view.Services)
	}

	env.gw.on("/Services/shop~regions/$/GetPartitions", ok("partitions-regions.json"))
	good, _, err := env.src.Refresh(ctx, env.cfg)
	if err != nil || good.Services["regions"] == nil {
		t.Fatalf("refresh with regions back: %v", err)
	}

	// regions fails again: its previous content stands in, and nothing changed.
	env.gw.on("/Services/shop~regions/$/GetPartitions", reply{status: 503, file: "error-service-offline.json"})
	view, changed, err = env.src.Refresh(ctx, env.cfg)
	if err == nil || changed || view.Version != good.Version || view.Services["regions"] != good.Services["regions"] {
		t.Fatalf("refresh with regions failing again: %v, changed %v, version %s want %s", err, changed, view.Version, good.Version)
	}
	if n := counter(t, env.reg, "partroute_servicefabric_enumerations_total", map[string]string{"result": "error"}); n != 2 {
		t.Errorf("failed enumerations %v", n)
	}
}

func TestRun(t *testing.T) {
	env := newEnv(t, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	views := make(chan *resolver.View, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		env.src.Run(ctx, time.Millisecond, func() *config.Config { return env.cfg }, func(v *resolver.View) { views <- v })
	}()
	first := <-views
	env.gw.on("/Partitions/"+users0+"/$/GetReplicas", ok("replicas-users-0-page1-failover.json"))
	second := <-views
	if second.Version == first.Version {
		t.Error("Run reported a view with an unchanged version")
	}
	if r := replicaList(second.Services["users"].Partitions[0].Replicas); r[0] != "primary 10.0.0.5:8080" {
		t.Errorf("second view: %q", r)
	}
	cancel()
	<-done
}
