package resolver

import (
	"bytes"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/keying"
)

// FormatView renders a view in naming.yaml's shape: services in configuration order, each
// partition's fields in the order the example file uses, one replica per line.
func FormatView(cfg *config.Config, view *View) ([]byte, error) {
	entries := Entries(view)
	services := namingMap()
	for _, svc := range cfg.Services {
		list, ok := entries[svc.Name]
		if !ok {
			continue
		}
		parts := &yaml.Node{Kind: yaml.SequenceNode}
		for _, e := range list {
			parts.Content = append(parts.Content, namingEntry(&e))
		}
		svcNode := namingMap()
		namingPair(svcNode, "partitions", parts)
		namingPair(services, svc.Name, svcNode)
	}
	doc := namingMap()
	namingPair(doc, "services", services)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func namingEntry(e *PartitionEntry) *yaml.Node {
	n := namingMap()
	if e.LowKey != nil {
		namingPair(n, "lowKey", namingInt(*e.LowKey))
		namingPair(n, "highKey", namingInt(*e.HighKey))
	}
	if e.Name != "" {
		namingPair(n, "name", namingStr(e.Name))
	}
	if e.ID != "" {
		namingPair(n, "id", namingStr(e.ID))
	}
	replicas := &yaml.Node{Kind: yaml.SequenceNode}
	if len(e.Replicas) == 0 {
		replicas.Style = yaml.FlowStyle // replicas: []
	}
	for _, r := range e.Replicas {
		rn := namingMap()
		rn.Style = yaml.FlowStyle
		namingPair(rn, "address", namingStr(r.Address))
		namingPair(rn, "role", namingStr(r.Role))
		if r.Healthy != nil {
			namingPair(rn, "healthy", &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!bool", Value: strconv.FormatBool(*r.Healthy)})
		}
		replicas.Content = append(replicas.Content, rn)
	}
	namingPair(n, "replicas", replicas)
	return n
}

func namingMap() *yaml.Node { return &yaml.Node{Kind: yaml.MappingNode} }

// namingStr is a string scalar; the encoder quotes it when it would otherwise read as another type.
func namingStr(s string) *yaml.Node { return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s} }

func namingInt(v int64) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: strconv.FormatInt(v, 10)}
}

func namingPair(m *yaml.Node, key string, value *yaml.Node) {
	m.Content = append(m.Content, namingStr(key), value)
}

// Entries returns the partition entries of a view, by service, in scheme order: the content
// that Write stores. An id equal to the derived default is left out, and healthy is written
// only when false, so that a view written and read back is the same view.
func Entries(view *View) map[string][]PartitionEntry {
	out := make(map[string][]PartitionEntry, len(view.Services))
	for name, sv := range view.Services {
		list := make([]PartitionEntry, 0, len(sv.Partitions))
		for _, p := range sv.Partitions {
			list = append(list, EntryOf(sv, &p))
		}
		out[name] = list
	}
	return out
}

// EntryOf returns the entry of one partition of sv.
func EntryOf(sv *ServiceView, p *Partition) PartitionEntry {
	e := PartitionEntry{Replicas: make([]ReplicaEntry, 0, len(p.Replicas))}
	switch sv.Kind {
	case keying.UniformInt64:
		lo, hi := p.LowKey, p.HighKey
		e.LowKey, e.HighKey = &lo, &hi
	case keying.Named:
		e.Name = p.Name
	}
	if p.ID != DefaultPartitionID(sv.Name, sv.Kind, p.LowKey, p.HighKey, p.Name) {
		e.ID = p.ID
	}
	for _, r := range p.Replicas {
		re := ReplicaEntry{Address: r.Address, Role: r.Role.String()}
		if !r.Healthy {
			f := false
			re.Healthy = &f
		}
		e.Replicas = append(e.Replicas, re)
	}
	return e
}
