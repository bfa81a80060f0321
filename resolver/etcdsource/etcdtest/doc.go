// Package etcdtest runs a real etcd server on loopback for tests, so that the etcd naming
// source and the failover tests run against the real store. It lives apart from the source so
// that the partroute binary does not carry test code.
package etcdtest
