package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/certs"
	"github.com/partroute/partroute/internal/testkit/example"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/etcdsource/etcdtest"
	"github.com/partroute/partroute/server"
)

// exported is what partroute's /metrics serves: for each sample name (a histogram's _bucket,
// _sum and _count apart), each label and the values seen for it.
type exported map[string]map[string]map[string]bool

// add records the metric families of one /metrics page.
func (e exported) add(families map[string]*dto.MetricFamily) {
	for name, mf := range families {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = lp.GetValue()
			}
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM:
				e.sample(name+"_count", labels)
				e.sample(name+"_sum", labels)
				for _, b := range m.GetHistogram().GetBucket() {
					e.sample(name+"_bucket", withLabel(labels, "le", fmt.Sprint(b.GetUpperBound())))
				}
			case dto.MetricType_SUMMARY:
				e.sample(name+"_count", labels)
				e.sample(name+"_sum", labels)
				for _, q := range m.GetSummary().GetQuantile() {
					e.sample(name, withLabel(labels, "quantile", fmt.Sprint(q.GetQuantile())))
				}
			default:
				e.sample(name, labels)
			}
		}
		if len(mf.GetMetric()) == 0 {
			e.sample(name, nil)
		}
	}
}

func (e exported) sample(name string, labels map[string]string) {
	if e[name] == nil {
		e[name] = map[string]map[string]bool{}
	}
	for l, v := range labels {
		if e[name][l] == nil {
			e[name][l] = map[string]bool{}
		}
		e[name][l][v] = true
	}
}

func withLabel(labels map[string]string, name, value string) map[string]string {
	out := map[string]string{name: value}
	for k, v := range labels {
		out[k] = v
	}
	return out
}

// allSeries runs partroute on each naming source, the way `partroute serve` does, and returns
// the union of what their /metrics serve: the file source with xDS (the xDS series), etcd (the
// source's sync series) and Service Fabric (its gateway, enumeration and cache series).
func allSeries(t *testing.T) exported {
	t.Helper()
	e := exported{}

	// The file source, with xDS on mutual TLS, so that the xDS and TLS series exist too.
	fileDir := testkit.CopyExamples(t)
	m := certs.NewMutual(t, fileDir)
	editFile(t, filepath.Join(fileDir, "partroute.yaml"), "listen:\n", fmt.Sprintf(
		"listen:\n  xds: 127.0.0.1:0\n  tls:\n    xds: {cert: %s, key: %s, clientCA: %s, requireClientCert: true}\n", m.ServerCert, m.ServerKey, m.CAFile))
	e.add(serveAndScrape(t, filepath.Join(fileDir, "partroute.yaml")))

	etcd := etcdtest.StartTestServer(t)
	_, view := example.Load(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if _, err := etcdsource.Write(ctx, etcd.Client(), "", view); err != nil {
		t.Fatal(err)
	}
	etcdDir := testkit.CopyExamples(t)
	editFile(t, filepath.Join(etcdDir, "partroute.yaml"), "  source: file\n", "  source: etcd\n")
	editFile(t, filepath.Join(etcdDir, "partroute.yaml"), "  file: naming.yaml",
		fmt.Sprintf("  etcd: {endpoints: [%s]}", strings.TrimPrefix(etcd.Endpoint, "http://")))
	e.add(serveAndScrape(t, filepath.Join(etcdDir, "partroute.yaml")))

	gateway := httptest.NewServer(fabricGateway{})
	t.Cleanup(gateway.Close)
	fabricPath := filepath.Join(t.TempDir(), "partroute.yaml")
	if err := os.WriteFile(fabricPath, []byte(fmt.Sprintf(fabricConfig, gateway.URL)), 0o600); err != nil {
		t.Fatal(err)
	}
	e.add(serveAndScrape(t, fabricPath))
	return e
}

// serveAddrs matches the log line that reports the listen addresses.
var serveAddrs = regexp.MustCompile(`partroute serving" extproc=\S+ admin=(127\.0\.0\.1:\d+)`)

// serveAndScrape runs partroute on cfgPath until the test ends and returns the metric families
// of its /metrics.
func serveAndScrape(t *testing.T, cfgPath string) map[string]*dto.MetricFamily {
	t.Helper()
	logs := &testkit.LogBuffer{}
	o := server.DefaultOptions(cfgPath, slog.New(slog.NewTextHandler(logs, nil)))
	o.DrainDelay, o.ShutdownTimeout = 0, time.Second
	ctx, cancel := context.WithCancel(context.Background())
	exited := make(chan error, 1)
	go func() { exited <- server.Run(ctx, o) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-exited:
			if err != nil {
				t.Errorf("serve %s: %v", cfgPath, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("serve %s did not return 30s after the test ended", cfgPath)
		}
	})
	var admin string
	testkit.WaitFor(t, "serve to report its addresses", 20*time.Second, func() bool {
		select {
		case err := <-exited:
			t.Fatalf("serve %s returned %v before serving; log:\n%s", cfgPath, err, logs)
		default:
		}
		if m := serveAddrs.FindStringSubmatch(logs.String()); m != nil {
			admin = m[1]
		}
		return admin != ""
	})
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+"/metrics", http.NoBody)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v\n%s", resp.StatusCode, err, body)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics of %s: %v", cfgPath, err)
	}
	return families
}

