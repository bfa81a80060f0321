// Package servicefabric is the Service Fabric naming source: it answers "which replicas serve
// this partition" from a Service Fabric cluster's HTTP gateway (the REST API on port 19080 by
// default), so that partroute can route to the partitions of stateful services running there.
//
// It has three layers, each usable on its own:
//
//   - Client speaks to the gateway: ResolvePartition (with PreviousRspVersion), GetPartitions and
//     GetReplicas (following continuation tokens), over TLS with a client certificate and,
//     where wanted, a pinned server thumbprint. Its calls are bounded in time, in number of
//     retries and in concurrency, and every failure is a typed error.
//   - ParseAddress turns the address a replica publishes ({"Endpoints":{"<listener>":"<url>"}}
//     or a guest executable's plain address) into the host:port Envoy connects to, choosing the
//     listener the way Service Fabric's reverse proxy does.
//   - Source implements resolver.Naming through the bounded resolution cache: one entry per
//     partition, filled by ResolvePartition, refreshed early by rate-limited failure signals
//     (Invalidate, ShouldReresolve), and enumerated in full for xDS (Enumerate, Refresh, Run).
//
// Service Fabric cannot run on the machines this project is built on, so the package is tested
// against a local HTTP server that answers with the JSON shapes of Microsoft's REST reference
// (see testdata/README.md); docs/servicefabric.md describes the source for operators.
package servicefabric
