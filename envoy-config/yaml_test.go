package envoyconfig

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/partroute/partroute/internal/testkit/certs"
	"github.com/partroute/partroute/internal/testkit/example"
)

// regenerate is the command that rewrites the shipped bootstrap from the example files.
const regenerate = "go run ./cmd/partroute envoy-bootstrap -config envoy-config/examples/partroute.yaml -o envoy-config/envoy.yaml"

func TestBootstrapYAMLRoundTrip(t *testing.T) {
	cfg, view := loadFeatures(t)
	b := mustBootstrap(t, cfg, view, Options{Retry: &Retry{NumRetries: 2, PerTryTimeout: time.Second}, ResponseHeaders: true})
	y, err := MarshalYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := MarshalYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(y, again) {
		t.Fatal("MarshalYAML gives different bytes for the same bootstrap")
	}
	back, err := ParseYAML(y)
	if err != nil {
		t.Fatalf("%v\n%s", err, y)
	}
	if !proto.Equal(b, back) {
		t.Fatalf("YAML round trip changed the bootstrap:\n%s", yamlDiff(t, b, back))
	}
	if err := Validate(back); err != nil {
		t.Fatal(err)
	}
	// The partition id "3" must stay a string on the way through YAML: a number would never
	// match partroute's string criteria.
	found := false
	for _, c := range back.GetStaticResources().GetClusters() {
		for _, l := range c.GetLoadAssignment().GetEndpoints() {
			for _, e := range l.GetLbEndpoints() {
				v := e.GetMetadata().GetFilterMetadata()["envoy.lb"].GetFields()["partition"]
				if _, ok := v.GetKind().(*structpb.Value_StringValue); ok && v.GetStringValue() == "3" {
					found = true
				}
			}
		}
	}
	if !found {
		t.Errorf("partition id \"3\" did not come back as a string:\n%s", y)
	}
}

func TestParseYAMLRejectsUnknownFields(t *testing.T) {
	for _, doc := range []string{
		"admin: {adress: {}}\n", //nolint:misspell // the misspelt field is the input under test
		"static_resources: {clusters: [{name: x, typo: 1}]}\n",
		"static_resources: {listeners: [{filter_chains: [{filters: [{name: x, typed_config: {'@type': type.googleapis.com/no.such.Type}}]}]}]}\n",
		"admin: [\n",
	} {
		if _, err := ParseYAML([]byte(doc)); err == nil {
			t.Errorf("no error for %q", doc)
		}
	}
}

func TestValidateLooksIntoTypedConfigs(t *testing.T) {
	cfg, view := example.Load(t)
	b := mustBootstrap(t, cfg, view, Options{})
	if err := Validate(b); err != nil {
		t.Fatal(err)
	}

	// An HTTP connection manager without a stat prefix is invalid, yet the bootstrap's own
	// ValidateAll does not look inside the Any that holds it.
	hcm := &hcmv3.HttpConnectionManager{}
	filter := b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0]
	if err := filter.GetTypedConfig().UnmarshalTo(hcm); err != nil {
		t.Fatal(err)
	}
	hcm.StatPrefix = ""
	filter.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("the bootstrap's ValidateAll now fails (%v); this test no longer shows why Validate exists", err)
	}
	if err := Validate(b); err == nil || !strings.Contains(err.Error(), "StatPrefix") {
		t.Errorf("Validate with an empty stat_prefix: %v", err)
	}

	filter.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: &anypb.Any{TypeUrl: "type.googleapis.com/no.such.Type"}}
	if err := Validate(b); err == nil || !strings.Contains(err.Error(), "no.such.Type") {
		t.Errorf("Validate with an unknown typed config: %v", err)
	}
}

// TestShippedYAMLs checks every Envoy bootstrap shipped in this directory: it parses, with its
// typed configs, and passes Envoy's API constraints. envoy.yaml must also be exactly what the
// generator makes of the example files.
func TestShippedYAMLs(t *testing.T) {
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no Envoy YAML in envoy-config/; envoy.yaml should be there")
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ParseYAML(data)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if err := Validate(b); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}

	data, err := os.ReadFile("envoy.yaml")
	if err != nil {
		t.Fatal(err)
	}
	shipped, err := ParseYAML(data)
	if err != nil {
		t.Fatal(err)
	}
	cfg, view := example.Load(t)
	want := mustBootstrap(t, cfg, view, Options{})
	if !proto.Equal(want, shipped) {
		t.Errorf("envoy.yaml is not the bootstrap of the example files; regenerate it from the repository root with\n  %s\n%s", regenerate, yamlDiff(t, want, shipped))
	}
}

