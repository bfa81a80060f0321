// Package e2e holds partroute's end-to-end tests: partroute (in-process through package server,
// or the partroute binary built for the run) in front of real Envoy processes, real etcd and
// backends on loopback. They fail, never skip, when Envoy or etcd is missing: `make e2e`
// installs both first.
package e2e
