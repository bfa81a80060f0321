// Package resolver decides where a request goes. It holds the naming view (which replicas
// serve each partition, with their roles and health), loads it from its sources, chooses the
// role a request needs (primary for writes, the read policy for reads), and turns a request
// into a Decision or a typed Error from the one error table the proxy and the CLI share.
//
// The configuration and the naming view are immutable snapshots; a Resolver swaps them
// atomically, so a request sees one consistent pair and a bad reload never replaces a good one.
package resolver
