// Package certs issues X.509 certificates for tests, with crypto/x509: a CA, server and client
// certificates it signs, and the PEM files that partroute and Envoy read, written atomically
// so that a rotation in a test looks like one in production. Keys are ECDSA P-256, which is
// quick to generate and which Envoy and Go both accept.
package certs
