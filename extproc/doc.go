// Package extproc is the gRPC glue between Envoy's ext_proc filter and partroute's resolver:
// it receives each message of a stream, switches on its kind, asks the resolver for a decision
// and turns the decision into the matching response (a header mutation with envoy.lb dynamic
// metadata, or an immediate rejection). It holds no routing logic of its own.
package extproc
