package etcdsource

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
	"github.com/partroute/partroute/resolver"
)

// SingletonSegment is the last segment of a singleton partition's key.
const SingletonSegment = "singleton"

// NormalizePrefix returns prefix with the default filled in and a trailing slash, so that
// "/a/b" and "/a/b/" name the same keys and "/a/b" never takes in "/a/bc/...".
func NormalizePrefix(prefix string) string {
	if prefix == "" {
		return config.DefaultEtcdPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return prefix
}

// Segment returns the last segment of the key that holds e: "<lowKey>:<highKey>" when it has
// either bound, its name when it has one, and "singleton" otherwise.
func Segment(e *resolver.PartitionEntry) (string, error) {
	switch {
	case e.LowKey != nil || e.HighKey != nil:
		if e.LowKey == nil || e.HighKey == nil {
			return "", errors.New("a partition with a key range needs both lowKey and highKey")
		}
		return strconv.FormatInt(*e.LowKey, 10) + ":" + strconv.FormatInt(*e.HighKey, 10), nil
	case e.Name != "":
		return e.Name, nil
	}
	return SingletonSegment, nil
}

// RelativeKey returns the key of a partition of service, relative to the prefix.
func RelativeKey(service, segment string) string {
	return "services/" + service + "/partitions/" + segment
}

// SplitKey splits a key relative to the prefix into its service and partition segment. A
// service name holds no slash (the configuration allows letters, digits, '.', '_' and '-'), so
// everything after "partitions/" is the segment, slashes included.
func SplitKey(rel string) (service, segment string, err error) {
	rest, ok := strings.CutPrefix(rel, "services/")
	if ok {
		service, rest, ok = strings.Cut(rest, "/")
	}
	if ok {
		segment, ok = strings.CutPrefix(rest, "partitions/")
	}
	if !ok || service == "" || segment == "" {
		return "", "", errors.New("not a partition key: want services/<service>/partitions/<partition>")
	}
	return service, segment, nil
}

// EncodeEntry returns the value stored for e: compact JSON with its fields in a fixed order,
// so that the same entry is always the same bytes.
func EncodeEntry(e *resolver.PartitionEntry) ([]byte, error) {
	c := *e
	if c.Replicas == nil {
		c.Replicas = []resolver.ReplicaEntry{} // "replicas": [] rather than null
	}
	return json.Marshal(&c)
}

// DecodeEntry reads a stored value. Like the file's decoder it rejects unknown fields, so that a
// misspelt "healty" is an error rather than a replica silently taken as healthy.
func DecodeEntry(value []byte) (resolver.PartitionEntry, error) {
	var e resolver.PartitionEntry
	d := json.NewDecoder(bytes.NewReader(value))
	d.DisallowUnknownFields()
	if err := d.Decode(&e); err != nil {
		return resolver.PartitionEntry{}, fmt.Errorf("value is not a partition entry in JSON: %w", err)
	}
	if _, err := d.Token(); !errors.Is(err, io.EOF) {
		return resolver.PartitionEntry{}, errors.New("value is not a partition entry in JSON: data after the entry")
	}
	return e, nil
}

// Assemble builds and checks a naming view from key/value pairs, with keys relative to the
// prefix. Beyond the checks every naming view gets (ParseView's), each key must have the
// partition layout and name the partition its value describes. source names the content in the
// error message. The view's version is a hash of the content in canonical form: it changes
// exactly when some entry does, not when a value is rewritten with other spacing.
func Assemble(kvs map[string][]byte, cfg *config.Config, source string) (*resolver.View, error) {
	errs := &config.Errors{File: source}
	h := sha256.New()
	entries := map[string][]resolver.PartitionEntry{}
	for _, k := range sortedKeys(kvs) {
		value := kvs[k]
		service, segment, err := SplitKey(k)
		if err != nil {
			errs.Add(k, 0, "%v", err)
			hashPair(h, k, value)
			continue
		}
		e, err := readEntry(segment, value)
		if err != nil {
			errs.Add(k, 0, "%v", err)
			hashPair(h, k, value)
			// A stand-in for the partition the key names keeps the checks that follow from
			// also reporting that partition as missing: the key is there, its value is wrong.
			if p, ok := placeholder(cfg.Service(service), segment); ok {
				p.Origin = k
				entries[service] = append(entries[service], p)
			}
			continue
		}
		canon, err := EncodeEntry(&e)
		if err != nil {
			errs.Add(k, 0, "%v", err)
			continue
		}
		hashPair(h, k, canon)
		e.Origin = k
		entries[service] = append(entries[service], e)
	}
	version := hex.EncodeToString(h.Sum(nil)[:8])
	view, err := resolver.BuildView(entries, cfg, version, source)
	if err != nil {
		var more *config.Errors
		if !errors.As(err, &more) {
			return nil, err
		}
		errs.List = append(errs.List, more.List...)
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return view, nil
}

// readEntry decodes a value and checks that it describes the partition its key names.
func readEntry(segment string, value []byte) (resolver.PartitionEntry, error) {
	e, err := DecodeEntry(value)
	if err != nil {
		return e, err
	}
	want, err := Segment(&e)
	if err != nil {
		return e, err
	}
	if want != segment {
		return e, fmt.Errorf("the key names partition %q but its value describes partition %q", segment, want)
	}
	return e, nil
}

// placeholder returns an entry for the partition a key segment names under svc's scheme, with
// no replicas, or false when the segment names no partition of that kind.
func placeholder(svc *config.Service, segment string) (resolver.PartitionEntry, bool) {
	if svc == nil {
		return resolver.PartitionEntry{}, false
	}
	switch svc.Scheme().Kind() {
	case keying.UniformInt64:
		lo, hi, ok := strings.Cut(segment, ":")
		l, errL := strconv.ParseInt(lo, 10, 64)
		h, errH := strconv.ParseInt(hi, 10, 64)
		if !ok || errL != nil || errH != nil {
			return resolver.PartitionEntry{}, false
		}
		return resolver.PartitionEntry{LowKey: &l, HighKey: &h}, true
	case keying.Named:
		return resolver.PartitionEntry{Name: segment}, true
	}
	return resolver.PartitionEntry{}, segment == SingletonSegment
}

// hashPair adds one key and value to the content hash, each length-prefixed so that no two
// different contents hash the same bytes.
func hashPair(h io.Writer, key string, value []byte) {
	fmt.Fprintf(h, "%d:%s%d:", len(key), key, len(value))
	_, _ = h.Write(value) // a hash's Write never fails
}
