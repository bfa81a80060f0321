package resolver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strconv"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
)

// Role is a replica's role, or the role a request is sent to.
type Role uint8

// The roles. RoleAny is only ever a request's target: any replica of the partition.
const (
	RolePrimary Role = iota + 1
	RoleSecondary
	RoleAny
)

// String returns the role's name as it appears in metadata and headers.
func (r Role) String() string {
	switch r {
	case RolePrimary:
		return "primary"
	case RoleSecondary:
		return "secondary"
	case RoleAny:
		return "any"
	}
	return "unknown"
}

// Replica is one replica of a partition.
type Replica struct {
	Address string
	Role    Role
	Healthy bool
}

// Partition is one partition of a service and its replicas.
type Partition struct {
	ID    string
	Index int
	// LowKey and HighKey bound a uniformInt64 partition; Name names a named one.
	LowKey, HighKey int64
	Name            string
	Replicas        []Replica
}

// ServiceView is the naming view of one service: its partitions in scheme index order.
type ServiceView struct {
	Name       string
	Kind       keying.SchemeKind
	Partitions []Partition
}

// View is an immutable naming view. Version changes exactly when the content changes.
type View struct {
	Version  string
	Services map[string]*ServiceView
}

// Partition returns the partition a key maps to. A View always answers from memory.
func (v *View) Partition(_ context.Context, svc *config.Service, key keying.Key) (*Partition, error) {
	sv := v.Services[svc.Name]
	if sv == nil || key.Index < 0 || key.Index >= len(sv.Partitions) {
		return nil, fmt.Errorf("naming view %s has no partition %d of service %s", v.Version, key.Index, svc.Name)
	}
	return &sv.Partitions[key.Index], nil
}

// Fits reports whether the service view has exactly the partitions of svc's scheme, in its
// order: a view built for another configuration may not, and serving it would send keys to
// the wrong partition.
func (sv *ServiceView) Fits(svc *config.Service) bool {
	if sv == nil || svc == nil {
		return false
	}
	scheme := svc.Scheme()
	if sv.Kind != scheme.Kind() || len(sv.Partitions) != scheme.Count() {
		return false
	}
	for i := range sv.Partitions {
		p := &sv.Partitions[i]
		switch scheme.Kind() {
		case keying.UniformInt64:
			if lo, hi := scheme.Bounds(i); p.LowKey != lo || p.HighKey != hi {
				return false
			}
		case keying.Named:
			if p.Name != scheme.Names()[i] {
				return false
			}
		}
	}
	return true
}

// Fits returns an error naming every service of cfg whose partitions the view does not have
// as cfg's scheme gives them.
func (v *View) Fits(cfg *config.Config) error {
	var errs []error
	for _, svc := range cfg.Services {
		if !v.Services[svc.Name].Fits(svc) {
			errs = append(errs, fmt.Errorf("naming view %s: service %s: the partitions do not match its partitioning", v.Version, svc.Name))
		}
	}
	return errors.Join(errs...)
}

// DefaultPartitionID derives a partition's id from its service and place in the scheme, so
// that it stays the same across restarts and reloads as long as the partition does:
// "users/0:8" for an int64 range, "regions/eu" for a named partition, "settings" for a
// singleton.
func DefaultPartitionID(service string, kind keying.SchemeKind, low, high int64, name string) string {
	switch kind {
	case keying.UniformInt64:
		return service + "/" + strconv.FormatInt(low, 10) + ":" + strconv.FormatInt(high, 10)
	case keying.Named:
		return service + "/" + name
	}
	return service
}

// namingFile is the YAML shape of a naming view.
type namingFile struct {
	Services map[string]struct {
		Partitions []PartitionEntry `yaml:"partitions"`
	} `yaml:"services"`
}

// PartitionEntry is one partition of a naming view as an operator writes it: an item of a
// service's partitions list in naming.yaml, and the JSON value of one partition key in etcd.
type PartitionEntry struct {
	ID       string         `yaml:"id" json:"id,omitempty"`
	LowKey   *int64         `yaml:"lowKey" json:"lowKey,omitempty"`
	HighKey  *int64         `yaml:"highKey" json:"highKey,omitempty"`
	Name     string         `yaml:"name" json:"name,omitempty"`
	Replicas []ReplicaEntry `yaml:"replicas" json:"replicas"`
	// Origin names where the entry was read, such as its etcd key, and stands in for its place
	// in the list in error messages. It is never read from or written to a file or a value.
	Origin string `yaml:"-" json:"-"`
}

