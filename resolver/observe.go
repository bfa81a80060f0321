package resolver

import (
	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
)

// UpstreamObserver is a Naming that learns from the responses of the replicas it resolved.
// Service Fabric's clients re-resolve a partition whose replica answered as if the partition
// had moved (503, 410, or 404 without X-ServiceFabric: ResourceNotFound); a pull source does
// the same through this.
type UpstreamObserver interface {
	// ObserveUpstream is given the response status and headers of a request routed to
	// partition index of svc. It reports whether it started a re-resolution.
	ObserveUpstream(svc *config.Service, index int, status int, headers keying.Headers) bool
}

// ObserveResponse passes the upstream response of a routed request to the naming source, when
// the source wants it. Requests that were rejected or passed through have nothing to report.
func (r *Resolver) ObserveResponse(d *Decision, status int, headers keying.Headers) bool {
	if d == nil || d.Service == nil || d.Partition == nil || d.Err != nil {
		return false
	}
	obs, ok := r.state.Load().Naming.(UpstreamObserver)
	if !ok {
		return false
	}
	return obs.ObserveUpstream(d.Service, d.Partition.Index, status, headers)
}