// editFile replaces the first old with replacement in the file at path.
func editFile(t *testing.T, path, old, replacement string) {
	t.Helper()
	data := string(readFile(t, path))
	if !strings.Contains(data, old) {
		t.Fatalf("%q is not in %s", old, path)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(data, old, replacement, 1)), 0o600); err != nil {
		t.Fatal(err)
	}
}

// fabricConfig maps one service of one partition to Service Fabric; %s is the gateway's URL.
const fabricConfig = `
listen: {extproc: "127.0.0.1:0", admin: "127.0.0.1:0"}
naming:
  source: servicefabric
  servicefabric: {endpoint: "%s", enumerateInterval: 1h}
services:
  - name: orders
    match: {pathPrefix: /app/orders}
    partitioning: {scheme: uniformInt64, lowKey: 0, highKey: 99, count: 1}
    key: {sources: [{query: PartitionKey}], transform: int64}
    fabric: {name: "fabric:/app/orders"}
`

// fabricPartition is the one partition of fabricConfig's service.
const fabricPartition = "6a2f0c3e-6f2b-4b8e-9d4e-000000000000"

// fabricGateway answers the two calls of a Service Fabric enumeration (GetPartitions and
// GetReplicas, in the JSON shapes of Microsoft's REST reference) for fabricConfig's service:
// enough for partroute to start on the Service Fabric source and export its series.
type fabricGateway struct{}

func (fabricGateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("content-type", "application/json")
	var body any
	switch r.URL.Path {
	case "/Services/app~orders/$/GetPartitions":
		body = map[string]any{"ContinuationToken": "", "Items": []any{map[string]any{
			"ServiceKind":          "Stateful",
			"PartitionInformation": map[string]any{"ServicePartitionKind": "Int64Range", "Id": fabricPartition, "LowKey": "0", "HighKey": "99"},
			"PartitionStatus":      "Ready", "HealthState": "Ok",
		}}}
	case "/Partitions/" + fabricPartition + "/$/GetReplicas":
		address, _ := json.Marshal(map[string]any{"Endpoints": map[string]string{"": "http://127.0.0.1:8081"}})
		body = map[string]any{"ContinuationToken": "", "Items": []any{map[string]any{
			"ServiceKind": "Stateful", "ReplicaId": "1", "ReplicaRole": "Primary", "ReplicaStatus": "Ready",
			"HealthState": "Ok", "NodeName": "node0", "Address": string(address),
		}}}
	default:
		w.WriteHeader(http.StatusNotFound)
		body = map[string]any{"Error": map[string]string{"Code": "FABRIC_E_SERVICE_DOES_NOT_EXIST", "Message": r.URL.Path}}
	}
	_ = json.NewEncoder(w).Encode(body)
}
