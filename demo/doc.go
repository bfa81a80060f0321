// Package demo is partroute's demo: it plays every replica of a naming view with a backend
// that names itself, runs partroute (through package server) and a real Envoy in front of
// them, all on ports of their own, sends sample requests and prints where each landed, with
// the role the answering replica really has.
package demo
