package resolver

import "github.com/partroute/partroute/config"

// ChooseRole picks the role a request is sent to, or reports false when the partition has no
// healthy replica for it.
//
//   - A write, a strong read, and any read under the primary policy go to the primary.
//   - Under the secondary policy a read goes to the secondaries while at least one is healthy,
//     and falls back to the primary otherwise.
//   - Under the any policy a read goes to any replica while at least one is healthy.
//
// A client may ask for a stronger read than the policy (strong), never a weaker one.
func ChooseRole(p *Partition, reads config.ReadPolicy, isRead, strong bool) (Role, bool) {
	var primary, secondary bool
	for i := range p.Replicas {
		r := &p.Replicas[i]
		if !r.Healthy {
			continue
		}
		switch r.Role {
		case RolePrimary:
			primary = true
		case RoleSecondary:
			secondary = true
		}
	}
	if !isRead || strong || reads == config.ReadPrimary {
		return RolePrimary, primary
	}
	if reads == config.ReadSecondary {
		if secondary {
			return RoleSecondary, true
		}
		return RolePrimary, primary
	}
	return RoleAny, primary || secondary
}

// Candidates returns the healthy replicas a request with this role may land on.
func Candidates(p *Partition, role Role) []Replica {
	var out []Replica
	for _, r := range p.Replicas {
		if r.Healthy && (role == RoleAny || r.Role == role) {
			out = append(out, r)
		}
	}
	return out
}
