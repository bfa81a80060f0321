// Package config reads partroute.yaml: listen addresses, the naming source, cache settings,
// header names and the services with their match rules, partition schemes, key sources and
// replica policies. Loading validates the whole file and reports every error together, each
// naming its place (for example "services[1].partitioning.count: 0 is below 1"). A loaded
// Config is immutable; a reload builds a new one.
package config
