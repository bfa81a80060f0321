package resolver

import (
	"net/netip"

	"github.com/partroute/partroute/config"
)

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

// AppendHostList appends to dst the replicas of p that may serve a request sent to role, in
// the order Envoy's override_host policy tries them (the first serves the request, the next
// ones its retries), as "IP:port,IP:port,...":
//
//   - for the primary, the healthy primary;
//   - for a secondary or any replica, the healthy secondaries, starting at the one rot picks
//     and wrapping around, so that reads spread over them, and then the healthy primary: a
//     read that no secondary could serve is better served by the primary than not at all.
//
// Replicas the naming view marks unhealthy are left out, and so are those whose address is not
// an IP address and port, which override_host cannot match; once the list is spent, the
// partition's own subset picks. It does not allocate when dst has room.
func AppendHostList(dst []byte, p *Partition, role Role, rot uint32) []byte {
	listed := func(r *Replica, want Role) bool {
		if !r.Healthy || r.Role != want {
			return false
		}
		_, err := netip.ParseAddrPort(r.Address)
		return err == nil
	}
	start := len(dst)
	add := func(addr string) {
		if len(dst) > start {
			dst = append(dst, ',')
		}
		dst = append(dst, addr...)
	}
	if role != RolePrimary {
		n := 0
		for i := range p.Replicas {
			if listed(&p.Replicas[i], RoleSecondary) {
				n++
			}
		}
		if n > 0 {
			first := int(rot % uint32(n))
			// Two passes: the secondaries from the first one picked to the last, then those
			// before it.
			for pass := 0; pass < 2; pass++ {
				k := 0
				for i := range p.Replicas {
					r := &p.Replicas[i]
					if !listed(r, RoleSecondary) {
						continue
					}
					if (pass == 0) == (k >= first) {
						add(r.Address)
					}
					k++
				}
			}
		}
	}
	for i := range p.Replicas {
		if r := &p.Replicas[i]; listed(r, RolePrimary) {
			add(r.Address)
		}
	}
	return dst
}
