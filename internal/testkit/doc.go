// Package testkit holds the helpers partroute's tests share, once: waiting on a condition, a
// log buffer safe for concurrent writers, a fake clock, free loopback ports, and the paths of
// the example files. It imports nothing of partroute, so that any package's tests may use it,
// internal ones included. Its subpackage certs issues the certificates of TLS tests.
package testkit
