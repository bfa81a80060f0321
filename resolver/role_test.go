package resolver_test

import (
	"reflect"
	"testing"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
)

// Partitions in every state of health that the role choice tells apart.
var (
	// healthy has a healthy primary and a healthy secondary, and one secondary that is down.
	healthy = &resolver.Partition{ID: "healthy", Replicas: []resolver.Replica{
		primary("10.0.0.1:80"), secondary("10.0.0.2:80"), down(secondary("10.0.0.3:80"))}}
	// secondariesDown has a healthy primary and only unhealthy secondaries.
	secondariesDown = &resolver.Partition{ID: "secondaries-down", Replicas: []resolver.Replica{
		primary("10.0.0.1:80"), down(secondary("10.0.0.2:80")), down(secondary("10.0.0.3:80"))}}
	// primaryDown has an unhealthy primary and a healthy secondary.
	primaryDown = &resolver.Partition{ID: "primary-down", Replicas: []resolver.Replica{
		down(primary("10.0.0.1:80")), secondary("10.0.0.2:80")}}
	// noPrimary has healthy secondaries and no primary at all.
	noPrimary = &resolver.Partition{ID: "no-primary", Replicas: []resolver.Replica{
		secondary("10.0.0.2:80"), secondary("10.0.0.3:80")}}
	// primaryOnly has a single healthy primary.
	primaryOnly = &resolver.Partition{ID: "primary-only", Replicas: []resolver.Replica{primary("10.0.0.1:80")}}
	// allDown has replicas, none of them healthy.
	allDown = &resolver.Partition{ID: "all-down", Replicas: []resolver.Replica{
		down(primary("10.0.0.1:80")), down(secondary("10.0.0.2:80"))}}
	// noReplicas has no replicas at all.
	noReplicas = &resolver.Partition{ID: "no-replicas"}
)

var allPolicies = []config.ReadPolicy{config.ReadPrimary, config.ReadSecondary, config.ReadAny}

func TestChooseRole(t *testing.T) {
	type row struct {
		name     string
		p        *resolver.Partition
		policies []config.ReadPolicy
		isRead   bool
		strong   bool
		role     resolver.Role
		ok       bool
	}
	var rows []row
	// Writes go to the primary under every policy, strong or not, and only a healthy primary
	// takes them.
	for _, strong := range []bool{false, true} {
		rows = append(rows,
			row{"write, healthy", healthy, allPolicies, false, strong, resolver.RolePrimary, true},
			row{"write, secondaries down", secondariesDown, allPolicies, false, strong, resolver.RolePrimary, true},
			row{"write, primary only", primaryOnly, allPolicies, false, strong, resolver.RolePrimary, true},
			row{"write, primary down", primaryDown, allPolicies, false, strong, resolver.RolePrimary, false},
			row{"write, no primary", noPrimary, allPolicies, false, strong, resolver.RolePrimary, false},
			row{"write, all down", allDown, allPolicies, false, strong, resolver.RolePrimary, false},
			row{"write, no replicas", noReplicas, allPolicies, false, strong, resolver.RolePrimary, false},
		)
	}
	rows = append(rows,
		// A strong read goes to the primary whatever the policy.
		row{"strong read, healthy", healthy, allPolicies, true, true, resolver.RolePrimary, true},
		row{"strong read, primary down", primaryDown, allPolicies, true, true, resolver.RolePrimary, false},
		row{"strong read, no primary", noPrimary, allPolicies, true, true, resolver.RolePrimary, false},
		row{"strong read, no replicas", noReplicas, allPolicies, true, true, resolver.RolePrimary, false},

		// The primary policy reads from the primary only.
		row{"primary read, healthy", healthy, []config.ReadPolicy{config.ReadPrimary}, true, false, resolver.RolePrimary, true},
		row{"primary read, secondaries down", secondariesDown, []config.ReadPolicy{config.ReadPrimary}, true, false, resolver.RolePrimary, true},
		row{"primary read, primary down", primaryDown, []config.ReadPolicy{config.ReadPrimary}, true, false, resolver.RolePrimary, false},
		row{"primary read, no primary", noPrimary, []config.ReadPolicy{config.ReadPrimary}, true, false, resolver.RolePrimary, false},
		row{"primary read, all down", allDown, []config.ReadPolicy{config.ReadPrimary}, true, false, resolver.RolePrimary, false},
		row{"primary read, no replicas", noReplicas, []config.ReadPolicy{config.ReadPrimary}, true, false, resolver.RolePrimary, false},

		// The secondary policy prefers secondaries and falls back to the primary.
		row{"secondary read, healthy", healthy, []config.ReadPolicy{config.ReadSecondary}, true, false, resolver.RoleSecondary, true},
		row{"secondary read, secondaries down", secondariesDown, []config.ReadPolicy{config.ReadSecondary}, true, false, resolver.RolePrimary, true},
		row{"secondary read, primary only", primaryOnly, []config.ReadPolicy{config.ReadSecondary}, true, false, resolver.RolePrimary, true},
		row{"secondary read, primary down", primaryDown, []config.ReadPolicy{config.ReadSecondary}, true, false, resolver.RoleSecondary, true},
		row{"secondary read, no primary", noPrimary, []config.ReadPolicy{config.ReadSecondary}, true, false, resolver.RoleSecondary, true},
		row{"secondary read, all down", allDown, []config.ReadPolicy{config.ReadSecondary}, true, false, resolver.RolePrimary, false},
		row{"secondary read, no replicas", noReplicas, []config.ReadPolicy{config.ReadSecondary}, true, false, resolver.RolePrimary, false},

		// The any policy takes any healthy replica.
		row{"any read, healthy", healthy, []config.ReadPolicy{config.ReadAny}, true, false, resolver.RoleAny, true},
		row{"any read, secondaries down", secondariesDown, []config.ReadPolicy{config.ReadAny}, true, false, resolver.RoleAny, true},
		row{"any read, primary down", primaryDown, []config.ReadPolicy{config.ReadAny}, true, false, resolver.RoleAny, true},
		row{"any read, no primary", noPrimary, []config.ReadPolicy{config.ReadAny}, true, false, resolver.RoleAny, true},
		row{"any read, all down", allDown, []config.ReadPolicy{config.ReadAny}, true, false, resolver.RoleAny, false},
		row{"any read, no replicas", noReplicas, []config.ReadPolicy{config.ReadAny}, true, false, resolver.RoleAny, false},
	)
	for _, r := range rows {
		for _, policy := range r.policies {
			role, ok := resolver.ChooseRole(r.p, policy, r.isRead, r.strong)
			if role != r.role || ok != r.ok {
				t.Errorf("%s (policy %s, strong %v): ChooseRole = %s, %v; want %s, %v", r.name, policy, r.strong, role, ok, r.role, r.ok)
			}
		}
	}
}