// envoyBinary finds Envoy as FindEnvoy does; a missing Envoy fails the test.
func envoyBinary(t *testing.T) string {
	t.Helper()
	bin, err := FindEnvoy()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}

// TestEnvoyValidatesBootstraps runs the real Envoy in validate mode, which builds the whole
// configuration (routes, regexes, clusters, extensions) without serving, over the shipped
// files and over generated bootstraps that use every feature.
func TestEnvoyValidatesBootstraps(t *testing.T) {
	bin := envoyBinary(t)
	dir := t.TempDir()
	files, err := filepath.Glob("*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	abs := func(f string) string {
		p, err := filepath.Abs(f)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := map[string]string{}
	for _, f := range files {
		cases[f] = abs(f)
	}
	write := func(name string, b []byte) {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		cases[name] = p
	}
	generate := func(name, cfgYAML, namingYAML string, opts Options) {
		cfg, view := parseConfigAndView(t, cfgYAML, namingYAML)
		y, err := MarshalYAML(mustBootstrap(t, cfg, view, opts))
		if err != nil {
			t.Fatal(err)
		}
		write(name, y)
	}
	generate("features.yaml", featureConfig, featureNaming, Options{Retry: &Retry{NumRetries: 2, PerTryTimeout: 250 * time.Millisecond}, ResponseHeaders: true})
	// Mutual TLS to partroute, over xDS so that both of partroute's clusters have it: the SDS
	// files and the certificate files they name must exist for Envoy to load them.
	m := certs.NewMutual(t, dir)
	upstream := &UpstreamTLS{CertFile: m.ClientCert, KeyFile: m.ClientKey, CAFile: m.CAFile, ServerName: "localhost", SecretDir: dir}
	if err := WriteSecretFiles(upstream); err != nil {
		t.Fatal(err)
	}
	generate("features-tls.yaml", featureConfig, featureNaming, Options{TLS: upstream, XDSAddress: "127.0.0.1:18000"})
	// Envoy refuses a regex whose compiled program is too large: host names of every legal
	// length must still fit, with and without the runtime override the generator adds.
	for _, n := range []int{4, 24} {
		long := strings.Repeat("abcdefghi.", n) + "example.com"
		generate("authority-"+strconv.Itoa(len(long))+".yaml", `
naming: {file: naming.yaml}
services:
  - {name: w, match: {authority: "*.`+long+`", pathPrefix: /w}, partitioning: {scheme: singleton}}
  - {name: e, match: {authority: "`+long+`", pathPrefix: /e}, partitioning: {scheme: singleton}}
`, `services: {w: {partitions: [{replicas: []}]}, e: {partitions: [{replicas: []}]}}`, Options{})
	}

	for name, path := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "--mode", "validate", "-c", path, "--log-level", "warn").CombinedOutput()
			if err != nil {
				t.Fatalf("envoy --mode validate -c %s: %v\n%s", path, err, out)
			}
			if !strings.Contains(string(out), "OK") {
				t.Fatalf("envoy --mode validate did not say OK:\n%s", out)
			}
			for _, line := range strings.Split(string(out), "\n") {
				if strings.Contains(line, "deprecated") {
					t.Errorf("Envoy warns of a deprecated field: %s", line)
				}
			}
		})
	}
}

// yamlDiff shows where two bootstraps differ: the first differing line of their YAML, with a
// few lines of context.
func yamlDiff(t *testing.T, want, got *bootstrapv3.Bootstrap) string {
	t.Helper()
	wy, err := MarshalYAML(want)
	if err != nil {
		t.Fatal(err)
	}
	gy, err := MarshalYAML(got)
	if err != nil {
		t.Fatal(err)
	}
	wl, gl := strings.Split(string(wy), "\n"), strings.Split(string(gy), "\n")
	for i := 0; i < len(wl) || i < len(gl); i++ {
		if i < len(wl) && i < len(gl) && wl[i] == gl[i] {
			continue
		}
		from := max(0, i-3)
		return "want:\n" + strings.Join(wl[from:min(len(wl), i+3)], "\n") + "\ngot:\n" + strings.Join(gl[from:min(len(gl), i+3)], "\n")
	}
	return "(the YAML is identical; the difference is in something YAML does not show)"
}
