package servicefabric

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// The REST operations, as they appear in errors and in the op label of the metrics.
const (
	opResolve    = "ResolvePartition"
	opPartitions = "GetPartitions"
	opReplicas   = "GetReplicas"
)

// maxPages bounds how many pages of one listing are followed, so that a gateway that keeps
// handing out continuation tokens cannot keep an enumeration going for ever.
const maxPages = 10000

// PartitionKind is a ServicePartitionKind of the REST reference.
type PartitionKind string

// The partition kinds.
const (
	KindInt64Range PartitionKind = "Int64Range"
	KindNamed      PartitionKind = "Named"
	KindSingleton  PartitionKind = "Singleton"
)

// keyType returns the PartitionKeyType query value of ResolvePartition: 1 (None) for a
// singleton, 2 for an int64 key, 3 for a partition name.
func (k PartitionKind) keyType() (string, bool) {
	switch k {
	case KindSingleton:
		return "1", true
	case KindInt64Range:
		return "2", true
	case KindNamed:
		return "3", true
	}
	return "", false
}

// EndpointKind is the Kind (ServiceEndpointRole) of a resolved endpoint.
type EndpointKind string

// The endpoint kinds.
const (
	EndpointInvalid           EndpointKind = "Invalid"
	EndpointStateless         EndpointKind = "Stateless"
	EndpointStatefulPrimary   EndpointKind = "StatefulPrimary"
	EndpointStatefulSecondary EndpointKind = "StatefulSecondary"
)

// PartitionInformation identifies a partition and the keys it holds.
type PartitionInformation struct {
	Kind PartitionKind
	// ID is the partition's GUID, in lower case.
	ID string
	// LowKey and HighKey bound an Int64Range partition, both inclusive.
	LowKey, HighKey int64
	// Name names a Named partition.
	Name string
}

// ResolvedEndpoint is one endpoint of a resolved partition: the role of the replica that
// published it and the address as published.
type ResolvedEndpoint struct {
	Kind    EndpointKind
	Address string
}

// Resolution is the answer of ResolvePartition (the ResolvedServicePartition of the REST
// reference).
type Resolution struct {
	// Name is the service's full name, fabric:/app/svc.
	Name      string
	Partition PartitionInformation
	Endpoints []ResolvedEndpoint
	// Version is opaque: it is passed back unchanged as PreviousRspVersion to ask for a newer
	// resolution than this one.
	Version string
}

// PartitionInfo is one partition of GetPartitions (ServicePartitionInfo).
type PartitionInfo struct {
	// ServiceKind is Stateful or Stateless.
	ServiceKind     string
	Partition       PartitionInformation
	PartitionStatus string
	HealthState     string
}

// ReplicaInfo is one replica or instance of GetReplicas (ReplicaInfo).
type ReplicaInfo struct {
	// ServiceKind is Stateful or Stateless.
	ServiceKind string
	// ReplicaRole is set for stateful replicas: Primary, ActiveSecondary, IdleSecondary, ...
	ReplicaRole string
	// ReplicaStatus is InBuild, Standby, Ready, Down or Dropped.
	ReplicaStatus string
	// HealthState is Ok, Warning, Error or Unknown.
	HealthState string
	NodeName    string
	// Address is what the replica published, in the same form as a resolved endpoint's.
	Address string
	// ID is the ReplicaId of a stateful replica or the InstanceId of a stateless instance.
	ID string
}

