// Package etcdsource is the etcd naming source: the naming view stored in etcd, one key per
// partition under a prefix, and followed with a watch so that every partroute replica serving
// from the same etcd converges on the same view.
//
// A key is <prefix>services/<service>/partitions/<partition>, where <partition> is
// "<lowKey>:<highKey>" for a uniformInt64 partition, the partition's name for a named one and
// "singleton" for a singleton. Its value is the JSON of one partition entry with the fields of
// naming.yaml's partition entries. The view is checked against the configuration as the file
// source checks naming.yaml; a view that fails the checks is never served, in part or in whole.
//
// Source loads the view and follows it. Write and Failover are the operator's side: they
// replace a whole view in one transaction, and move a partition's primary in one
// compare-and-swap.
package etcdsource
