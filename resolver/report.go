package resolver

import (
	"encoding/json"

	"github.com/partroute/partroute/keying"
)

// Report is the JSON description of a decision that `partroute resolve` prints and the admin
// listener's /debug/resolve serves.
type Report struct {
	Service     string           `json:"service,omitempty"`
	Key         string           `json:"key,omitempty"`
	Partition   *PartitionReport `json:"partition,omitempty"`
	Role        string           `json:"role,omitempty"`
	Replicas    []ReplicaReport  `json:"replicas,omitempty"`
	Passthrough bool             `json:"passthrough,omitempty"`
	Message     string           `json:"message,omitempty"`
	Error       *ErrorReport     `json:"error,omitempty"`
	// Cause is the naming source's error behind a rejection, for operators only: clients
	// get Error's message alone.
	Cause string `json:"cause,omitempty"`
}

// PartitionReport describes the chosen partition.
type PartitionReport struct {
	ID      string `json:"id"`
	Index   int    `json:"index"`
	LowKey  *int64 `json:"lowKey,omitempty"`
	HighKey *int64 `json:"highKey,omitempty"`
	Name    string `json:"name,omitempty"`
}

// ReplicaReport describes one replica the request may land on.
type ReplicaReport struct {
	Address string `json:"address"`
	Role    string `json:"role"`
	Healthy bool   `json:"healthy"`
}

// ErrorReport is the error object of the error table: the body partroute sends to clients
// holds code and message; reports add the status.
type ErrorReport struct {
	Status  int    `json:"status,omitempty"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Report describes d. Replicas lists the healthy replicas of the chosen role: the endpoints of
// the subset Envoy picks from.
func (d Decision) Report() Report {
	if d.Err != nil {
		r := Report{Error: &ErrorReport{Status: d.Err.Code.Status(), Code: d.Err.Code.String(), Message: d.Err.Message}}
		if d.Err.Cause != nil {
			r.Cause = d.Err.Cause.Error()
		}
		return r
	}
	if d.Service == nil {
		return Report{Passthrough: true, Message: "no service matches; the request passes through, with the partition, role and key headers removed"}
	}
	r := Report{Service: d.Service.Name}
	if d.NeedBody {
		// No key has been read yet: the zero Key would print as key "0".
		r.Message = "the service keys on the request body and none was given"
		return r
	}
	r.Key = string(d.Key.AppendText(nil, d.Service.Scheme().Kind()))
	if p := d.Partition; p != nil {
		pr := &PartitionReport{ID: p.ID, Index: p.Index, Name: p.Name}
		if d.Service.Scheme().Kind() == keying.UniformInt64 {
			lo, hi := p.LowKey, p.HighKey
			pr.LowKey, pr.HighKey = &lo, &hi
		}
		r.Partition = pr
		r.Role = d.Role.String()
		for _, c := range Candidates(p, d.Role) {
			r.Replicas = append(r.Replicas, ReplicaReport{Address: c.Address, Role: c.Role.String(), Healthy: c.Healthy})
		}
	}
	return r
}

// ErrorBody returns the JSON body of a rejection: {"error":{"code":..,"message":..}}.
func ErrorBody(e *Error) []byte {
	body, _ := json.Marshal(struct {
		Error ErrorReport `json:"error"`
	}{ErrorReport{Code: e.Code.String(), Message: e.Message}})
	return body
}
