package resolver

import (
	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
)

// UpstreamListener is a naming source that learns from the responses of the replicas it
// resolved. Service Fabric's clients re-resolve a partition whose replica answered as if the
// partition had moved (503, 410, or 404 without X-ServiceFabric: ResourceNotFound); a pull
// source does the same through this. A source that has one puts it in the State it provides
// (State.Upstream), and every decision made with that state carries it (Decision.Upstream).
//
// ObserveUpstream is called by the ext_proc handler on the goroutine of the stream whose
// response it is, concurrently with every other stream and with lookups, and must not block:
// a re-resolution it starts runs in the background. It reports whether it started one.
type UpstreamListener interface {
	ObserveUpstream(svc *config.Service, index int, status int, headers keying.Headers) bool
}

// Feedback ties a routed decision to the naming source whose lookup routed it, the way a
// range cache hands its caller an eviction token: the caller reports the upstream's answer
// through it, and the report reaches the source that made the lookup even when a reload has
// replaced the state since. The zero Feedback wants nothing.
type Feedback struct {
	listener UpstreamListener
	service  *config.Service
	index    int
}

// Wanted reports whether the naming source wants to hear how the upstream answered: only then
// is the response phase worth its round trip.
func (f Feedback) Wanted() bool { return f.listener != nil }

// Report passes the upstream response status and headers of the request to the naming source,
// and reports whether it started a re-resolution.
func (f Feedback) Report(status int, headers keying.Headers) bool {
	if f.listener == nil {
		return false
	}
	return f.listener.ObserveUpstream(f.service, f.index, status, headers)
}
