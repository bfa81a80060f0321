// Package loadtest is partroute's load-test suite: the load generator that speaks ext_proc the
// way Envoy does or HTTP through an Envoy listener, and the targets a run needs on this
// machine: a no-op ext_proc server as the baseline, and backends that answer with their own
// identity, so that every response says which replica served it.
package loadtest
