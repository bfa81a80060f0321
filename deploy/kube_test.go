package deploy

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	corev1 "k8s.io/api/core/v1"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/server"
)

// The objects of deploy/kubernetes, by kind and name, as docs/deploy.md describes them.
var kubeObjects = []string{
	"ConfigMap/partroute-config",
	"ConfigMap/partroute-naming",
	"Deployment/partroute",
	"PodDisruptionBudget/partroute",
	"Service/partroute-admin",
	"Service/partroute-extproc",
	"Service/partroute-xds",
	"ServiceAccount/partroute",
	"ServiceMonitor/partroute",
}

// TestKubeManifests decodes every object of deploy/kubernetes strictly into its Kubernetes API
// type, and checks that they run partroute as docs/deploy.md says (checkRendering): two
// replicas, probes on the admin listener's /healthz and /readyz, Services on the listeners of
// the ConfigMap's partroute.yaml, ext_proc and xDS on mutual TLS from the Secret, a grace period
// longer than the drain. The ConfigMaps hold the container image's example, listening for the
// cluster: the same services and the same naming view.
func TestKubeManifests(t *testing.T) {
	b := loadManifests(t)
	if got := slices.Sorted(maps.Keys(b.names)); !slices.Equal(got, kubeObjects) {
		t.Errorf("deploy/kubernetes holds %v, want %v", got, kubeObjects)
	}
	r := checkRendering(t, b)

	if n := *r.deployment.Spec.Replicas; n != 2 {
		t.Errorf("Deployment %s: %d replicas, want 2", r.deployment.Name, n)
	}
	if len(b.serviceMonitors) != 1 {
		t.Errorf("%d ServiceMonitors, want 1", len(b.serviceMonitors))
	}
	if r.cfg.Listen.XDS == "" {
		t.Error("partroute.yaml has no xDS listener")
	}
	for name, l := range map[string]struct{ on, mutual bool }{
		"extproc": {r.cfg.Listen.TLS.ExtProc.On(), r.cfg.Listen.TLS.ExtProc.RequireClientCert},
		"xds":     {r.cfg.Listen.TLS.XDS.On(), r.cfg.Listen.TLS.XDS.RequireClientCert},
	} {
		if !l.on || !l.mutual {
			t.Errorf("partroute.yaml: listen.tls.%s serves TLS %v, requires a client certificate %v: want mutual TLS", name, l.on, l.mutual)
		}
	}

	// The ConfigMaps are the image's example, but for the listeners.
	root := testkit.RepoRoot(t)
	inStep := func(what, got, wantPath string, without ...string) {
		t.Helper()
		var g, w map[string]any
		if err := yaml.Unmarshal([]byte(got), &g); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if err := yaml.Unmarshal(readFile(t, wantPath), &w); err != nil {
			t.Fatalf("%s: %v", wantPath, err)
		}
		for _, k := range without {
			delete(g, k)
			delete(w, k)
		}
		if !reflect.DeepEqual(g, w) {
			rel, _ := filepath.Rel(root, wantPath)
			t.Errorf("%s is not %s (but for %v):\n%v\nwant\n%v", what, rel, without, g, w)
		}
	}
	inStep("ConfigMap partroute-config partroute.yaml", b.configMaps["partroute-config"].Data["partroute.yaml"], containerConfig(t), "listen")
	inStep("ConfigMap partroute-naming naming.yaml", b.configMaps["partroute-naming"].Data["naming.yaml"], testkit.Example(t, "naming.yaml"))

	// docs/deploy.md describes each object, by its name.
	doc := string(readFile(t, filepath.Join(root, "docs", "deploy.md")))
	for _, o := range kubeObjects {
		_, name, _ := strings.Cut(o, "/")
		if !strings.Contains(doc, "`"+name+"`") {
			t.Errorf("docs/deploy.md does not name %s (as `%s`)", o, name)
		}
	}
}

