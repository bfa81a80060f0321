// Package server runs partroute: it loads the configuration and the first naming view, serves
// Envoy's ext_proc calls, partroute's admin listener and, when configured, Envoy's xDS, and
// follows configuration and naming changes, applying each to the decisions and to Envoy's
// endpoints at once, or refusing it whole. On the end of its context it drains.
//
// The partroute binary, the demo and the end-to-end tests all run partroute through Run.
// Naming sources implement NamingSource, the contract this package states.
package server