// ServiceID turns a service's full name into the serviceId of the REST paths: without the
// fabric: scheme and with "~" between the segments, so that "fabric:/app/svc" is "app~svc". The
// name needs an application and a service segment, none of them empty or holding "~", which
// would make the id ambiguous, or characters that cannot travel in a URL path.
func ServiceID(fabricName string) (string, error) {
	rest, ok := strings.CutPrefix(fabricName, "fabric:/")
	if !ok {
		return "", fmt.Errorf("%s is not a Service Fabric service name such as fabric:/app/svc", quote(fabricName))
	}
	segs := strings.Split(rest, "/")
	if len(segs) < 2 {
		return "", fmt.Errorf("%s names no service: a service name is fabric:/<application>/<service>", quote(fabricName))
	}
	for _, seg := range segs {
		if seg == "" {
			return "", fmt.Errorf("%s has an empty segment", quote(fabricName))
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			if c <= ' ' || c == 0x7f || c == '~' || c == '?' || c == '#' || c == '%' || c == '\\' || c == '"' {
				return "", fmt.Errorf("%s has %q in a segment, which a serviceId cannot carry", quote(fabricName), string(c))
			}
		}
	}
	return strings.Join(segs, "~"), nil
}

// ResolvePartition resolves the partition of serviceID that holds key: an int64 in decimal for
// KindInt64Range, a partition name for KindNamed, nothing for KindSingleton. previousVersion,
// when not empty, is the Version of a resolution the caller holds and believes stale; the
// gateway then answers with a resolution at least that new.
func (c *Client) ResolvePartition(ctx context.Context, serviceID string, kind PartitionKind, key, previousVersion string) (*Resolution, error) {
	keyType, ok := kind.keyType()
	if !ok {
		return nil, fmt.Errorf("servicefabric: %s %s: partition kind %s is not Int64Range, Named or Singleton", opResolve, serviceID, quote(string(kind)))
	}
	q := "PartitionKeyType=" + keyType
	switch kind {
	case KindInt64Range:
		if _, err := strconv.ParseInt(key, 10, 64); err != nil {
			return nil, fmt.Errorf("servicefabric: %s %s: key %s is not an int64", opResolve, serviceID, quote(key))
		}
		q += "&PartitionKeyValue=" + key
	case KindNamed:
		if key == "" {
			return nil, fmt.Errorf("servicefabric: %s %s: a named partition needs its name", opResolve, serviceID)
		}
		q += "&PartitionKeyValue=" + url.QueryEscape(key)
	case KindSingleton:
		if key != "" {
			return nil, fmt.Errorf("servicefabric: %s %s: a singleton partition takes no key", opResolve, serviceID)
		}
	}
	if previousVersion != "" {
		q += "&PreviousRspVersion=" + url.QueryEscape(previousVersion)
	}
	var res *Resolution
	err := c.get(ctx, opResolve, serviceID, "/Services/"+url.PathEscape(serviceID)+"/$/ResolvePartition", q, func(body []byte) error {
		r, err := decodeResolution(body)
		res = r
		return err
	})
	if err != nil {
		return nil, err
	}
	return res, nil
}

// Partitions lists the partitions of serviceID, following continuation tokens to the end.
func (c *Client) Partitions(ctx context.Context, serviceID string) ([]PartitionInfo, error) {
	var out []PartitionInfo
	err := c.pages(ctx, opPartitions, serviceID, "/Services/"+url.PathEscape(serviceID)+"/$/GetPartitions", func(body []byte) (string, error) {
		page, token, err := decodePartitionPage(body)
		out = append(out, page...)
		return token, err
	})
	return out, err
}

// Replicas lists the replicas (or, for a stateless service, the instances) of a partition,
// following continuation tokens to the end.
func (c *Client) Replicas(ctx context.Context, partitionID string) ([]ReplicaInfo, error) {
	if !validGUID(partitionID) {
		return nil, fmt.Errorf("servicefabric: %s: %s is not a partition id (a GUID)", opReplicas, quote(partitionID))
	}
	var out []ReplicaInfo
	err := c.pages(ctx, opReplicas, partitionID, "/Partitions/"+partitionID+"/$/GetReplicas", func(body []byte) (string, error) {
		page, token, err := decodeReplicaPage(body)
		out = append(out, page...)
		return token, err
	})
	return out, err
}

