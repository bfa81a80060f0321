package etcdsource

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/resolver"
)

// Content is what a prefix holds at one revision.
type Content struct {
	Prefix   string
	Revision int64
	// KVs holds the values by key relative to the prefix; ModRevisions the revision each key
	// was last written at.
	KVs          map[string][]byte
	ModRevisions map[string]int64
}

// Read reads everything under prefix in one request, so the content is one revision's.
func Read(ctx context.Context, c *clientv3.Client, prefix string) (*Content, error) {
	prefix = NormalizePrefix(prefix)
	resp, err := c.Get(ctx, prefix, clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("reading etcd prefix %s: %w", prefix, err)
	}
	ct := &Content{Prefix: prefix, Revision: resp.Header.Revision, KVs: make(map[string][]byte, len(resp.Kvs)), ModRevisions: make(map[string]int64, len(resp.Kvs))}
	for _, kv := range resp.Kvs {
		rel := string(kv.Key[len(prefix):])
		ct.KVs[rel] = kv.Value
		ct.ModRevisions[rel] = kv.ModRevision
	}
	return ct, nil
}

// Source names the content in messages.
func (ct *Content) Source() string {
	return fmt.Sprintf("etcd prefix %s at revision %d", ct.Prefix, ct.Revision)
}

// View assembles and checks the content against cfg.
func (ct *Content) View(cfg *config.Config) (*resolver.View, error) {
	return Assemble(ct.KVs, cfg, ct.Source())
}

// WriteResult says what Write changed.
type WriteResult struct {
	// Revision is the revision of the write, or the revision read when nothing changed.
	Revision                    int64
	Written, Deleted, Unchanged int
}

// writeAttempts bounds how often Write reads again after another writer changed the prefix
// between its read and its transaction.
const writeAttempts = 3

// Write makes the prefix hold exactly view: one key per partition, written in one transaction
// that also deletes every other key under the prefix, so that a watcher never sees half of
// one view and half of another. Keys whose value is already right are left alone. The
// transaction applies only if nothing under the prefix changed since it was read; when
// something did, Write reads again, a bounded number of times.
func Write(ctx context.Context, c *clientv3.Client, prefix string, view *resolver.View) (WriteResult, error) {
	prefix = NormalizePrefix(prefix)
	want := map[string][]byte{}
	for service, list := range resolver.Entries(view) {
		for i := range list {
			seg, err := Segment(&list[i])
			if err != nil {
				return WriteResult{}, err
			}
			value, err := EncodeEntry(&list[i])
			if err != nil {
				return WriteResult{}, err
			}
			want[RelativeKey(service, seg)] = value
		}
	}
	for attempt := 1; ; attempt++ {
		ct, err := Read(ctx, c, prefix)
		if err != nil {
			return WriteResult{}, err
		}
		res := WriteResult{Revision: ct.Revision}
		var ops []clientv3.Op
		for _, k := range sortedKeys(want) {
			if old, ok := ct.KVs[k]; ok && bytes.Equal(old, want[k]) {
				res.Unchanged++
				continue
			}
			ops = append(ops, clientv3.OpPut(prefix+k, string(want[k])))
			res.Written++
		}
		for _, k := range sortedKeys(ct.KVs) {
			if _, keep := want[k]; !keep {
				ops = append(ops, clientv3.OpDelete(prefix+k))
				res.Deleted++
			}
		}
		if len(ops) == 0 {
			return res, nil
		}
		// One range comparison guards the whole prefix: no key under it was written after the
		// read. It costs one comparison however many keys there are, where a comparison per key
		// would count against etcd's limit on operations per transaction.
		guard := clientv3.Compare(clientv3.ModRevision(prefix), "<", ct.Revision+1).WithPrefix()
		resp, err := c.Txn(ctx).If(guard).Then(ops...).Commit()
		if err != nil {
			if strings.Contains(err.Error(), "too many operations") {
				return WriteResult{}, fmt.Errorf("writing %d keys under %s: %w; etcd limits a transaction's operations with --max-txn-ops (128 by default), raise it for views this large", len(ops), prefix, err)
			}
			return WriteResult{}, fmt.Errorf("writing under %s: %w", prefix, err)
		}
		if resp.Succeeded {
			res.Revision = resp.Header.Revision
			return res, nil
		}
		if attempt == writeAttempts {
			return WriteResult{}, fmt.Errorf("writing under %s: another writer changed the prefix during each of %d attempts", prefix, writeAttempts)
		}
	}
}

// FailoverResult says what Failover changed.
type FailoverResult struct {
	// Key is the partition's key, relative to the prefix; PartitionID its id.
	Key, PartitionID string
	// From is the address of the primary before, empty when the partition had none; To the
	// new primary's.
	From, To string
	// Unchanged is set when To was already the primary, and nothing was written.
	Unchanged bool
	// ToUnhealthy is set when the new primary is marked unhealthy: writes to the partition get
	// 503 partition_unavailable until it is marked healthy.
	ToUnhealthy bool
	Revision    int64
}

