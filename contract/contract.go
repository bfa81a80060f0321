package contract

import (
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// LBNamespace is the dynamic metadata namespace that Envoy's router merges into the subset load
// balancer's match criteria, and the namespace of every endpoint's metadata. The ext_proc
// filter must list it among its receiving namespaces.
const LBNamespace = "envoy.lb"

// The keys of the LBNamespace metadata. The subset selectors are [KeyPartition, KeyRole] and
// [KeyPartition].
const (
	KeyPartition = "partition"
	KeyRole      = "role"
)

// HostsNamespace is the dynamic metadata namespace of the ordered host list partroute sends
// for a service with replicas.selection: ordered, and KeyHosts its one key: the replicas that
// may serve the request, as "IP:port,IP:port,...", in the order Envoy's override_host load
// balancing policy tries them (the first for the request, the next ones for its retries). It
// is a namespace of its own: every key inside LBNamespace is a subset match criterion, and a
// host list there would match no subset.
const (
	HostsNamespace = "partroute.hosts"
	KeyHosts       = "hosts"
)

// SubsetSelectors are the key sets of the subset load balancer's selectors, most specific
// first: a request that names a role matches the first, one that does not ("any") the second.
func SubsetSelectors() [][]string {
	return [][]string{{KeyPartition, KeyRole}, {KeyPartition}}
}

// LBFields is the metadata of one subset: {"partition": partition, "role": role}, the role left
// out when it is empty, so that the [partition] selector applies. Values are strings: a
// metadata string never matches a number, and endpoints and requests both carry strings.
// Requests and endpoints both build their metadata with it.
func LBFields(partition, role string) *structpb.Struct {
	fields := make(map[string]*structpb.Value, 2)
	fields[KeyPartition] = structpb.NewStringValue(partition)
	if role != "" {
		fields[KeyRole] = structpb.NewStringValue(role)
	}
	return &structpb.Struct{Fields: fields}
}

// ExtProcService returns the gRPC service name of ext_proc, which Envoy's gRPC health check of
// partroute asks about: the generated service descriptor's own name, never a copy of it.
func ExtProcService() string { return extprocv3.ExternalProcessor_ServiceDesc.ServiceName }

// DefaultMessageTimeout is the ext_proc filter's message_timeout when the filter sets none,
// and the one the bootstrap generator writes by default. partroute's resolve deadline must stay
// below it, so that partroute answers 503 itself before Envoy gives up with 504.
const DefaultMessageTimeout = 200 * time.Millisecond

// FailoverAnswerMargin is the time a held request's answer may take after its failover wait
// ends: the final resolution and the answer's way back to Envoy. It is the default message
// timeout, which already bounds partroute's resolve deadline.
const FailoverAnswerMargin = DefaultMessageTimeout

// HeldMessageTimeout is the override_message_timeout partroute sends Envoy for a request it
// holds for up to wait: Envoy restarts its message timer with it, once per processing phase,
// so that the wait and the answer after it fit.
func HeldMessageTimeout(wait time.Duration) time.Duration { return wait + FailoverAnswerMargin }

// MaxMessageTimeout is the ext_proc filter's max_message_timeout for a configuration whose
// longest failover wait is longestWait, given the filter's message_timeout: Envoy ignores an
// override above it (and the request then times out), so it is at least HeldMessageTimeout of
// the longest wait. Zero when no service holds requests: the field stays unset.
func MaxMessageTimeout(longestWait, messageTimeout time.Duration) time.Duration {
	if longestWait <= 0 {
		return 0
	}
	return max(HeldMessageTimeout(longestWait), messageTimeout)
}

// RYWNamespace is the dynamic metadata namespace of read-your-writes: partroute sets it on
// the answer to a write that minted a token, and the service's route adds the token to the
// response from it. It is not envoy.lb, whose every key the subset load balancer would take as
// one more match criterion. The ext_proc filter must list it among its receiving namespaces.
const RYWNamespace = "partroute.ryw"

// The keys of the RYWNamespace metadata.
const (
	// RYWKeyCookie holds the whole value of the Set-Cookie header that gives the client the
	// token.
	RYWKeyCookie = "cookie"
	// RYWKeyToken holds the token alone, for the header that carries it.
	RYWKeyToken = "token"
)

// RequestNamespace is the dynamic metadata namespace in which partroute gives Envoy the values
// of its headers when Envoy sets them (headers.setBy: envoy): the partition, the role and the
// key, which the generated routes' request_headers_to_add read. Like RYWNamespace it is not
// envoy.lb, whose every key would be one more subset criterion.
const RequestNamespace = "partroute.request"

// The keys of the RequestNamespace metadata. KeyPartition and KeyRole are envoy.lb's names too.
const (
	RequestKeyPartition = KeyPartition
	RequestKeyRole      = KeyRole
	// RequestKeyKey holds the key in its canonical text; a singleton service has none.
	RequestKeyKey = "key"
)

// RequestHeaderValue is the header value, in Envoy's formatter syntax, that a route's
// request_headers_to_add fills from the RequestNamespace metadata key. When the key is absent
// Envoy adds no header, which is why the routes remove the client's copies first.
func RequestHeaderValue(key string) string {
	return "%DYNAMIC_METADATA(" + RequestNamespace + ":" + key + ")%"
}

// RYWHeaderValue is the header value, in Envoy's formatter syntax, that a route's
// response_headers_to_add fills from the RYWNamespace metadata key. When the key is absent (a
// read, or a write to a service without read-your-writes) Envoy adds no header.
func RYWHeaderValue(key string) string { return "%DYNAMIC_METADATA(" + RYWNamespace + ":" + key + ")%" }