// ReplicaEntry is one replica of a PartitionEntry.
type ReplicaEntry struct {
	Address string `yaml:"address" json:"address"`
	Role    string `yaml:"role" json:"role"`
	// Healthy is true when absent.
	Healthy *bool `yaml:"healthy" json:"healthy,omitempty"`
}

// LoadViewFile reads and checks a naming file against the configuration.
func LoadViewFile(path string, cfg *config.Config) (*View, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseView(data, path, cfg)
}

// ParseView builds a naming view from YAML and checks it against every configured service's
// scheme: each partition of the scheme must appear exactly once, and nothing else may.
func ParseView(data []byte, path string, cfg *config.Config) (*View, error) {
	errs := &config.Errors{File: path}
	var f namingFile
	lines := config.DecodeStrict(data, &f, errs)
	if lines == nil {
		return nil, errs.Err()
	}
	sum := sha256.Sum256(data)
	entries := make(map[string][]PartitionEntry, len(f.Services))
	for name, s := range f.Services {
		entries[name] = s.Partitions
	}
	return buildView(entries, cfg, hex.EncodeToString(sum[:8]), errs, lines)
}

// BuildView builds a naming view from partition entries already decoded, by service name, and
// checks it against cfg as ParseView does. version becomes the view's version; source names
// where the entries came from in the error message.
func BuildView(entries map[string][]PartitionEntry, cfg *config.Config, version, source string) (*View, error) {
	return buildView(entries, cfg, version, &config.Errors{File: source}, nil)
}

func buildView(entries map[string][]PartitionEntry, cfg *config.Config, version string, errs *config.Errors, lines config.Lines) (*View, error) {
	v := &View{Version: version, Services: map[string]*ServiceView{}}
	names := make([]string, 0, len(entries))
	for name := range entries {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		p := "services." + name
		svc := cfg.Service(name)
		if svc == nil {
			errs.Add(p, lines.At(p), "no service of that name in the configuration")
			continue
		}
		if sv := buildServiceView(svc, entries[name], p, errs, lines); sv != nil {
			v.Services[name] = sv
		}
	}
	for _, svc := range cfg.Services {
		if _, ok := entries[svc.Name]; !ok {
			errs.Add("services."+svc.Name, 0, "configured service is missing from the naming view")
		}
	}
	if err := errs.Err(); err != nil {
		return nil, err
	}
	return v, nil
}

