package deploy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/promql/parser"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsjson "sigs.k8s.io/json"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/internal/testkit/certs"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/server"
)

// The container ports the manifests and the chart name partroute's listeners by: the probes and
// the Services refer to them by these names.
const (
	portExtProc = "extproc"
	portXDS     = "xds"
	portAdmin   = "admin"
)

// The paths partroute's admin listener serves (server/admin.go, docs/operations.md) that the
// probes and the ServiceMonitor use.
const (
	pathLiveness  = "/healthz"
	pathReadiness = "/readyz"
	pathMetrics   = "/metrics"
)

// The keys of the TLS Secret, as a kubernetes.io/tls Secret holds them (with the CA in ca.crt, as
// cert-manager writes it), and what the test puts in each.
const (
	secretCert = "tls.crt"
	secretKey  = "tls.key"
	secretCA   = "ca.crt"
)

// serviceMonitor is the part of the Prometheus Operator's ServiceMonitor (monitoring.coreos.com/v1,
// pkg/apis/monitoring/v1 of github.com/prometheus-operator/prometheus-operator) that partroute's
// manifests use, with the operator's field names and JSON tags. The operator's own types would
// bring controller-runtime and the API extensions server into the module for a test; decoding
// strictly into this subset refuses every field it lacks, so a field added to a ServiceMonitor
// must be added here, as the operator spells it.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port,omitempty"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// bundle is the objects of a set of manifests, decoded into their API types.
type bundle struct {
	deployments     []*appsv1.Deployment
	services        []*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts map[string]*corev1.ServiceAccount
	pdbs            []*policyv1.PodDisruptionBudget
	serviceMonitors []*serviceMonitor
	// names is every object by "Kind/name", for the comparisons of two bundles.
	names map[string]bool
}

func newBundle() *bundle {
	return &bundle{configMaps: map[string]*corev1.ConfigMap{}, serviceAccounts: map[string]*corev1.ServiceAccount{}, names: map[string]bool{}}
}

// named is what every decoded object has.
type named interface{ GetName() string }

// decodeStrict decodes one YAML document into out as the Kubernetes API server reads it: YAML
// to JSON, then JSON with case-sensitive field names, and an unknown or duplicate field is an
// error.
func decodeStrict(doc []byte, out any) error {
	js, err := sigsyaml.YAMLToJSONStrict(doc)
	if err != nil {
		return err
	}
	strictErrs, err := sigsjson.UnmarshalStrict(js, out)
	if err != nil {
		return err
	}
	return errors.Join(strictErrs...)
}

// decodeManifests adds the objects of every YAML document of data (a file of manifests, or the
// output of `helm template`) to b. Each object must be of a kind partroute ships, decode
// strictly into its API type, and have a name no other object of its kind has.
func decodeManifests(t *testing.T, where string, data []byte, b *bundle) {
	t.Helper()
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for i := 1; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatalf("%s: document %d: %v", where, i, err)
		}
		var probe map[string]any
		if err := sigsyaml.Unmarshal(doc, &probe); err != nil {
			t.Errorf("%s: document %d: %v", where, i, err)
			continue
		}
		if probe == nil {
			continue // only comments, or nothing
		}
		var tm metav1.TypeMeta
		if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
			t.Errorf("%s: document %d: %v", where, i, err)
			continue
		}
		at := fmt.Sprintf("%s: document %d (%s %s)", where, i, tm.APIVersion, tm.Kind)
		var obj named
		var add func()
		switch tm.APIVersion + " " + tm.Kind {
		case "v1 ServiceAccount":
			o := &corev1.ServiceAccount{}
			obj, add = o, func() { b.serviceAccounts[o.Name] = o }
		case "v1 ConfigMap":
			o := &corev1.ConfigMap{}
			obj, add = o, func() { b.configMaps[o.Name] = o }
		case "v1 Service":
			o := &corev1.Service{}
			obj, add = o, func() { b.services = append(b.services, o) }
		case "apps/v1 Deployment":
			o := &appsv1.Deployment{}
			obj, add = o, func() { b.deployments = append(b.deployments, o) }
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			obj, add = o, func() { b.pdbs = append(b.pdbs, o) }
		case "monitoring.coreos.com/v1 ServiceMonitor":
			o := &serviceMonitor{}
			obj, add = o, func() { b.serviceMonitors = append(b.serviceMonitors, o) }
		default:
			t.Errorf("%s: partroute ships no object of this kind", at)
			continue
		}
		if err := decodeStrict(doc, obj); err != nil {
			t.Errorf("%s does not decode strictly into %T: %v", at, obj, err)
			continue
		}
		key := tm.Kind + "/" + obj.GetName()
		switch {
		case obj.GetName() == "":
			t.Errorf("%s has no metadata.name", at)
		case b.names[key]:
			t.Errorf("%s: a second %s", at, key)
		}
		b.names[key] = true
		add()
	}
}