// ConflictError is a compare-and-swap that lost to another writer of the same key.
type ConflictError struct {
	Key                    string
	ReadRevision, Revision int64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("%s changed after it was read at revision %d (now revision %d); nothing was written: read the partition again and retry", e.Key, e.ReadRevision, e.Revision)
}

// Failover makes the replica at address the primary of a partition of service, and the old
// primary a secondary, in one compare-and-swap on the partition's key: it applies only if the
// key is still as it was read, else it fails with a *ConflictError. partition is the
// partition's id (explicit or derived) or the last segment of its key. The whole view after
// the change must pass the checks: a view partroute would reject would not take effect.
func Failover(ctx context.Context, c *clientv3.Client, prefix string, cfg *config.Config, service, partition, address string) (FailoverResult, error) {
	svc := cfg.Service(service)
	if svc == nil {
		return FailoverResult{}, fmt.Errorf("no service %q in the configuration", service)
	}
	ct, err := Read(ctx, c, prefix)
	if err != nil {
		return FailoverResult{}, err
	}
	key, entry, known, err := findPartition(ct, svc, partition)
	if err != nil {
		return FailoverResult{}, err
	}
	if key == "" {
		return FailoverResult{}, fmt.Errorf("service %s has no partition %q under %s; its partitions: %s", service, partition, ct.Prefix, strings.Join(known, ", "))
	}
	res := FailoverResult{Key: key, PartitionID: partitionID(svc, &entry), To: address}
	target := -1
	var replicas []string
	for i, r := range entry.Replicas {
		replicas = append(replicas, r.Address+" ("+r.Role+")")
		if r.Address == address {
			target = i
		}
		if r.Role == resolver.RolePrimary.String() {
			res.From = r.Address
		}
	}
	if target < 0 {
		return FailoverResult{}, fmt.Errorf("partition %s of service %s has no replica at %s; its replicas: %s", res.PartitionID, service, address, strings.Join(replicas, ", "))
	}
	res.ToUnhealthy = entry.Replicas[target].Healthy != nil && !*entry.Replicas[target].Healthy
	if res.From == address {
		res.Unchanged, res.Revision = true, ct.Revision
		return res, nil
	}
	for i := range entry.Replicas {
		switch {
		case i == target:
			entry.Replicas[i].Role = resolver.RolePrimary.String()
		case entry.Replicas[i].Role == resolver.RolePrimary.String():
			entry.Replicas[i].Role = resolver.RoleSecondary.String()
		}
	}
	value, err := EncodeEntry(&entry)
	if err != nil {
		return FailoverResult{}, err
	}
	after := make(map[string][]byte, len(ct.KVs))
	for k, v := range ct.KVs {
		after[k] = v
	}
	after[key] = value
	if _, err := Assemble(after, cfg, ct.Source()+" after the failover"); err != nil {
		return FailoverResult{}, fmt.Errorf("the naming view would not be valid after the failover, so partroute would keep serving the old one; nothing was written: %w", err)
	}
	full := ct.Prefix + key
	resp, err := c.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(full), "=", ct.ModRevisions[key])).
		Then(clientv3.OpPut(full, string(value))).
		Commit()
	if err != nil {
		return FailoverResult{}, fmt.Errorf("writing %s: %w", full, err)
	}
	if !resp.Succeeded {
		return FailoverResult{}, &ConflictError{Key: full, ReadRevision: ct.Revision, Revision: resp.Header.Revision}
	}
	res.Revision = resp.Header.Revision
	return res, nil
}

// findPartition finds the partition of svc named by partition: by its id, or by its key's
// last segment. known lists the ids of the service's partitions, for the message when none
// matches.
func findPartition(ct *Content, svc *config.Service, partition string) (key string, entry resolver.PartitionEntry, known []string, err error) {
	for _, k := range sortedKeys(ct.KVs) {
		service, segment, splitErr := SplitKey(k)
		if splitErr != nil || service != svc.Name {
			continue
		}
		e, decErr := DecodeEntry(ct.KVs[k])
		if decErr != nil {
			if segment == partition {
				return "", resolver.PartitionEntry{}, nil, fmt.Errorf("%s%s: %w", ct.Prefix, k, decErr)
			}
			continue
		}
		id := partitionID(svc, &e)
		known = append(known, id)
		if segment == partition || id == partition {
			return k, e, nil, nil
		}
	}
	sort.Strings(known)
	return "", resolver.PartitionEntry{}, known, nil
}

// partitionID returns an entry's id: its own, or the one derived from its place in the scheme.
func partitionID(svc *config.Service, e *resolver.PartitionEntry) string {
	if e.ID != "" {
		return e.ID
	}
	var lo, hi int64
	if e.LowKey != nil {
		lo = *e.LowKey
	}
	if e.HighKey != nil {
		hi = *e.HighKey
	}
	return resolver.DefaultPartitionID(svc.Name, svc.Scheme().Kind(), lo, hi, e.Name)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
