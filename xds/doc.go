// Package xds serves Envoy the clusters and endpoints of partroute's naming view over ADS, so
// that Envoy's subset load balancer learns a failover at the same moment partroute's ext_proc
// decisions do. It builds a snapshot per accepted naming view, versions it by content, and
// follows Envoy's acknowledgements so that callers can wait until every Envoy applied a
// change.
package xds
