package deploy

import (
	"bytes"
	"debug/buildinfo"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/partroute/partroute/internal/testkit"
)

// helmRelease is the release name the tests render the chart as: the chart then names its
// objects as deploy/kubernetes names them.
const helmRelease = "partroute"

func chartDir(t *testing.T) string {
	t.Helper()
	return filepath.Join(testkit.RepoRoot(t), "deploy", "helm", "partroute")
}

// helmBinary returns the helm the Makefile pins (HELM_VERSION), built into .cache by `make helm`.
func helmBinary(t *testing.T) string {
	t.Helper()
	return makeBinary(t, "helm", "HELM_VERSION", "helm.sh/helm/v3")
}

// makeBinary returns a tool the Makefile pins and builds from its Go module: the version is the
// Makefile's versionVar, and `make name` builds the binary into .cache/name/<version>/name. The
// test runs `make name` when the binary is not there yet, which builds it once; it checks that
// the binary is the module at that version.
func makeBinary(t *testing.T, name, versionVar, module string) string {
	t.Helper()
	root := testkit.RepoRoot(t)
	m := regexp.MustCompile(`(?m)^` + versionVar + `\s*:?=\s*(\S+)\s*$`).FindSubmatch(readFile(t, filepath.Join(root, "Makefile")))
	if m == nil {
		t.Fatalf("the Makefile sets no %s", versionVar)
	}
	version := string(m[1])
	bin := filepath.Join(root, ".cache", name, version, name)
	if _, err := os.Stat(bin); err != nil {
		makeBin, err := exec.LookPath("make")
		if err != nil {
			t.Fatalf("make is not installed: %s is built by `make %s`", name, name)
		}
		t.Logf("building %s %s with `make %s`, once", name, version, name)
		if out, err := exec.CommandContext(t.Context(), makeBin, "-C", root, name).CombinedOutput(); err != nil {
			t.Fatalf("make %s: %v\n%s", name, err, out)
		}
	}
	// A tool built from its module may say only part of its version of itself (helm says its
	// minor release, v3.22); the module's version is in the binary's build information.
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("%s: %v", bin, err)
	}
	if !strings.HasPrefix(info.Path, module+"/") || info.Main.Path != module || info.Main.Version != version {
		t.Fatalf("%s is %s %s, want %s %s: remove it, and `make %s` builds the pinned one", bin, info.Main.Path, info.Main.Version, module, version, name)
	}
	return bin
}

// runHelm runs helm with its own empty configuration, cache and data directories, so that
// nothing of the user's (repositories, plugins) changes what it does, and returns its standard
// output; a failure ends the test.
func runHelm(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	out, stderr, err := tryHelm(t, helm, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s%s", strings.Join(args, " "), err, stderr, out)
	}
	return out
}

func tryHelm(t *testing.T, helm string, args ...string) (stdout, stderr []byte, err error) {
	t.Helper()
	home := t.TempDir()
	cmd := exec.CommandContext(t.Context(), helm, args...)
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err = cmd.Run()
	return o.Bytes(), e.Bytes(), err
}

// renderChart runs `helm template` on the chart and decodes every object it renders strictly.
func renderChart(t *testing.T, helm string, args ...string) *bundle {
	t.Helper()
	args = append([]string{"template", helmRelease, chartDir(t), "--namespace", "partroute"}, args...)
	out := runHelm(t, helm, args...)
	b := newBundle()
	decodeManifests(t, "helm "+strings.Join(args, " "), out, b)
	return b
}

