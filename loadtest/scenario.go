package loadtest

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/partroute/partroute/config"
)

// The load test's service: requests for ScenarioAuthority with a path under ScenarioPathPrefix,
// the key being the path's last segment.
const (
	ScenarioService    = "users"
	ScenarioAuthority  = "users.example.com"
	ScenarioPathPrefix = "/api/users/"
)

// Scenario is the partroute configuration a load test runs against: one uniformInt64 service
// whose key, read from the path, goes through the hash transform, with reads sent to
// secondaries and writes to the primary. Hashing is the transform most services use (any key
// text maps into the range), and a read policy of secondary makes partroute choose a role for
// every request.
type Scenario struct {
	// Partitions is the number of partitions of the service.
	Partitions int
	// Replicas is the number of replicas of each partition: one primary, the rest secondaries.
	Replicas int
	// ReplicaSettings are more fields of the service's replicas block, in YAML flow style
	// ("selection: ordered"), to measure what a feature costs: partroute checks them as it
	// checks any configuration.
	ReplicaSettings string
	// ReadYourWrites, when set, turns read-your-writes on for the service with this window,
	// with a keys file of its own and the token in a header: writes mint tokens, and reads,
	// which carry none, are checked for one.
	ReadYourWrites time.Duration
	// SetBy, when set, is the configuration's headers.setBy: the shape of partroute's answer,
	// and so of the Envoy configuration generated from it. The zero SetBy leaves the field
	// out, for partroute's default.
	SetBy config.SetBy
}

// DefaultScenario is the scenario of the published numbers.
func DefaultScenario() Scenario { return Scenario{Partitions: 8, Replicas: 3} }

// Check reports a scenario that cannot be written.
func (s Scenario) Check() error {
	if s.Partitions < 1 || s.Partitions > 100_000 {
		return fmt.Errorf("partitions %d is not between 1 and 100000", s.Partitions)
	}
	if s.Replicas < 1 || s.Replicas > 16 {
		return fmt.Errorf("replicas %d is not between 1 and 16", s.Replicas)
	}
	if s.SetBy != 0 {
		if _, err := config.ParseSetBy(s.SetBy.String()); err != nil {
			return fmt.Errorf("headers.setBy %v is not extproc, envoy or none", s.SetBy)
		}
	}
	if strings.ContainsAny(s.ReplicaSettings, "{}\n") {
		return fmt.Errorf("replica settings %q: fields in YAML flow style, without braces or new lines", s.ReplicaSettings)
	}
	return nil
}

// ReplicaCount is the number of replica addresses the naming view needs.
func (s Scenario) ReplicaCount() int { return s.Partitions * s.Replicas }

// ConfigYAML is partroute.yaml for the scenario, listening on extproc and admin, with the
// naming view in naming.yaml next to it.
func (s Scenario) ConfigYAML(extproc, admin string) string {
	return fmt.Sprintf(`# The load test's configuration (partroute loadtest writes it).
listen: {extproc: %q, admin: %q}
naming: {source: file, file: naming.yaml}
unmatched: passthrough
%sservices:
  - name: %s
    match: {pathPrefix: %s}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 1048575, count: %d}
    key:
      sources: [{path: "%s{id}"}, {header: x-user-id}]
      transform: hash
    replicas: {reads: secondary%s}
%s`, extproc, admin, s.headersSection(), ScenarioService, strings.TrimSuffix(ScenarioPathPrefix, "/"), s.Partitions, ScenarioPathPrefix, s.replicaSettings(), s.readYourWritesSection())
}

// replicaSettings are ReplicaSettings, and the read-your-writes window, to append to the
// replicas block.
func (s Scenario) replicaSettings() string {
	var out string
	if strings.TrimSpace(s.ReplicaSettings) != "" {
		out = ", " + s.ReplicaSettings
	}
	if s.ReadYourWrites > 0 {
		out += ", readYourWrites: " + s.ReadYourWrites.String()
	}
	return out
}

