// Package contract holds the values partroute and Envoy must agree on, each in one place: the
// metadata namespace and shape that the subset load balancer matches on, the gRPC service
// Envoy's health check asks about, and Envoy's ext_proc message timeout.
//
// The ext_proc handler, the bootstrap generator, the xDS server and the configuration checks
// all take these values from here, so that a request's criteria and an endpoint's metadata can
// never drift apart.
package contract