// TestHelmChart lints the chart (`helm lint --strict`) with each values file of its ci/
// directory, renders it with `helm template`, decodes every object strictly into its API
// type, and checks each rendering as the manifests of deploy/kubernetes are checked
// (checkRendering), then what each values file asks for.
func TestHelmChart(t *testing.T) {
	helm := helmBinary(t)
	manifests := loadManifests(t)
	cases := map[string]struct {
		objects  []string
		replicas int32
		tls      bool
		// existing are ConfigMaps the values name and the cluster would hold.
		existing []*corev1.ConfigMap
	}{
		"default.yaml": {
			objects: []string{"ConfigMap/partroute-config", "ConfigMap/partroute-naming", "Deployment/partroute", "PodDisruptionBudget/partroute",
				"Service/partroute-admin", "Service/partroute-extproc", "Service/partroute-xds", "ServiceAccount/partroute"},
			replicas: 2,
		},
		"mtls.yaml": {
			objects: []string{"ConfigMap/partroute-config", "ConfigMap/partroute-naming", "Deployment/partroute", "PodDisruptionBudget/partroute",
				"Service/partroute-admin", "Service/partroute-extproc", "Service/partroute-xds", "ServiceAccount/partroute", "ServiceMonitor/partroute"},
			replicas: 3,
			tls:      true,
		},
		"external-configmaps.yaml": {
			objects: []string{"Deployment/partroute", "PodDisruptionBudget/partroute",
				"Service/partroute-admin", "Service/partroute-extproc", "Service/partroute-xds"},
			replicas: 2,
			tls:      true,
			existing: []*corev1.ConfigMap{manifests.configMaps["partroute-config"], manifests.configMaps["partroute-naming"]},
		},
		"etcd.yaml": {
			objects:  []string{"ConfigMap/partroute-config", "Deployment/partroute", "Service/partroute-admin", "Service/partroute-extproc", "ServiceAccount/partroute"},
			replicas: 2,
		},
	}
	files, err := filepath.Glob(filepath.Join(chartDir(t), "ci", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(files))
	for i, f := range files {
		names[i] = filepath.Base(f)
	}
	if want := slices.Sorted(maps.Keys(cases)); !slices.Equal(names, want) {
		t.Fatalf("the chart's ci/ holds %v, want the values files the test knows, %v", names, want)
	}
	for name, tc := range cases {
		t.Run(strings.TrimSuffix(name, ".yaml"), func(t *testing.T) {
			values := filepath.Join(chartDir(t), "ci", name)
			runHelm(t, helm, "lint", "--strict", chartDir(t), "--values", values)
			b := renderChart(t, helm, "--values", values)
			if got := slices.Sorted(maps.Keys(b.names)); !slices.Equal(got, tc.objects) {
				t.Errorf("the chart renders %v, want %v", got, tc.objects)
			}
			r := checkRendering(t, b, tc.existing...)
			if t.Failed() {
				return
			}
			if n := *r.deployment.Spec.Replicas; n != tc.replicas {
				t.Errorf("%d replicas, want %d", n, tc.replicas)
			}
			tls := r.cfg.Listen.TLS
			if got := tls.ExtProc.On() && tls.ExtProc.RequireClientCert; got != tc.tls {
				t.Errorf("ext_proc on mutual TLS: %v, want %v", got, tc.tls)
			}
			if got := tls.XDS.On() && tls.XDS.RequireClientCert; r.cfg.Listen.XDS != "" && got != tc.tls {
				t.Errorf("xDS on mutual TLS: %v, want %v", got, tc.tls)
			}
		})
	}

	// The defaults hold the manifests' partroute.yaml but for its TLS, and their naming view.
	b := renderChart(t, helm)
	var chartCfg, kubeCfg map[string]any
	for _, y := range []struct {
		text string
		out  *map[string]any
	}{{b.configMaps["partroute-config"].Data["partroute.yaml"], &chartCfg}, {manifests.configMaps["partroute-config"].Data["partroute.yaml"], &kubeCfg}} {
		if err := yaml.Unmarshal([]byte(y.text), y.out); err != nil {
			t.Fatal(err)
		}
	}
	delete(kubeCfg["listen"].(map[string]any), "tls")
	if !reflect.DeepEqual(chartCfg, kubeCfg) {
		t.Errorf("the chart's default partroute.yaml is not deploy/kubernetes' without listen.tls:\n%v\nwant\n%v", chartCfg, kubeCfg)
	}
	if got, want := b.configMaps["partroute-naming"].Data, manifests.configMaps["partroute-naming"].Data; !reflect.DeepEqual(got, want) {
		t.Errorf("the chart's default naming.yaml is not deploy/kubernetes':\n%v\nwant\n%v", got, want)
	}
}

// TestHelmDefaultsMatchManifests renders the chart with its defaults and the three things the
// manifests of deploy/kubernetes add to them (mutual TLS from the Secret partroute-tls, their
// partroute.yaml and naming.yaml, a ServiceMonitor), and checks that it renders the manifests'
// objects: the same kinds and names, the same specs field for field, the same ConfigMap data,
// and the manifests' labels among the chart's.
func TestHelmDefaultsMatchManifests(t *testing.T) {
	helm := helmBinary(t)
	manifests := loadManifests(t)
	dir := t.TempDir()
	cfgFile, namingFile := filepath.Join(dir, "partroute.yaml"), filepath.Join(dir, "naming.yaml")
	for p, data := range map[string]string{
		cfgFile:    manifests.configMaps["partroute-config"].Data["partroute.yaml"],
		namingFile: manifests.configMaps["partroute-naming"].Data["naming.yaml"],
	} {
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := renderChart(t, helm, "--set", "tls.enabled=true,serviceMonitor.enabled=true",
		"--set-file", "config.partrouteYaml="+cfgFile, "--set-file", "naming.namingYaml="+namingFile)
	if got, want := slices.Sorted(maps.Keys(b.names)), slices.Sorted(maps.Keys(manifests.names)); !slices.Equal(got, want) {
		t.Fatalf("the chart renders %v, the manifests hold %v", got, want)
	}

	type object struct {
		labels map[string]string
		spec   any
	}
	objects := func(b *bundle) map[string]object {
		out := map[string]object{}
		for _, o := range b.deployments {
			out["Deployment/"+o.Name] = object{o.Labels, o.Spec}
		}
		for _, o := range b.services {
			out["Service/"+o.Name] = object{o.Labels, o.Spec}
		}
		for _, o := range b.pdbs {
			out["PodDisruptionBudget/"+o.Name] = object{o.Labels, o.Spec}
		}
		for _, o := range b.serviceMonitors {
			out["ServiceMonitor/"+o.Name] = object{o.Labels, o.Spec}
		}
		for _, o := range b.configMaps {
			out["ConfigMap/"+o.Name] = object{o.Labels, o.Data}
		}
		for _, o := range b.serviceAccounts {
			out["ServiceAccount/"+o.Name] = object{o.Labels, o.AutomountServiceAccountToken}
		}
		return out
	}
	chart := objects(b)
	for name, want := range objects(manifests) {
		got := chart[name]
		for _, d := range differences(reflect.ValueOf(got.spec), reflect.ValueOf(want.spec), "") {
			t.Errorf("%s: %s", name, d)
		}
		for k, v := range want.labels {
			if got.labels[k] != v {
				t.Errorf("%s: label %s is %q in the chart, %q in the manifests", name, k, got.labels[k], v)
			}
		}
	}
}

// TestHelmChartRefuses checks that the chart refuses to render values that would make pods
// that cannot start, cannot be reached, or are killed while they drain, and values it does not
// have (values.schema.json), with a message that says which value is wrong.
func TestHelmChartRefuses(t *testing.T) {
	helm := helmBinary(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	loopback := write("loopback.yaml", "config:\n  partrouteYaml: |\n    listen: {extproc: 127.0.0.1:50051, xds: 0.0.0.0:18000, admin: 0.0.0.0:9901}\n    services: []\n")
	noXDS := write("noxds.yaml", "config:\n  partrouteYaml: |\n    listen: {extproc: 0.0.0.0:50051, admin: 0.0.0.0:9901}\n    services: []\n")
	adminTLS := write("admintls.yaml", "tls: {enabled: true}\nconfig:\n  partrouteYaml: |\n    listen:\n      extproc: 0.0.0.0:50051\n      xds: 0.0.0.0:18000\n      admin: 0.0.0.0:9901\n      tls:\n        admin: {cert: tls/tls.crt, key: tls/tls.key}\n")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"grace as long as the drain", []string{"--set", "terminationGracePeriodSeconds=20,drain.delaySeconds=5,drain.shutdownTimeoutSeconds=15"}, "terminationGracePeriodSeconds (20) must be longer than drain.delaySeconds + drain.shutdownTimeoutSeconds (20)"},
		{"drain longer than the grace", []string{"--set", "terminationGracePeriodSeconds=30,drain.delaySeconds=5,drain.shutdownTimeoutSeconds=30"}, "terminationGracePeriodSeconds (30) must be longer than drain.delaySeconds + drain.shutdownTimeoutSeconds (35)"},
		{"PodDisruptionBudget of every pod", []string{"--set", "replicas=2,podDisruptionBudget.minAvailable=2"}, "podDisruptionBudget.minAvailable (2) must be below replicas (2)"},
		{"admin port not partroute.yaml's", []string{"--set", "ports.admin=9902"}, `listen.admin is "0.0.0.0:9901"; in a pod it must be 0.0.0.0:9902 (ports.admin)`},
		{"listener on loopback", []string{"--values", loopback}, `listen.extproc is "127.0.0.1:50051"`},
		{"xDS port without the listener", []string{"--values", noXDS}, `listen.xds is ""; in a pod it must be 0.0.0.0:18000`},
		{"xDS listener without the port", []string{"--set", "ports.xds=0"}, `listen.xds is "0.0.0.0:18000", but ports.xds is 0`},
		{"TLS without listen.tls", []string{"--set", "tls.enabled=true"}, "tls.enabled is true, but config.partrouteYaml has no listen.tls"},
		{"listen.tls without TLS", []string{"--values", filepath.Join(chartDir(t), "ci", "mtls.yaml"), "--set", "tls.enabled=false"}, "config.partrouteYaml has listen.tls, but tls.enabled is false"},
		{"TLS on the admin listener", []string{"--values", adminTLS}, "listen.tls.admin is not supported by the chart"},
		{"no partroute.yaml", []string{"--set", "config.partrouteYaml="}, "config.partrouteYaml or config.existingConfigMap is required"},
		{"partroute.yaml not YAML", []string{"--set", "config.partrouteYaml=listen: [x"}, "config.partrouteYaml is not YAML"},
		{"a value the chart does not have", []string{"--set", "tls.enable=true"}, "at '/tls': additional properties 'enable' not allowed"},
		{"a log format partroute does not have", []string{"--set", "logFormat=xml"}, "at '/logFormat': value must be one of"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"template", helmRelease, chartDir(t)}, tc.args...)
			out, stderr, err := tryHelm(t, helm, args...)
			if err == nil {
				t.Fatalf("helm %s renders:\n%s", strings.Join(args, " "), out)
			}
			if !strings.Contains(string(stderr), tc.want) {
				t.Errorf("helm %s fails with\n%s\nwant %q in it", strings.Join(args, " "), stderr, tc.want)
			}
		})
	}
}