// pages follows a paged listing: decode appends one page and returns its continuation token,
// empty on the last page.
func (c *Client) pages(ctx context.Context, op, target, path string, decode func([]byte) (string, error)) error {
	token := ""
	seen := map[string]bool{}
	for page := 0; ; page++ {
		if page == maxPages {
			return &DecodeError{Op: op, Target: target, Err: fmt.Errorf("more than %d pages", maxPages)}
		}
		q := ""
		if token != "" {
			q = "ContinuationToken=" + continuationValue(token)
		}
		next := ""
		err := c.get(ctx, op, target, path, q, func(body []byte) error {
			var err error
			next, err = decode(body)
			return err
		})
		if err != nil {
			return err
		}
		if next == "" {
			return nil
		}
		if seen[next] {
			return &DecodeError{Op: op, Target: target, Err: fmt.Errorf("continuation token %s came back a second time", quote(next))}
		}
		seen[next] = true
		token = next
	}
}

// continuationValue renders a continuation token for the query. The REST reference asks for the
// token as the gateway gave it, not URL-encoded; that is what is sent whenever the token holds
// only characters a query carries as themselves. A token with any other character is
// percent-encoded, since sending it raw would break the query.
func continuationValue(token string) string {
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case strings.IndexByte("-._~:/@!$'()*,;", c) >= 0:
		default:
			return url.QueryEscape(token)
		}
	}
	return token
}

// The wire shapes of the REST reference. encoding/json ignores the many fields partroute does
// not read, so that later gateway versions that add fields keep working.

type wireResolution struct {
	Name                 string                    `json:"Name"`
	PartitionInformation *wirePartitionInformation `json:"PartitionInformation"`
	Endpoints            *[]wireEndpoint           `json:"Endpoints"`
	Version              string                    `json:"Version"`
}

type wirePartitionInformation struct {
	ServicePartitionKind string   `json:"ServicePartitionKind"`
	ID                   string   `json:"Id"`
	LowKey               *keyText `json:"LowKey"`
	HighKey              *keyText `json:"HighKey"`
	Name                 *string  `json:"Name"`
}

type wireEndpoint struct {
	Kind    string `json:"Kind"`
	Address string `json:"Address"`
}

type wirePartitionPage struct {
	ContinuationToken string `json:"ContinuationToken"`
	Items             []struct {
		ServiceKind          string                    `json:"ServiceKind"`
		PartitionInformation *wirePartitionInformation `json:"PartitionInformation"`
		PartitionStatus      string                    `json:"PartitionStatus"`
		HealthState          string                    `json:"HealthState"`
	} `json:"Items"`
}

type wireReplicaPage struct {
	ContinuationToken string `json:"ContinuationToken"`
	Items             []struct {
		ServiceKind   string   `json:"ServiceKind"`
		ReplicaRole   string   `json:"ReplicaRole"`
		ReplicaStatus string   `json:"ReplicaStatus"`
		HealthState   string   `json:"HealthState"`
		NodeName      string   `json:"NodeName"`
		Address       string   `json:"Address"`
		ReplicaID     *keyText `json:"ReplicaId"`
		InstanceID    *keyText `json:"InstanceId"`
	} `json:"Items"`
}

// keyText is an int64 the REST reference sends as a JSON string ("LowKey": "0"). A JSON number
// is taken too, as the text it was written with, so that no precision is lost above 2^53.
type keyText string

func (k *keyText) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*k = keyText(s)
		return nil
	}
	var n json.Number
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&n); err != nil {
		return fmt.Errorf("%s is neither a string nor a number", quote(string(b)))
	}
	*k = keyText(n)
	return nil
}

func (k *keyText) int64(field string) (int64, error) {
	if k == nil {
		return 0, fmt.Errorf("%s is missing", field)
	}
	v, err := strconv.ParseInt(string(*k), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s %s is not an int64", field, quote(string(*k)))
	}
	return v, nil
}