// loadManifests decodes every file of deploy/kubernetes.
func loadManifests(t *testing.T) *bundle {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(testkit.RepoRoot(t), "deploy", "kubernetes", "*.yaml"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in deploy/kubernetes: %v", err)
	}
	b := newBundle()
	for _, f := range files {
		decodeManifests(t, filepath.Join("deploy", "kubernetes", filepath.Base(f)), readFile(t, f), b)
	}
	return b
}

// podFile is where a file that partroute's container sees comes from: a key of a ConfigMap or of
// a Secret, with its mode.
type podFile struct {
	kind, name, key string
	mode            int32
}

// defaultVolumeMode is the mode Kubernetes gives the files of a ConfigMap, Secret or projected
// volume that sets none.
const defaultVolumeMode = 0o644

// podFiles returns the files the container sees, by their path in the container, from its
// volume mounts. Only ConfigMap, Secret and projected volumes are expected, with the keys they
// project listed (items), so that every path is known without the objects.
func podFiles(t *testing.T, spec *corev1.PodSpec, c *corev1.Container) map[string]podFile {
	t.Helper()
	volumes := map[string]*corev1.Volume{}
	for i := range spec.Volumes {
		volumes[spec.Volumes[i].Name] = &spec.Volumes[i]
	}
	files := map[string]podFile{}
	add := func(dir, kind, name string, items []corev1.KeyToPath, defaultMode *int32) {
		if len(items) == 0 {
			t.Errorf("%s %s is mounted at %s without items: list the keys it projects", kind, name, dir)
		}
		for _, it := range items {
			mode := int32(defaultVolumeMode)
			if defaultMode != nil {
				mode = *defaultMode
			}
			if it.Mode != nil {
				mode = *it.Mode
			}
			p := path.Join(dir, it.Path)
			if _, dup := files[p]; dup {
				t.Errorf("two volumes project %s", p)
			}
			files[p] = podFile{kind: kind, name: name, key: it.Key, mode: mode}
		}
	}
	for _, m := range c.VolumeMounts {
		v := volumes[m.Name]
		switch {
		case v == nil:
			t.Errorf("volume mount %s names no volume of the pod", m.Name)
			continue
		case !m.ReadOnly:
			t.Errorf("volume mount %s is not readOnly: partroute only reads its files", m.Name)
		case m.SubPath != "":
			t.Errorf("volume mount %s has a subPath: a file mounted by subPath is never updated, so partroute would not see a change", m.Name)
		}
		switch {
		case v.Projected != nil:
			for _, s := range v.Projected.Sources {
				switch {
				case s.ConfigMap != nil:
					add(m.MountPath, "ConfigMap", s.ConfigMap.Name, s.ConfigMap.Items, v.Projected.DefaultMode)
				case s.Secret != nil:
					add(m.MountPath, "Secret", s.Secret.Name, s.Secret.Items, v.Projected.DefaultMode)
				default:
					t.Errorf("volume %s projects something other than a ConfigMap or a Secret", v.Name)
				}
			}
		case v.ConfigMap != nil:
			add(m.MountPath, "ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.DefaultMode)
		case v.Secret != nil:
			add(m.MountPath, "Secret", v.Secret.SecretName, v.Secret.Items, v.Secret.DefaultMode)
		default:
			t.Errorf("volume %s is not a ConfigMap, Secret or projected volume", v.Name)
		}
	}
	return files
}

// serveArgs are the container's arguments as `partroute serve` reads them.
type serveArgs struct {
	config                     string
	drainDelay, shutdownTimout time.Duration
}

// parseServeArgs reads the arguments of the container: `serve`, then flags in either of Go's
// forms (-name value, -name=value, with one dash or two). Flags other than the ones the test
// reads are passed over, with their values; -config is required.
func parseServeArgs(t *testing.T, args []string) serveArgs {
	t.Helper()
	out := serveArgs{drainDelay: server.DefaultDrainDelay, shutdownTimout: server.DefaultShutdownTimeout}
	if len(args) == 0 || args[0] != "serve" {
		t.Fatalf("the container's args %q do not start with the command serve", args)
	}
	duration := func(name, v string) time.Duration {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("the container's -%s %q: %v", name, v, err)
		}
		return d
	}
	for i := 1; i < len(args); i++ {
		name, value, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		if !strings.HasPrefix(args[i], "-") {
			t.Fatalf("the container's args %q: %q is not a flag (serve takes no arguments)", args, args[i])
		}
		if !hasValue {
			if i+1 == len(args) {
				t.Fatalf("the container's args %q: -%s has no value", args, name)
			}
			i++
			value = args[i]
		}
		switch name {
		case "config":
			out.config = value
		case "drain-delay":
			out.drainDelay = duration(name, value)
		case "shutdown-timeout":
			out.shutdownTimout = duration(name, value)
		}
	}
	if out.config == "" {
		t.Fatalf("the container's args %q have no -config", args)
	}
	return out
}

