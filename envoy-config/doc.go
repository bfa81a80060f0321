// Package envoyconfig generates the static Envoy bootstrap that puts partroute in front of the
// configured partitioned services: one listener whose ext_proc filter asks partroute where each
// request goes, routes that match services exactly as partroute does, and one subset-balanced
// cluster per service whose endpoints carry the partition and role of every replica in the
// naming view. The directory also holds the bootstrap generated from the example configuration.
package envoyconfig