func TestCandidates(t *testing.T) {
	cases := []struct {
		p    *resolver.Partition
		role resolver.Role
		want []string
	}{
		{healthy, resolver.RolePrimary, []string{"10.0.0.1:80"}},
		{healthy, resolver.RoleSecondary, []string{"10.0.0.2:80"}},
		{healthy, resolver.RoleAny, []string{"10.0.0.1:80", "10.0.0.2:80"}},
		{secondariesDown, resolver.RoleSecondary, nil},
		{primaryDown, resolver.RolePrimary, nil},
		{primaryDown, resolver.RoleAny, []string{"10.0.0.2:80"}},
		{noPrimary, resolver.RoleSecondary, []string{"10.0.0.2:80", "10.0.0.3:80"}},
		{allDown, resolver.RoleAny, nil},
		{noReplicas, resolver.RoleAny, nil},
	}
	for _, tc := range cases {
		var got []string
		for _, r := range resolver.Candidates(tc.p, tc.role) {
			if !r.Healthy {
				t.Errorf("%s %s: candidate %s is unhealthy", tc.p.ID, tc.role, r.Address)
			}
			got = append(got, r.Address)
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Candidates(%s, %s) = %q, want %q", tc.p.ID, tc.role, got, tc.want)
		}
	}
}

func TestRoleString(t *testing.T) {
	for r, want := range map[resolver.Role]string{
		resolver.RolePrimary: "primary", resolver.RoleSecondary: "secondary", resolver.RoleAny: "any", 0: "unknown", 7: "unknown",
	} {
		if got := r.String(); got != want {
			t.Errorf("Role(%d).String() = %q, want %q", r, got, want)
		}
	}
}

func TestAppendHostList(t *testing.T) {
	P, S := resolver.RolePrimary, resolver.RoleSecondary
	rep := func(addr string, role resolver.Role, healthy bool) resolver.Replica {
		return resolver.Replica{Address: addr, Role: role, Healthy: healthy}
	}
	three := &resolver.Partition{ID: "p", Replicas: []resolver.Replica{
		rep("10.0.0.1:80", S, true), rep("10.0.0.2:80", P, true), rep("10.0.0.3:80", S, true), rep("[fd00::4]:80", S, true),
	}}
	degraded := &resolver.Partition{ID: "p", Replicas: []resolver.Replica{
		rep("10.0.0.1:80", S, false), rep("10.0.0.2:80", P, true), rep("replica-3.local:80", S, true), rep("10.0.0.4:80", S, true),
	}}
	none := &resolver.Partition{ID: "p", Replicas: []resolver.Replica{rep("10.0.0.1:80", S, false), rep("10.0.0.2:80", P, false)}}
	for _, c := range []struct {
		name string
		p    *resolver.Partition
		role resolver.Role
		rot  uint32
		want string
	}{
		{"a write lists the primary alone", three, P, 5, "10.0.0.2:80"},
		{"reads start at the first secondary", three, S, 0, "10.0.0.1:80,10.0.0.3:80,[fd00::4]:80,10.0.0.2:80"},
		{"reads rotate over the secondaries", three, S, 1, "10.0.0.3:80,[fd00::4]:80,10.0.0.1:80,10.0.0.2:80"},
		{"the rotation wraps", three, S, 5, "[fd00::4]:80,10.0.0.1:80,10.0.0.3:80,10.0.0.2:80"},
		{"any lists as secondary does", three, resolver.RoleAny, 2, "[fd00::4]:80,10.0.0.1:80,10.0.0.3:80,10.0.0.2:80"},
		{"unhealthy and named replicas are left out", degraded, S, 0, "10.0.0.4:80,10.0.0.2:80"},
		{"a partition without healthy replicas lists none", none, S, 0, ""},
		{"a partition without a healthy primary lists none for a write", none, P, 0, ""},
	} {
		if got := string(resolver.AppendHostList(nil, c.p, c.role, c.rot)); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
	buf := make([]byte, 0, 128)
	if n := testing.AllocsPerRun(100, func() { buf = resolver.AppendHostList(buf[:0], three, S, 7) }); n != 0 {
		t.Errorf("AppendHostList allocates %v times with room in dst, want 0", n)
	}
}
