package resolver_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// FuzzNamingParse checks that ParseView never panics, and that a view it accepts holds every
// partition of every configured service, each answering lookups.
func FuzzNamingParse(f *testing.F) {
	cfg, err := config.Load(exampleConfig)
	if err != nil {
		f.Fatal(err)
	}
	example := readFile(f, exampleNaming)
	f.Add([]byte(example))
	f.Add([]byte(""))
	f.Add([]byte("services: ["))
	f.Add([]byte("services: {settings: {partitions: [{replicas: [{address: 'a:1', role: primary}]}]}}\n"))
	f.Add([]byte("x: &a {partitions: [*a]}\nservices: {settings: *a}\n"))
	for _, broken := range []struct{ from, to string }{
		{"highKey: 8", "highKey: 9"},
		{"- name: eu", "- name: EU"},
		{"role: primary}", "role: primary, healthy: false}"},
		{"127.0.0.1:8082", "127.0.0.1:8081"},
		{"127.0.0.1:8099", "127.0.0.1:0"},
		{"id: users-1", "id: users-0"},
		{"role: secondary}", "role: primary}"},
		{"  settings:", "  other:"},
		{"lowKey: -9223372036854775808", "lowKey: -9223372036854775809"},
	} {
		if !strings.Contains(example, broken.from) {
			f.Fatalf("the example no longer holds %q", broken.from)
		}
		f.Add([]byte(strings.Replace(example, broken.from, broken.to, 1)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := resolver.ParseView(data, "naming.yaml", cfg)
		if err != nil {
			var errs *config.Errors
			if v != nil || !errors.As(err, &errs) || len(errs.List) == 0 {
				t.Fatalf("ParseView returned %v with %T %v", v, err, err)
			}
			_ = err.Error()
			return
		}
		for _, svc := range cfg.Services {
			sv := v.Services[svc.Name]
			if sv == nil || len(sv.Partitions) != svc.Scheme().Count() || sv.Kind != svc.Scheme().Kind() {
				t.Fatalf("service %s is not fully in the view", svc.Name)
			}
			ids := map[string]bool{}
			for i := range sv.Partitions {
				p, err := v.Partition(context.Background(), svc, keying.Key{Index: i})
				if err != nil || p.Index != i || p.ID == "" || ids[p.ID] {
					t.Fatalf("%s partition %d: %+v, %v", svc.Name, i, p, err)
				}
				ids[p.ID] = true
				primaries := 0
				for _, r := range p.Replicas {
					if r.Role == resolver.RolePrimary {
						primaries++
					}
				}
				if primaries > 1 {
					t.Fatalf("%s partition %s has %d primaries", svc.Name, p.ID, primaries)
				}
				for _, policy := range []config.ReadPolicy{config.ReadPrimary, config.ReadSecondary, config.ReadAny} {
					resolver.ChooseRole(p, policy, true, false)
				}
			}
		}
	})
}