func (k *keyText) text() string {
	if k == nil {
		return ""
	}
	return string(*k)
}

// decodeResolution reads a ResolvedServicePartition. It never panics, whatever the input.
func decodeResolution(body []byte) (*Resolution, error) {
	var w wireResolution
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, err
	}
	if w.PartitionInformation == nil {
		return nil, errors.New("the required PartitionInformation is missing")
	}
	if w.Endpoints == nil {
		return nil, errors.New("the required Endpoints list is missing")
	}
	pi, err := w.PartitionInformation.convert()
	if err != nil {
		return nil, fmt.Errorf("in PartitionInformation: %w", err)
	}
	r := &Resolution{Name: w.Name, Partition: pi, Version: w.Version, Endpoints: make([]ResolvedEndpoint, 0, len(*w.Endpoints))}
	for _, e := range *w.Endpoints {
		r.Endpoints = append(r.Endpoints, ResolvedEndpoint{Kind: EndpointKind(e.Kind), Address: e.Address})
	}
	return r, nil
}

func (w *wirePartitionInformation) convert() (PartitionInformation, error) {
	if w == nil {
		return PartitionInformation{}, errors.New("missing")
	}
	p := PartitionInformation{Kind: PartitionKind(w.ServicePartitionKind), ID: strings.ToLower(w.ID)}
	if !validGUID(p.ID) {
		return p, fmt.Errorf("the Id %s is not a GUID", quote(w.ID))
	}
	switch p.Kind {
	case KindInt64Range:
		var err error
		if p.LowKey, err = w.LowKey.int64("LowKey"); err != nil {
			return p, err
		}
		if p.HighKey, err = w.HighKey.int64("HighKey"); err != nil {
			return p, err
		}
		if p.LowKey > p.HighKey {
			return p, fmt.Errorf("LowKey %d is above HighKey %d", p.LowKey, p.HighKey)
		}
	case KindNamed:
		if w.Name == nil || *w.Name == "" {
			return p, errors.New("a Named partition without a Name")
		}
		p.Name = *w.Name
	case KindSingleton:
	default:
		return p, fmt.Errorf("ServicePartitionKind %s is not Int64Range, Named or Singleton", quote(w.ServicePartitionKind))
	}
	return p, nil
}

func decodePartitionPage(body []byte) ([]PartitionInfo, string, error) {
	var w wirePartitionPage
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, "", err
	}
	out := make([]PartitionInfo, 0, len(w.Items))
	for i, it := range w.Items {
		pi, err := it.PartitionInformation.convert()
		if err != nil {
			return nil, "", fmt.Errorf("in Items[%d].PartitionInformation: %w", i, err)
		}
		out = append(out, PartitionInfo{ServiceKind: it.ServiceKind, Partition: pi, PartitionStatus: it.PartitionStatus, HealthState: it.HealthState})
	}
	return out, w.ContinuationToken, nil
}

func decodeReplicaPage(body []byte) ([]ReplicaInfo, string, error) {
	var w wireReplicaPage
	if err := json.Unmarshal(body, &w); err != nil {
		return nil, "", err
	}
	out := make([]ReplicaInfo, 0, len(w.Items))
	for _, it := range w.Items {
		id := it.ReplicaID.text()
		if id == "" {
			id = it.InstanceID.text()
		}
		out = append(out, ReplicaInfo{
			ServiceKind: it.ServiceKind, ReplicaRole: it.ReplicaRole, ReplicaStatus: it.ReplicaStatus,
			HealthState: it.HealthState, NodeName: it.NodeName, Address: it.Address, ID: id,
		})
	}
	return out, w.ContinuationToken, nil
}

// validGUID reports whether s is a GUID in its usual text form, 8-4-4-4-12 hexadecimal digits.
// Partition ids travel in Envoy metadata and request headers, so nothing else is let through.
func validGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F') {
				return false
			}
		}
	}
	return true
}