func buildServiceView(svc *config.Service, parts []PartitionEntry, p string, errs *config.Errors, lines config.Lines) *ServiceView {
	scheme := svc.Scheme()
	sv := &ServiceView{Name: svc.Name, Kind: scheme.Kind(), Partitions: make([]Partition, scheme.Count())}
	seen := make([]int, scheme.Count()) // 1 + the file index that filled the slot
	ids := map[string]int{}
	// Replica addresses are unique across the service: Envoy's cluster holds one endpoint per
	// address, and an address in two partitions would carry two partitions' metadata.
	addrs := map[string]string{}
	before := len(errs.List)
	for i := range parts {
		pf := &parts[i]
		pp := p + ".partitions[" + strconv.Itoa(i) + "]"
		if pf.Origin != "" {
			pp = pf.Origin
		}
		at := func(field string) int { return lines.At(pp + field) }
		idx := -1
		var part Partition
		switch scheme.Kind() {
		case keying.UniformInt64:
			if pf.Name != "" {
				errs.Add(pp+".name", at(".name"), "a uniformInt64 partition is given by lowKey and highKey, not a name")
				continue
			}
			if pf.LowKey == nil || pf.HighKey == nil {
				errs.Add(pp, at(""), "a uniformInt64 partition needs lowKey and highKey")
				continue
			}
			j, ok := scheme.PartitionOfInt64(*pf.LowKey)
			lo, hi := scheme.Bounds(j)
			if !ok || lo != *pf.LowKey || hi != *pf.HighKey {
				errs.Add(pp, at(""), "[%d, %d] is not a partition of the scheme; its partitions are %s", *pf.LowKey, *pf.HighKey, describeRanges(scheme))
				continue
			}
			idx, part.LowKey, part.HighKey = j, lo, hi
		case keying.Named:
			if pf.LowKey != nil || pf.HighKey != nil {
				errs.Add(pp, at(""), "a named partition is given by name, not lowKey and highKey")
				continue
			}
			j, ok := scheme.PartitionOfName(pf.Name)
			if !ok {
				errs.Add(pp+".name", at(".name"), "%q is not a partition name of the scheme %q", pf.Name, scheme.Names())
				continue
			}
			idx, part.Name = j, scheme.Names()[j]
		case keying.Singleton:
			if pf.LowKey != nil || pf.HighKey != nil || pf.Name != "" {
				errs.Add(pp, at(""), "a singleton partition takes no lowKey, highKey or name")
				continue
			}
			idx = 0
		}
		if seen[idx] != 0 {
			errs.Add(pp, at(""), "repeats %s", entryName(parts, seen[idx]-1))
			continue
		}
		seen[idx] = i + 1
		part.Index = idx
		part.ID = pf.ID
		if part.ID == "" {
			part.ID = DefaultPartitionID(svc.Name, scheme.Kind(), part.LowKey, part.HighKey, part.Name)
		} else if !validID(part.ID) {
			errs.Add(pp+".id", at(".id"), "%q may hold only visible ASCII without spaces or quotes", part.ID)
		}
		if j, dup := ids[part.ID]; dup {
			errs.Add(pp+".id", at(".id"), "%q is already the id of %s", part.ID, entryName(parts, j))
		}
		ids[part.ID] = i
		part.Replicas = buildReplicas(pf.Replicas, pp, addrs, errs, lines)
		sv.Partitions[idx] = part
	}
	for j, s := range seen {
		if s == 0 {
			errs.Add(p+".partitions", lines.At(p), "scheme partition %s is missing", describePartition(scheme, j))
		}
	}
	if len(errs.List) > before {
		return nil
	}
	return sv
}

// entryName names parts[i] in a message: by its origin when it has one, else by its place.
func entryName(parts []PartitionEntry, i int) string {
	if parts[i].Origin != "" {
		return parts[i].Origin
	}
	return "partitions[" + strconv.Itoa(i) + "]"
}

func buildReplicas(rs []ReplicaEntry, pp string, addrs map[string]string, errs *config.Errors, lines config.Lines) []Replica {
	out := make([]Replica, 0, len(rs))
	primaries := 0
	for k, rf := range rs {
		rp := pp + ".replicas[" + strconv.Itoa(k) + "]"
		r := Replica{Address: rf.Address, Healthy: rf.Healthy == nil || *rf.Healthy}
		if err := checkAddress(rf.Address); err != nil {
			errs.Add(rp+".address", lines.At(rp+".address"), "%v", err)
		}
		if other, dup := addrs[rf.Address]; dup {
			errs.Add(rp+".address", lines.At(rp+".address"), "%q is already %s", rf.Address, other)
		} else {
			addrs[rf.Address] = rp
		}
		switch rf.Role {
		case "primary":
			r.Role = RolePrimary
			primaries++
			if primaries > 1 {
				errs.Add(rp+".role", lines.At(rp+".role"), "a partition has at most one primary")
			}
		case "secondary":
			r.Role = RoleSecondary
		default:
			errs.Add(rp+".role", lines.At(rp), "%q is not primary or secondary", rf.Role)
		}
		out = append(out, r)
	}
	return out
}

func checkAddress(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has port %q, not a number from 1 to 65535", addr, port)
	}
	return nil
}

func validID(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x21 || c > 0x7e || c == '"' || c == '\\' {
			return false
		}
	}
	return s != ""
}

func describePartition(s *keying.Scheme, i int) string {
	switch s.Kind() {
	case keying.UniformInt64:
		lo, hi := s.Bounds(i)
		return fmt.Sprintf("[%d, %d]", lo, hi)
	case keying.Named:
		return strconv.Quote(s.Names()[i])
	}
	return "(the singleton)"
}

func describeRanges(s *keying.Scheme) string {
	const show = 8
	out := ""
	for i := 0; i < s.Count() && i < show; i++ {
		if i > 0 {
			out += " "
		}
		out += describePartition(s, i)
	}
	if s.Count() > show {
		out += fmt.Sprintf(" ... (%d in all)", s.Count())
	}
	return out
}