// differences describes where a and b, two values of one type, differ: the path of each field,
// element or key that differs, with both values. A struct with unexported fields (such as
// resource.Quantity) is compared as a whole.
func differences(a, b reflect.Value, at string) []string {
	if reflect.DeepEqual(a.Interface(), b.Interface()) {
		return nil
	}
	differ := func() []string {
		return []string{fmt.Sprintf("%s is %s in the chart, %s in the manifests", strings.TrimPrefix(at, "."), showValue(a), showValue(b))}
	}
	switch a.Kind() {
	case reflect.Pointer:
		if a.IsNil() || b.IsNil() {
			return differ()
		}
		return differences(a.Elem(), b.Elem(), at)
	case reflect.Struct:
		var out []string
		for i := range a.NumField() {
			if !a.Type().Field(i).IsExported() {
				return differ()
			}
		}
		for i := range a.NumField() {
			out = append(out, differences(a.Field(i), b.Field(i), at+"."+a.Type().Field(i).Name)...)
		}
		return out
	case reflect.Slice:
		if a.Len() != b.Len() {
			return differ()
		}
		var out []string
		for i := range a.Len() {
			out = append(out, differences(a.Index(i), b.Index(i), fmt.Sprintf("%s[%d]", at, i))...)
		}
		return out
	case reflect.Map:
		var out []string
		keys := map[string]reflect.Value{}
		for _, k := range slices.Concat(a.MapKeys(), b.MapKeys()) {
			keys[fmt.Sprint(k.Interface())] = k
		}
		for _, name := range slices.Sorted(maps.Keys(keys)) {
			av, bv := a.MapIndex(keys[name]), b.MapIndex(keys[name])
			if !av.IsValid() || !bv.IsValid() {
				out = append(out, fmt.Sprintf("%s[%s] is in one of the chart and the manifests only", strings.TrimPrefix(at, "."), name))
				continue
			}
			out = append(out, differences(av, bv, fmt.Sprintf("%s[%s]", at, name))...)
		}
		return out
	case reflect.Interface:
		if a.IsNil() || b.IsNil() {
			return differ()
		}
		return differences(a.Elem(), b.Elem(), at)
	default:
		return differ()
	}
}

// showValue prints v as its String method does, when it has one: on a copy, as
// resource.Quantity's is on its pointer and a map's values cannot be addressed.
func showValue(v reflect.Value) string {
	p := reflect.New(v.Type())
	p.Elem().Set(v)
	if s, ok := p.Interface().(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%+v", v.Interface())
}