// TestKubeProbesServed runs partroute on the pod's files of deploy/kubernetes, the Secret's
// keys filled with certificates of a test CA, and its listeners moved to ports of the loopback,
// and asks its admin listener what the probes and the ServiceMonitor ask: each answers 200.
func TestKubeProbesServed(t *testing.T) {
	b := loadManifests(t)
	r := checkRendering(t, b)
	if t.Failed() {
		t.FailNow()
	}
	cfgPath := filepath.Join(r.dir, filepath.FromSlash(r.args.config))
	onLoopback(t, cfgPath)
	admin := startServe(t, cfgPath)

	c := r.container
	paths := map[string]string{
		"readiness probe": c.ReadinessProbe.HTTPGet.Path,
		"liveness probe":  c.LivenessProbe.HTTPGet.Path,
	}
	if c.StartupProbe != nil {
		paths["startup probe"] = c.StartupProbe.HTTPGet.Path
	}
	for _, sm := range b.serviceMonitors {
		paths["ServiceMonitor "+sm.Name] = sm.Spec.Endpoints[0].Path
	}
	for what, p := range paths {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+admin+p, http.NoBody)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s: GET %s: %v", what, p, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("%s: GET %s on the admin listener: %d %s", what, p, resp.StatusCode, body)
		}
	}
}

// onLoopback moves every listener of the partroute.yaml at path to a port of the loopback the
// kernel picks, leaving the rest of the file as it is.
func onLoopback(t *testing.T, path string) {
	t.Helper()
	var doc yaml.Node
	if err := yaml.Unmarshal(readFile(t, path), &doc); err != nil {
		t.Fatal(err)
	}
	top := doc.Content[0]
	moved := 0
	for i := 0; i+1 < len(top.Content); i += 2 {
		if top.Content[i].Value != "listen" {
			continue
		}
		listen := top.Content[i+1]
		for j := 0; j+1 < len(listen.Content); j += 2 {
			switch listen.Content[j].Value {
			case "extproc", "xds", "admin":
				listen.Content[j+1].Value = "127.0.0.1:0"
				moved++
			}
		}
	}
	if moved == 0 {
		t.Fatalf("%s has no listener to move", path)
	}
	out, err := yaml.Marshal(&doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
}

// startServe runs partroute on cfgPath, as `partroute serve` does, until the test ends, and
// returns the address of its admin listener.
func startServe(t *testing.T, cfgPath string) string {
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
		case err, ok := <-exited:
			if ok && err != nil {
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
			close(exited) // for the cleanup, which has nothing more to wait for
			t.Fatalf("serve %s returned %v before serving; log:\n%s", cfgPath, err, logs)
		default:
		}
		if m := serveAddrs.FindStringSubmatch(logs.String()); m != nil {
			admin = m[1]
		}
		return admin != ""
	})
	return admin
}

// TestKubeDocsEnvoyClusters checks the Envoy clusters docs/deploy.md gives for Envoy in the
// cluster: each decodes strictly into Envoy's Cluster and validates, and each reaches a Service
// of deploy/kubernetes by its DNS name, on the Service's port.
func TestKubeDocsEnvoyClusters(t *testing.T) {
	doc := string(readFile(t, filepath.Join(testkit.RepoRoot(t), "docs", "deploy.md")))
	m := regexp.MustCompile("(?s)```yaml\n(- name: partroute_extproc\n.*?)```").FindStringSubmatch(doc)
	if m == nil {
		t.Fatal("docs/deploy.md has no yaml block of Envoy clusters starting with partroute_extproc")
	}
	js, err := sigsyaml.YAMLToJSONStrict([]byte(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	var raw []json.RawMessage
	if err := json.Unmarshal(js, &raw); err != nil {
		t.Fatal(err)
	}
	services := map[string]*corev1.Service{}
	for _, s := range loadManifests(t).services {
		services[s.Name] = s
	}
	want := map[string]string{"partroute_extproc": "partroute-extproc", "partroute_xds": "partroute-xds"}
	seen := map[string]bool{}
	for _, r := range raw {
		c := &clusterv3.Cluster{}
		if err := protojson.Unmarshal(r, c); err != nil {
			t.Errorf("a cluster of docs/deploy.md: %v\n%s", err, r)
			continue
		}
		if err := c.ValidateAll(); err != nil {
			t.Errorf("cluster %s of docs/deploy.md: %v", c.GetName(), err)
		}
		seen[c.GetName()] = true
		svc := services[want[c.GetName()]]
		if svc == nil {
			t.Errorf("cluster %s of docs/deploy.md: no Service of deploy/kubernetes for it", c.GetName())
			continue
		}
		sa := c.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
		if !strings.HasPrefix(sa.GetAddress(), svc.Name+".") || sa.GetPortValue() != uint32(svc.Spec.Ports[0].Port) {
			t.Errorf("cluster %s of docs/deploy.md reaches %s:%d, not Service %s on its port %d", c.GetName(), sa.GetAddress(), sa.GetPortValue(), svc.Name, svc.Spec.Ports[0].Port)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("docs/deploy.md gives the clusters %v, want %v", seen, want)
	}
}