// headersSection is the headers block, which names the shape of partroute's answer when SetBy
// is set.
func (s Scenario) headersSection() string {
	if s.SetBy == 0 {
		return ""
	}
	return "headers: {setBy: " + s.SetBy.String() + "}\n"
}

// scenarioKeysFile is the read-your-writes keys file WriteFiles writes beside the
// configuration; its secret is fixed, as a load test's tokens protect nothing.
const scenarioKeysFile = "ryw-keys.yaml"

func (s Scenario) readYourWritesSection() string {
	if s.ReadYourWrites <= 0 {
		return ""
	}
	return "readYourWrites: {keysFile: " + scenarioKeysFile + ", cookie: \"\", header: x-partroute-ryw}\n"
}

// NamingYAML is the naming view of the scenario; addrs holds ReplicaCount addresses, replica r
// of partition p at addrs[p*Replicas+r].
func (s Scenario) NamingYAML(addrs []string) (string, error) {
	if len(addrs) != s.ReplicaCount() {
		return "", fmt.Errorf("scenario needs %d replica addresses, got %d", s.ReplicaCount(), len(addrs))
	}
	const high = 1048575
	n := uint64(high) + 1
	var b strings.Builder
	fmt.Fprintf(&b, "services:\n  %s:\n    partitions:\n", ScenarioService)
	for p := 0; p < s.Partitions; p++ {
		// The split of [0, 1048575] into Partitions ranges, as the scheme computes it: the first
		// n mod Partitions ranges hold one key more.
		per, extra := n/uint64(s.Partitions), n%uint64(s.Partitions) //nolint:gosec // Check keeps Partitions in [1, 100000]
		lo := uint64(p)*per + min(uint64(p), extra)
		width := per
		if uint64(p) < extra {
			width++
		}
		fmt.Fprintf(&b, "      - lowKey: %d\n        highKey: %d\n        replicas:\n", lo, lo+width-1)
		for r := 0; r < s.Replicas; r++ {
			role := "secondary"
			if r == 0 {
				role = "primary"
			}
			fmt.Fprintf(&b, "          - {address: %q, role: %s}\n", addrs[p*s.Replicas+r], role)
		}
	}
	return b.String(), nil
}

// WriteFiles writes partroute.yaml and naming.yaml into dir and returns the configuration's
// path.
func (s Scenario) WriteFiles(dir, extproc, admin string, addrs []string) (string, error) {
	if err := s.Check(); err != nil {
		return "", err
	}
	naming, err := s.NamingYAML(addrs)
	if err != nil {
		return "", err
	}
	cfgPath := filepath.Join(dir, "partroute.yaml")
	if err := os.WriteFile(cfgPath, []byte(s.ConfigYAML(extproc, admin)), 0o644); err != nil { //nolint:gosec // no secret, and the user may read it after a run
		return "", err
	}
	if err := os.WriteFile(filepath.Join(dir, "naming.yaml"), []byte(naming), 0o644); err != nil { //nolint:gosec // no secret, and the user may read it after a run
		return "", err
	}
	if s.ReadYourWrites > 0 {
		keys := "signingKey: loadtest\nkeys:\n  - {id: loadtest, secret: " + base64.StdEncoding.EncodeToString([]byte("partroute load test key, 32 bytes+")) + "}\n"
		if err := os.WriteFile(filepath.Join(dir, scenarioKeysFile), []byte(keys), 0o600); err != nil {
			return "", err
		}
	}
	return cfgPath, nil
}

// FakeReplicaAddrs returns n distinct loopback addresses (127.0.0.0/8) for a naming view whose
// replicas are never connected to, as in an ext_proc-only run.
func FakeReplicaAddrs(n int) []string {
	out := make([]string, n)
	for i := range out {
		j := i + 1
		out[i] = fmt.Sprintf("127.%d.%d.%d:8080", j>>16&255, j>>8&255, j&255)
	}
	return out
}