// imageUser is the user the Containerfile runs the image as, by number.
func imageUser(t *testing.T) int64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^USER (\d+):(\d+)$`).FindSubmatch(readFile(t, filepath.Join(testkit.RepoRoot(t), "Containerfile")))
	if m == nil {
		t.Fatal("Containerfile has no USER uid:gid")
	}
	uid, err := strconv.ParseInt(string(m[1]), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return uid
}

// alertsJob is the scrape job the alerts of deploy/prometheus/alerts.yaml select (job="...").
func alertsJob(t *testing.T) string {
	t.Helper()
	jobs := map[string]bool{}
	for _, r := range loadAlerts(t) {
		e, err := parser.NewParser(parser.Options{}).ParseExpr(r.Expr)
		if err != nil {
			t.Fatalf("alert %s: %v", r.Alert, err)
		}
		parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				for _, m := range vs.LabelMatchers {
					if m.Name == "job" {
						jobs[m.Value] = true
					}
				}
			}
			return nil
		})
	}
	if len(jobs) != 1 {
		t.Fatalf("the alerts select the jobs %v, want one", slices.Sorted(maps.Keys(jobs)))
	}
	for j := range jobs {
		return j
	}
	return ""
}

// show prints what p points to, or "unset".
func show[T any](p *T) string {
	if p == nil {
		return "unset"
	}
	return fmt.Sprint(*p)
}

// rendering is what checkRendering found out about one set of manifests, for the checks that
// follow.
type rendering struct {
	deployment *appsv1.Deployment
	container  *corev1.Container
	args       serveArgs
	files      map[string]podFile
	// dir holds the pod's files as the container sees them (under dir, with their paths in the
	// container), the TLS Secret's keys filled with certificates of certs.
	dir   string
	certs *certs.Mutual
	// cfg is the configuration, loaded as `partroute validate` loads it, from dir.
	cfg *config.Config
	// servicesByPort is the Service that reaches each of the container's named ports.
	servicesByPort map[string]*corev1.Service
}

// checkRendering checks that a set of manifests runs partroute as docs/deploy.md says, and that
// the objects agree with each other and with the partroute.yaml they deliver:
//
//   - one Deployment of at least two replicas, rolled one pod at a time with none unavailable,
//     its pods spread over nodes and run as the image's non-root user with a read-only root,
//     no privilege and no capability;
//   - the container runs `partroute serve -config` on the file the volumes put there, and its
//     grace period is longer than the drain (-drain-delay and -shutdown-timeout);
//   - the configuration and naming view load, certificates included, as `partroute validate`
//     loads them, and every file they name is one the volumes put in the container, TLS keys
//     from a Secret only and never world-readable;
//   - the container's ports are the configuration's listeners, on every interface; the probes
//     ask the admin listener's /healthz and /readyz; a Service reaches each listener (a
//     headless one for ext_proc and admin, one with a virtual IP for xDS, none for an xDS
//     listener that is off) on its own port number;
//   - the PodDisruptionBudget keeps a pod and lets one go; the ServiceMonitor scrapes /metrics
//     through the admin Service as the job the alerts select. Whether there is one of each is
//     the caller's to check.
//
// existing are ConfigMaps the manifests use without holding them (the chart's existingConfigMap
// values), as they would be in the cluster.
func checkRendering(t *testing.T, b *bundle, existing ...*corev1.ConfigMap) *rendering {
	t.Helper()
	if len(b.deployments) != 1 {
		t.Fatalf("%d Deployments, want 1", len(b.deployments))
	}
	r := &rendering{deployment: b.deployments[0], servicesByPort: map[string]*corev1.Service{}}
	d := r.deployment
	spec := &d.Spec.Template.Spec
	if len(spec.Containers) != 1 {
		t.Fatalf("Deployment %s has %d containers, want partroute alone", d.Name, len(spec.Containers))
	}
	r.container = &spec.Containers[0]
	c := r.container
	podLabels := labels.Set(d.Spec.Template.Labels)
	selects := func(what string, sel *metav1.LabelSelector) {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		switch {
		case err != nil:
			t.Errorf("%s: selector: %v", what, err)
		case s.Empty() || !s.Matches(podLabels):
			t.Errorf("%s: selector %v does not select the pods (labels %v)", what, s, podLabels)
		}
	}
	selects("Deployment "+d.Name, d.Spec.Selector)

	// Replicas and rollout.
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("Deployment %s: replicas %s, want at least 2: with one, every restart is an outage (Envoy's ext_proc filter fails closed)", d.Name, show(d.Spec.Replicas))
	}
	if s := d.Spec.Strategy; s.Type != appsv1.RollingUpdateDeploymentStrategyType || s.RollingUpdate == nil ||
		s.RollingUpdate.MaxUnavailable == nil || s.RollingUpdate.MaxUnavailable.IntValue() != 0 || s.RollingUpdate.MaxSurge == nil || s.RollingUpdate.MaxSurge.IntValue() < 1 {
		t.Errorf("Deployment %s: strategy %+v, want a RollingUpdate with maxUnavailable 0 and maxSurge 1 or more: a new pod is ready before an old one drains", d.Name, s)
	}
	if d.Spec.MinReadySeconds < 1 {
		t.Errorf("Deployment %s: minReadySeconds %d: give Envoy the time to find a new pod before the next old one drains", d.Name, d.Spec.MinReadySeconds)
	}

	// Spread over nodes.
	aa := spec.Affinity
	spread := false
	if aa != nil && aa.PodAntiAffinity != nil {
		for _, w := range aa.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			if w.PodAffinityTerm.TopologyKey == corev1.LabelHostname {
				selects("the pod anti-affinity", w.PodAffinityTerm.LabelSelector)
				spread = true
			}
		}
	}
	if !spread {
		t.Errorf("Deployment %s: no preferred pod anti-affinity by %s: both pods may land on one node", d.Name, corev1.LabelHostname)
	}

	// Security.
	psc := spec.SecurityContext
	uid := imageUser(t)
	switch {
	case psc == nil:
		t.Errorf("Deployment %s: no pod securityContext", d.Name)
	case psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot:
		t.Errorf("Deployment %s: runAsNonRoot is not true", d.Name)
	case psc.RunAsUser == nil || *psc.RunAsUser != uid:
		t.Errorf("Deployment %s: runAsUser %s, want the image's user %d", d.Name, show(psc.RunAsUser), uid)
	case psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
		t.Errorf("Deployment %s: the pod's seccompProfile is not RuntimeDefault", d.Name)
	}
	sc := c.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("container %s: no securityContext", c.Name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0:
		t.Errorf("container %s: capabilities %+v, want drop [ALL] and nothing added", c.Name, sc.Capabilities)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("Deployment %s: automountServiceAccountToken is not false: partroute never calls the Kubernetes API", d.Name)
	}
	if sa := spec.ServiceAccountName; sa != "" && len(b.serviceAccounts) > 0 && b.serviceAccounts[sa] == nil {
		t.Errorf("Deployment %s: serviceAccountName %s is none of the manifests' ServiceAccounts", d.Name, sa)
	}

	// Resources.
	res := c.Resources
	if res.Requests.Cpu().IsZero() || res.Requests.Memory().IsZero() || res.Limits.Memory().IsZero() {
		t.Errorf("container %s: resources %+v, want requests of cpu and memory and a memory limit", c.Name, res)
	} else if res.Limits.Memory().Cmp(*res.Requests.Memory()) < 0 {
		t.Errorf("container %s: memory limit %v below its request %v", c.Name, res.Limits.Memory(), res.Requests.Memory())
	}

	// The command, and the grace period it needs.
	if len(c.Command) != 0 {
		t.Errorf("container %s: command %q replaces the image's entrypoint /partroute: give args only", c.Name, c.Command)
	}
	r.args = parseServeArgs(t, c.Args)
	drain := r.args.drainDelay + r.args.shutdownTimout
	if g := spec.TerminationGracePeriodSeconds; g == nil || time.Duration(*g)*time.Second <= drain {
		t.Errorf("Deployment %s: terminationGracePeriodSeconds %s is not longer than partroute's drain, -drain-delay %v + -shutdown-timeout %v: the kubelet would kill it draining",
			d.Name, show(g), r.args.drainDelay, r.args.shutdownTimout)
	}

	// The files, and the configuration they make.
	r.files = podFiles(t, spec, c)
	configMaps := maps.Clone(b.configMaps)
	for _, cm := range existing {
		configMaps[cm.Name] = cm
	}
	cfgFile, ok := r.files[r.args.config]
	if !ok || cfgFile.kind != "ConfigMap" {
		t.Fatalf("-config %s is not a file the container's volumes project from a ConfigMap (they project %v)", r.args.config, slices.Sorted(maps.Keys(r.files)))
	}
	r.dir = t.TempDir()
	r.certs = certs.NewMutual(t, t.TempDir())
	secretKeys := map[string][]byte{secretCert: r.certs.Server.CertPEM, secretKey: r.certs.Server.KeyPEM, secretCA: r.certs.CA.PEM}
	for p, f := range r.files {
		var data []byte
		switch f.kind {
		case "ConfigMap":
			cm := configMaps[f.name]
			if cm == nil {
				t.Errorf("%s: ConfigMap %s is not in the manifests", p, f.name)
				continue
			}
			v, ok := cm.Data[f.key]
			if !ok {
				t.Errorf("%s: ConfigMap %s has no key %s", p, f.name, f.key)
				continue
			}
			data = []byte(v)
		case "Secret":
			if data, ok = secretKeys[f.key]; !ok {
				t.Errorf("%s: Secret %s key %s is none of a TLS Secret's keys %v", p, f.name, f.key, slices.Sorted(maps.Keys(secretKeys)))
				continue
			}
			if f.mode&0o004 != 0 {
				t.Errorf("%s: Secret %s key %s has mode %#o: every user of the container can read it", p, f.name, f.key, f.mode)
			}
		}
		local := filepath.Join(r.dir, filepath.FromSlash(p))
		if err := os.MkdirAll(filepath.Dir(local), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(local, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	inPod, err := config.Parse([]byte(configMaps[cfgFile.name].Data[cfgFile.key]), r.args.config)
	if err != nil {
		t.Fatalf("partroute.yaml of ConfigMap %s: %v", cfgFile.name, err)
	}
	localConfig := filepath.Join(r.dir, filepath.FromSlash(r.args.config))
	if r.cfg, err = config.Load(localConfig); err != nil {
		t.Fatal(err)
	}
	if err := server.CheckTLS(localConfig, r.cfg); err != nil {
		t.Errorf("the TLS files of partroute.yaml, from the Secret: %v", err)
	}
	// The files the configuration names are the volumes' files: in the container, resolved as
	// partroute resolves them against -config.
	fileFrom := func(field, p, kind string) {
		t.Helper()
		switch f, ok := r.files[p]; {
		case !ok:
			t.Errorf("partroute.yaml %s is %s, which no volume puts in the container (they put %v)", field, p, slices.Sorted(maps.Keys(r.files)))
		case f.kind != kind:
			t.Errorf("partroute.yaml %s is %s, from %s %s: want it from a %s", field, p, f.kind, f.name, kind)
		}
	}
	if inPod.Naming.Source == config.SourceFile {
		fileFrom("naming.file", inPod.Naming.File, "ConfigMap")
		if _, _, err := resolver.LoadConfigAndView(localConfig, ""); err != nil {
			t.Errorf("the naming view: %v", err)
		}
	}
	for name, l := range map[string]config.ServerTLS{"extproc": inPod.Listen.TLS.ExtProc, "xds": inPod.Listen.TLS.XDS, "admin": inPod.Listen.TLS.Admin} {
		if !l.On() {
			continue
		}
		fileFrom("listen.tls."+name+".cert", l.Cert, "Secret")
		fileFrom("listen.tls."+name+".key", l.Key, "Secret")
		if l.ClientCA != "" {
			fileFrom("listen.tls."+name+".clientCA", l.ClientCA, "Secret")
		}
	}
	if inPod.Listen.TLS.Admin.On() {
		t.Errorf("partroute.yaml serves the admin listener over TLS: the probes and the ServiceMonitor here ask it in plaintext")
	}

	// Ports: the container's are the configuration's listeners, on every interface.
	containerPorts := map[string]int32{}
	for _, p := range c.Ports {
		containerPorts[p.Name] = p.ContainerPort
	}
	listeners := map[string]string{portExtProc: r.cfg.Listen.ExtProc, portXDS: r.cfg.Listen.XDS, portAdmin: r.cfg.Listen.Admin}
	for name, addr := range listeners {
		port, has := containerPorts[name]
		if addr == "" {
			if has {
				t.Errorf("container port %s (%d): partroute.yaml has no such listener", name, port)
			}
			continue
		}
		host, p, err := net.SplitHostPort(addr)
		if err != nil {
			t.Fatal(err)
		}
		if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
			t.Errorf("partroute.yaml listens on %s for %s: in a pod, listen on every interface (0.0.0.0) for Envoy, the kubelet and Prometheus to reach it", addr, name)
		}
		if !has || strconv.Itoa(int(port)) != p {
			t.Errorf("container port %s is %d, want %s, the port partroute.yaml listens on (%s)", name, port, p, addr)
		}
	}
	if len(containerPorts) != len(c.Ports) {
		t.Errorf("container ports %+v: each needs a name of its own", c.Ports)
	}
	portOf := func(p intstr.IntOrString) (string, int32) {
		if p.Type == intstr.String {
			return p.StrVal, containerPorts[p.StrVal]
		}
		for name, n := range containerPorts {
			if n == p.IntVal {
				return name, n
			}
		}
		return "", p.IntVal
	}

	// Probes.
	for _, pr := range []struct {
		what  string
		probe *corev1.Probe
		path  string
	}{{"readiness", c.ReadinessProbe, pathReadiness}, {"liveness", c.LivenessProbe, pathLiveness}, {"startup", c.StartupProbe, pathLiveness}} {
		switch {
		case pr.probe == nil && pr.what == "startup":
		case pr.probe == nil || pr.probe.HTTPGet == nil:
			t.Errorf("container %s: no %s probe with httpGet", c.Name, pr.what)
		case pr.probe.HTTPGet.Path != pr.path:
			t.Errorf("%s probe asks %s, want %s", pr.what, pr.probe.HTTPGet.Path, pr.path)
		case pr.probe.HTTPGet.Scheme != "" && pr.probe.HTTPGet.Scheme != corev1.URISchemeHTTP:
			t.Errorf("%s probe scheme %s: the admin listener is plaintext", pr.what, pr.probe.HTTPGet.Scheme)
		default:
			if name, _ := portOf(pr.probe.HTTPGet.Port); name != portAdmin {
				t.Errorf("%s probe asks port %s, which is not the admin listener's (%s)", pr.what, pr.probe.HTTPGet.Port.String(), r.cfg.Listen.Admin)
			}
		}
	}

	// Services.
	for _, s := range b.services {
		sel := &metav1.LabelSelector{MatchLabels: s.Spec.Selector}
		selects("Service "+s.Name, sel)
		if s.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("Service %s is of type %s, want ClusterIP: partroute is for Envoy in the cluster", s.Name, s.Spec.Type)
		}
		for _, sp := range s.Spec.Ports {
			name, n := portOf(sp.TargetPort)
			if name == "" || n == 0 {
				t.Errorf("Service %s port %s targets %s, none of the container's ports", s.Name, sp.Name, sp.TargetPort.String())
				continue
			}
			if sp.Port != n {
				t.Errorf("Service %s port %s is %d, targeting %d: a headless Service's clients reach the pods' own port, so keep the numbers equal", s.Name, sp.Name, sp.Port, n)
			}
			if other := r.servicesByPort[name]; other != nil {
				t.Errorf("Services %s and %s both reach container port %s", other.Name, s.Name, name)
			}
			r.servicesByPort[name] = s
		}
	}
	for name := range containerPorts {
		s := r.servicesByPort[name]
		if s == nil {
			t.Errorf("no Service reaches container port %s", name)
			continue
		}
		headless := s.Spec.ClusterIP == corev1.ClusterIPNone
		if want := name != portXDS; headless != want {
			t.Errorf("Service %s (port %s): clusterIP %q; want it headless: %v (docs/deploy.md says why)", s.Name, name, s.Spec.ClusterIP, want)
		}
		if len(s.Spec.Ports) != 1 {
			t.Errorf("Service %s has %d ports, want the one of its listener", s.Name, len(s.Spec.Ports))
		}
	}

	// Disruptions.
	if len(b.pdbs) > 1 {
		t.Errorf("%d PodDisruptionBudgets, want one at most", len(b.pdbs))
	}
	for _, pdb := range b.pdbs {
		selects("PodDisruptionBudget "+pdb.Name, pdb.Spec.Selector)
		keep := pdb.Spec.MinAvailable
		if keep == nil || keep.Type != intstr.Int || keep.IntVal < 1 || d.Spec.Replicas == nil || keep.IntVal >= *d.Spec.Replicas {
			t.Errorf("PodDisruptionBudget %s: minAvailable %s, want a number from 1 to replicas-1 (%s): keep one pod, and let a node drain evict another", pdb.Name, keepString(keep), show(d.Spec.Replicas))
		}
	}

	// Monitoring.
	for _, sm := range b.serviceMonitors {
		checkServiceMonitor(t, sm, b.services, r.servicesByPort[portAdmin])
	}
	return r
}

// checkServiceMonitor checks that sm scrapes /metrics through admin, the Service of the admin
// listener, and only through it, as the job the alerts select.
func checkServiceMonitor(t *testing.T, sm *serviceMonitor, services []*corev1.Service, admin *corev1.Service) {
	t.Helper()
	if admin == nil {
		return // reported already
	}
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Errorf("ServiceMonitor %s: selector %v: %v", sm.Name, sel, err)
		return
	}
	for _, s := range services {
		if sel.Matches(labels.Set(s.Labels)) != (s == admin) {
			t.Errorf("ServiceMonitor %s: selector %v matches Service %s: %v, want it to select %s alone", sm.Name, sel, s.Name, s != admin, admin.Name)
		}
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("ServiceMonitor %s has %d endpoints, want 1", sm.Name, len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	if len(admin.Spec.Ports) == 0 || ep.Port != admin.Spec.Ports[0].Name {
		t.Errorf("ServiceMonitor %s scrapes port %q, not the admin Service's", sm.Name, ep.Port)
	}
	if ep.Path != pathMetrics || (ep.Scheme != "" && ep.Scheme != "http") {
		t.Errorf("ServiceMonitor %s scrapes %s://…%s, want http and %s", sm.Name, ep.Scheme, ep.Path, pathMetrics)
	}
	for _, d := range []string{ep.Interval, ep.ScrapeTimeout} {
		if _, err := model.ParseDuration(d); d != "" && err != nil {
			t.Errorf("ServiceMonitor %s: %v", sm.Name, err)
		}
	}
	job := admin.Name // the operator's default
	if sm.Spec.JobLabel != "" {
		job = admin.Labels[sm.Spec.JobLabel]
	}
	if want := alertsJob(t); job != want {
		t.Errorf("ServiceMonitor %s scrapes as job %q (jobLabel %q of Service %s), but the alerts of deploy/prometheus/alerts.yaml select job %q",
			sm.Name, job, sm.Spec.JobLabel, admin.Name, want)
	}
}

func keepString(v *intstr.IntOrString) string {
	if v == nil {
		return "unset"
	}
	return v.String()
}
