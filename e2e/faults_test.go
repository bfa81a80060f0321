package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/partroute/partroute/config"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/resolver/etcdsource"
	"github.com/partroute/partroute/resolver/etcdsource/etcdtest"
	"github.com/partroute/partroute/xds"
)

// The fault suite runs a real Envoy in front of two partroute processes (the binary built for
// the run, so that SIGTERM and SIGKILL are real) that follow one naming view in etcd, under a
// steady load of reads and writes, each request with an id that the replica serving it
// records. Each case breaks something, checks what the clients and the replicas saw, and logs
// its figures on one line of the form
//
//	fault CASE: name=value name=value ...
//
// which docs/reliability.md publishes. Run them with
//
//	go test -race -count=1 -run TestFault -v ./e2e

const (
	// faultRate is the steady load, in requests a second: half reads, half writes, over both
	// partitions.
	faultRate = 100
	// faultLoadLimit bounds each case's load, whatever happens to the case.
	faultLoadLimit = 40 * time.Second
	// faultDrainDelay is each instance's -drain-delay: above Envoy's health check interval
	// (1 s), so that Envoy has moved new streams away before the instance stops taking them.
	faultDrainDelay = 2 * time.Second
	// faultEtcdOutage is how long etcd stays down in the etcd case.
	faultEtcdOutage = 10 * time.Second
	// faultSwitchBound is the most a case allows between killing an instance and the last
	// request that fails because of it. Envoy's health check alone notices within a second;
	// the bound leaves room for a slow machine.
	faultSwitchBound = 3 * time.Second
)

// faultConfig is failoverConfig with reads served by any replica of the partition, so that
// the load exercises both roles.
const faultConfig = failoverConfig + "    replicas: {reads: any}\n"

// faultStack is failoverStack's service, replicas and etcd, with two partroute processes that
// both serve Envoy: its ext_proc and ADS clusters name both.
type faultStack struct {
	*failoverStack
	envoyAdmin string
	instances  []*faultInstance
}

// faultInstance is one partroute process of the suite; it can be stopped and started again on
// the same configuration and ports.
type faultInstance struct {
	t                   *testing.T
	name, cfgPath       string
	extproc, admin, xds string
	// log holds the output of every run of the instance.
	log *testkit.LogBuffer
	run *instanceRun
}

// instanceRun is one process of an instance.
type instanceRun struct {
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // set before exited is closed
}

func startFaultStack(t *testing.T) *faultStack {
	t.Helper()
	// Two instances of three listeners each, Envoy's listener and admin, four replicas.
	ports := testkit.FreePorts(t, 12)
	dir := t.TempDir()
	f := &faultStack{failoverStack: &failoverStack{
		t: t, namingPath: filepath.Join(dir, "naming.yaml"), node: "envoy-faults",
		envoy: ports[6], a: ports[8], b: ports[9], c: ports[10], d: ports[11],
		client: &http.Client{Timeout: 5 * time.Second},
	}, envoyAdmin: ports[7]}

	// The first view is a file loaded once, then written to etcd, which the instances follow.
	f.writeNaming(f.a, f.b, f.c)
	filePath := filepath.Join(dir, "file.yaml")
	write(t, filePath, fmt.Sprintf(faultConfig, ports[0], ports[1], ports[2], "{source: file, file: naming.yaml}"))
	cfg, view, err := resolver.LoadConfigAndView(filePath, "")
	if err != nil {
		t.Fatal(err)
	}
	f.cfg = cfg
	f.etcd = etcdtest.StartTestServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := etcdsource.Write(ctx, f.etcd.Client(), config.DefaultEtcdPrefix, view); err != nil {
		t.Fatal(err)
	}

	// Each replica knows its partition and refuses requests for any other.
	var specs []loadtest.BackendSpec
	for _, r := range []struct{ addr, partition, role string }{
		{f.a, "orders-0", "primary"}, {f.b, "orders-0", "secondary"}, {f.c, "orders-0", "secondary"}, {f.d, "orders-1", "primary"},
	} {
		specs = append(specs, loadtest.BackendSpec{Addr: r.addr, Partition: r.partition, Replica: r.partition + "@" + r.addr, Role: r.role})
	}
	if f.backends, err = loadtest.StartReplicas(specs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(f.backends.Close)

	naming := fmt.Sprintf("{source: etcd, etcd: {endpoints: [%q]}}", f.etcd.Endpoint)
	var extprocs, xdss []string
	for i := range 2 {
		p := &faultInstance{t: t, name: fmt.Sprintf("partroute-%d", i), extproc: ports[3*i], admin: ports[3*i+1], xds: ports[3*i+2], log: &testkit.LogBuffer{}}
		p.cfgPath = filepath.Join(dir, p.name+".yaml")
		write(t, p.cfgPath, fmt.Sprintf(faultConfig, p.extproc, p.admin, p.xds, naming))
		f.instances = append(f.instances, p)
		f.admins = append(f.admins, p.admin)
		extprocs, xdss = append(extprocs, p.extproc), append(xdss, p.xds)
		t.Cleanup(func() {
			p.kill()
			if t.Failed() {
				t.Logf("%s log:\n%s", p.name, p.log.String())
			}
		})
		p.start()
	}
	f.admin = f.admins[0]
	for _, p := range f.instances {
		f.waitInstanceReady(p, false)
	}
	runEnvoy(t, dir, cfg, nil, envoyconfig.Options{
		ListenAddress: f.envoy, AdminAddress: f.envoyAdmin, NodeID: f.node,
		ExtProcAddresses: extprocs, XDSAddresses: xdss,
	}, envoyconfig.ExtProcCluster, "orders")
	testkit.WaitFor(t, "Envoy to acknowledge the first snapshot", 30*time.Second, func() bool {
		_, ok := f.envoyAcked(f.serving(f.admin))
		return ok
	})
	return f
}

// start runs the instance's process.
func (p *faultInstance) start() {
	p.t.Helper()
	cmd := exec.Command(partrouteBin, "serve", "-config", p.cfgPath, "-drain-delay", faultDrainDelay.String(), "-shutdown-timeout", "5s")
	cmd.Stdout, cmd.Stderr = p.log, p.log
	// The process dies with the test binary, whatever ends it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	fmt.Fprintf(p.log, "--- %s: start\n", time.Now().Format(time.RFC3339Nano))
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
	r := &instanceRun{cmd: cmd, exited: make(chan struct{})}
	go func() { r.err = cmd.Wait(); close(r.exited) }()
	p.run = r
}

// stop sends sig to the process and waits until it has exited, returning how it ended.
func (p *faultInstance) stop(sig syscall.Signal) error {
	p.t.Helper()
	p.signal(sig)
	return p.wait()
}

// signal sends sig to the process.
func (p *faultInstance) signal(sig syscall.Signal) {
	p.t.Helper()
	fmt.Fprintf(p.log, "--- %s: %v\n", time.Now().Format(time.RFC3339Nano), sig)
	if err := p.run.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("%s: %v", p.name, err)
	}
}

// wait waits until the process has exited, after a signal, and returns how it ended. It
// fails the test when the process outlives its drain and shutdown by far.
func (p *faultInstance) wait() error {
	p.t.Helper()
	limit := faultDrainDelay + 10*time.Second
	select {
	case <-p.run.exited:
		return p.run.err
	case <-time.After(limit):
		p.t.Fatalf("%s did not exit within %v of its signal", p.name, limit)
		return nil
	}
}

// kill ends the process if it runs; for the test's cleanup.
func (p *faultInstance) kill() {
	if p.run == nil {
		return
	}
	select {
	case <-p.run.exited:
	default:
		_ = p.run.cmd.Process.Kill()
		<-p.run.exited
	}
}

// exited reports whether the current process has ended.
func (p *faultInstance) exited() bool {
	select {
	case <-p.run.exited:
		return true
	default:
		return false
	}
}

// waitInstanceReady waits until the instance answers ready and, with envoyToo, until Envoy's
// health check has found it serving.
func (f *faultStack) waitInstanceReady(p *faultInstance, envoyToo bool) {
	f.t.Helper()
	testkit.WaitFor(f.t, p.name+" to be ready", 15*time.Second, func() bool {
		if p.exited() {
			f.t.Fatalf("%s exited before it was ready: %v\n%s", p.name, p.run.err, p.log.String())
		}
		resp, err := f.client.Get("http://" + p.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK && (!envoyToo || f.hostHealth(p.extproc) == "healthy")
	})
}

// hostHealth returns the health flags Envoy reports for an ext_proc endpoint ("healthy",
// "/failed_active_hc", "/failed_outlier_check", ...), or "" when Envoy does not answer.
func (f *faultStack) hostHealth(extproc string) string {
	resp, err := f.client.Get("http://" + f.envoyAdmin + "/clusters")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	want := envoyconfig.ExtProcCluster + "::" + extproc + "::health_flags::"
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if flags, ok := strings.CutPrefix(sc.Text(), want); ok {
			return flags
		}
	}
	return ""
}

// envoyStat returns one counter of Envoy's /stats, 0 when it has none.
func (f *faultStack) envoyStat(name string) int {
	resp, err := f.client.Get("http://" + f.envoyAdmin + "/stats?filter=^" + name + "$")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	var n int
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+": "); ok {
			if _, err := fmt.Sscan(v, &n); err != nil {
				return 0
			}
		}
	}
	return n
}

// xdsState is an instance's /debug/xds; ok is false when it does not answer.
func (f *faultStack) xdsState(admin string) (serving xds.Versions, acked map[string]xds.Versions, ok bool) {
	return debugXDS(f.client, admin)
}

// envoyAcked reports whether Envoy has acknowledged v from the instance it holds its ADS
// stream with, and which instance that is.
func (f *faultStack) envoyAcked(v xds.Versions) (*faultInstance, bool) {
	for _, p := range f.instances {
		if _, acked, ok := f.xdsState(p.admin); ok && acked[f.node] == v {
			return p, true
		}
	}
	return nil, false
}

// adsHolder returns the instance Envoy holds its ADS stream with, or nil.
func (f *faultStack) adsHolder() *faultInstance {
	for _, p := range f.instances {
		if _, acked, ok := f.xdsState(p.admin); ok {
			if _, held := acked[f.node]; held {
				return p
			}
		}
	}
	return nil
}

// namingStatus is an instance's /debug/naming; ok is false when it does not answer.
func (f *faultStack) namingStatus(admin string) (current, ok bool) {
	resp, err := f.client.Get("http://" + admin + "/debug/naming")
	if err != nil {
		return false, false
	}
	defer resp.Body.Close()
	var st struct{ Current bool }
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return false, false
	}
	return st.Current, true
}

// primaryChange is a failover the test made: writes to partition 0 sent before start went to
// from, writes sent after settled (every instance serves the new view and Envoy has
// acknowledged it) go to to, and writes in between may go to either.
type primaryChange struct {
	from, to       string
	start, settled time.Time
}

// failoverWithCLI moves partition 0's primary to `to` with `partroute naming failover`, as an
// operator would, and returns when the command has written it.
func (f *faultStack) failoverWithCLI(to string) {
	f.t.Helper()
	r := cli(f.t, "naming", "failover", "-config", f.instances[0].cfgPath, "-service", "orders", "-partition", "orders-0", "-to", to)
	if r.code != 0 {
		f.t.Fatalf("partroute naming failover: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}

// changeSpread is when a naming change reached each running instance and Envoy.
type changeSpread struct {
	instances map[string]time.Time
	envoy     time.Time
}

// watchChange follows a naming change from old: it returns a channel that receives, once
// every instance in want serves a snapshot other than old and Envoy has acknowledged it, when
// each did. It gives up at the deadline, with what it saw by then.
func (f *faultStack) watchChange(old xds.Versions, want []*faultInstance, deadline time.Duration) <-chan changeSpread {
	out := make(chan changeSpread, 1)
	go func() {
		spread := changeSpread{instances: map[string]time.Time{}}
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		stop := time.After(deadline)
		for {
			for _, p := range want {
				if _, seen := spread.instances[p.name]; seen {
					continue
				}
				if v, _, ok := f.xdsState(p.admin); ok && v != old {
					spread.instances[p.name] = time.Now()
				}
			}
			if spread.envoy.IsZero() {
				for _, p := range f.instances {
					if v, acked, ok := f.xdsState(p.admin); ok && v != old && acked[f.node] == v {
						spread.envoy = time.Now()
					}
				}
			}
			if len(spread.instances) == len(want) && !spread.envoy.IsZero() {
				out <- spread
				return
			}
			select {
			case <-tick.C:
			case <-stop:
				out <- spread
				return
			}
		}
	}()
	return out
}

// settledAt is when the last of the change's arrivals happened, or the zero time when one
// never did.
func (c changeSpread) settledAt(instances int) time.Time {
	if len(c.instances) < instances || c.envoy.IsZero() {
		return time.Time{}
	}
	last := c.envoy
	for _, at := range c.instances {
		if at.After(last) {
			last = at
		}
	}
	return last
}

// faultRequest is one request of the steady load and what came of it.
type faultRequest struct {
	id         string
	write      bool
	key        int
	sent, done time.Time
	status     int
	err        error
	backend    string
}

func (r *faultRequest) failed() bool { return r.err != nil || r.status != http.StatusOK }

// partition is the partition of the request's key under faultConfig.
func (r *faultRequest) partition() string {
	if r.key < 50 {
		return "orders-0"
	}
	return "orders-1"
}

// steadyLoad sends faultRate requests a second through Envoy, alternating writes (PUT) and
// reads (GET) over keys of both partitions, until stopped or faultLoadLimit.
type steadyLoad struct {
	f        *faultStack
	name     string
	client   *http.Client
	stop     chan struct{}
	stopOnce sync.Once
	finished chan struct{}

	mu   sync.Mutex
	reqs []*faultRequest
}

func (f *faultStack) startLoad(name string) *steadyLoad {
	l := &steadyLoad{
		f: f, name: name, stop: make(chan struct{}), finished: make(chan struct{}),
		client: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}},
	}
	go l.run()
	// A case that stops early stops its load too, before the stack goes away.
	f.t.Cleanup(func() { l.finish() })
	return l
}

func (l *steadyLoad) run() {
	defer close(l.finished)
	var wg sync.WaitGroup
	defer wg.Wait()
	tick := time.NewTicker(time.Second / faultRate)
	defer tick.Stop()
	limit := time.After(faultLoadLimit)
	for i := 0; i < int(faultLoadLimit.Seconds())*faultRate; i++ {
		select {
		case <-l.stop:
			return
		case <-limit:
			return
		case <-tick.C:
		}
		// 37 is prime to 100: consecutive requests walk every key of both partitions.
		r := &faultRequest{id: fmt.Sprintf("%s-%d", l.name, i), write: i%2 == 0, key: (i * 37) % 100}
		l.mu.Lock()
		l.reqs = append(l.reqs, r)
		l.mu.Unlock()
		wg.Go(func() { l.send(r) })
	}
}

func (l *steadyLoad) send(r *faultRequest) {
	method := http.MethodGet
	if r.write {
		method = http.MethodPut
	}
	req, err := http.NewRequest(method, fmt.Sprintf("http://%s/api/orders/%d", l.f.envoy, r.key), http.NoBody)
	if err != nil {
		l.mu.Lock()
		r.err = err
		l.mu.Unlock()
		return
	}
	req.Header.Set(loadtest.RequestIDHeader, r.id)
	sent := time.Now()
	resp, err := l.client.Do(req)
	done := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	r.sent, r.done, r.err = sent, done, err
	if err == nil {
		r.status, r.backend = resp.StatusCode, resp.Header.Get(loadtest.BackendHeader)
		resp.Body.Close()
	}
}

// doneSince returns how many requests sent after t have been answered.
func (l *steadyLoad) doneSince(t time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, r := range l.reqs {
		if !r.done.IsZero() && r.sent.After(t) {
			n++
		}
	}
	return n
}

// waitAnswered waits until n requests sent after now have been answered, so that a case
// ends with load that saw the end state.
func (l *steadyLoad) waitAnswered(n int) {
	l.f.t.Helper()
	from := time.Now()
	testkit.WaitFor(l.f.t, fmt.Sprintf("%d more requests of the load to be answered", n), 30*time.Second, func() bool { return l.doneSince(from) >= n })
}

// finish stops the load, waits for the requests in flight and returns every request.
func (l *steadyLoad) finish() []*faultRequest {
	l.stopOnce.Do(func() { close(l.stop) })
	<-l.finished
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.reqs
}

// routing is what the replicas recorded of a load, judged against who was primary.
type routing struct {
	requests, failed, writesOK int
	// onPrimary are the 2xx writes recorded by the primary of the time they were sent; in a
	// failover's window, by the old or the new primary.
	onPrimary, inWindowOld, inWindowNew int
}

// checkRouting checks every request of a load against what the replicas recorded: each one
// answered 2xx was recorded once, by the replica that answered it, of the partition of its
// key, with the role partroute asks for (primary for writes, any for reads); each write by
// the replica that was primary when it was sent, given the failovers the test made. No
// replica refused a request of another partition.
func (f *faultStack) checkRouting(reqs []*faultRequest, changes ...primaryChange) routing {
	f.t.Helper()
	byID := map[string][]served{}
	for _, b := range f.backends.All() {
		if n := b.Misrouted(); n > 0 {
			f.t.Errorf("replica %s (%s) refused %d requests labelled with another partition", b.Addr, b.Partition, n)
		}
		for id, rec := range b.Requests() {
			byID[id] = append(byID[id], served{b.Addr, rec})
		}
	}
	var rt routing
	problems := 0
	report := func(format string, args ...any) {
		problems++
		if problems <= 10 {
			f.t.Errorf(format, args...)
		}
	}
	for _, r := range reqs {
		rt.requests++
		if r.failed() {
			rt.failed++
			continue
		}
		if r.write {
			rt.writesOK++
		}
		got := byID[r.id]
		if len(got) != 1 || got[0].rec.Times != 1 {
			report("request %s answered %d but was recorded %d times by %d replicas", r.id, r.status, timesServed(got), len(got))
			continue
		}
		s := got[0]
		if s.backend != r.backend {
			report("request %s: answered by %s, recorded by %s", r.id, r.backend, s.backend)
		}
		wantRole := "any"
		if r.write {
			wantRole = "primary"
		}
		if s.rec.Partition != r.partition() || s.rec.Role != wantRole {
			report("request %s for key %d: labelled partition %q role %q, want %q and %q", r.id, r.key, s.rec.Partition, s.rec.Role, r.partition(), wantRole)
		}
		if !r.write {
			continue
		}
		primary, other := f.d, ""
		if r.partition() == "orders-0" {
			primary = f.a
			for _, c := range changes {
				switch {
				case r.sent.Before(c.start):
				case c.settled.IsZero() || r.sent.Before(c.settled):
					primary, other = c.from, c.to
				default:
					primary, other = c.to, ""
				}
			}
		}
		switch {
		case s.backend == primary && other == "":
			rt.onPrimary++
		case s.backend == primary:
			rt.onPrimary++
			rt.inWindowOld++
		case s.backend == other:
			rt.onPrimary++
			rt.inWindowNew++
		default:
			report("write %s sent at %s was recorded by %s; the primary then was %s", r.id, r.sent.Format("15:04:05.000"), s.backend, primary)
		}
	}
	if problems > 10 {
		f.t.Errorf("... and %d more routing problems", problems-10)
	}
	return rt
}

// served is a replica's record of a request.
type served struct {
	backend string
	rec     loadtest.ServedRequest
}

func timesServed(s []served) int {
	n := 0
	for _, x := range s {
		n += x.rec.Times
	}
	return n
}

// failures lists the failed requests, for a failing case's message.
func failures(reqs []*faultRequest) string {
	var out []string
	for _, r := range reqs {
		if r.failed() {
			what := fmt.Sprint(r.status)
			if r.err != nil {
				what = r.err.Error()
			}
			out = append(out, fmt.Sprintf("%s sent %s: %s", r.id, r.sent.Format("15:04:05.000"), what))
		}
	}
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... and %d more", len(out)-20))
	}
	return strings.Join(out, "\n  ")
}

// logFigures prints a case's figures in the suite's format.
func logFigures(t *testing.T, name string, kv ...any) {
	t.Helper()
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		v := kv[i+1]
		if d, ok := v.(time.Duration); ok {
			v = d.Round(time.Millisecond)
		}
		parts = append(parts, fmt.Sprintf("%v=%v", kv[i], v))
	}
	t.Logf("fault %s: %s", name, strings.Join(parts, " "))
}

// TestFaultRollingRestart restarts both instances in turn under load: SIGTERM, wait for the
// exit, start again, wait until Envoy finds it serving, then the other. No request may fail.
func TestFaultRollingRestart(t *testing.T) {
	f := startFaultStack(t)
	load := f.startLoad("rolling")
	load.waitAnswered(faultRate / 2)
	start := time.Now()
	var drains []time.Duration
	for _, p := range f.instances {
		signalled := time.Now()
		if err := p.stop(syscall.SIGTERM); err != nil {
			t.Errorf("%s ended with %v after SIGTERM, want exit 0", p.name, err)
		}
		drains = append(drains, time.Since(signalled))
		p.start()
		f.waitInstanceReady(p, true)
	}
	took := time.Since(start)
	load.waitAnswered(faultRate / 2)
	reqs := load.finish()
	rt := f.checkRouting(reqs)
	logFigures(t, "rolling-restart", "requests", rt.requests, "failed", rt.failed, "writes_ok", rt.writesOK,
		"writes_on_primary", rt.onPrimary, "restart_took", took, "drain_1", drains[0], "drain_2", drains[1])
	if rt.failed != 0 {
		t.Errorf("%d of %d requests failed during the rolling restart:\n  %s", rt.failed, rt.requests, failures(reqs))
	}
}

// TestFaultRollingRestartNamingChange makes a failover while the first instance drains: the
// draining instance, the other, the first once restarted, and Envoy (over whichever ADS
// stream it holds) must all take it, and no request may fail.
func TestFaultRollingRestartNamingChange(t *testing.T) {
	f := startFaultStack(t)
	load := f.startLoad("rolling-naming")
	load.waitAnswered(faultRate / 2)
	old := f.serving(f.admin)
	first, second := f.instances[0], f.instances[1]

	// SIGTERM the first instance, and fail over while it drains.
	first.signal(syscall.SIGTERM)
	testkit.WaitFor(t, first.name+" to start draining", faultDrainDelay, func() bool {
		resp, err := f.client.Get("http://" + first.admin + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	change := primaryChange{from: f.a, to: f.b, start: time.Now()}
	spread := f.watchChange(old, f.instances, 10*time.Second)
	f.failoverWithCLI(f.b)
	// The draining instance still follows the view until it exits.
	testkit.WaitFor(t, first.name+" to serve the new view while it drains", faultDrainDelay, func() bool {
		v, _, ok := f.xdsState(first.admin)
		return ok && v != old
	})
	if err := first.wait(); err != nil {
		t.Errorf("%s ended with %v after SIGTERM, want exit 0", first.name, err)
	}
	first.start()
	f.waitInstanceReady(first, true)
	if err := second.stop(syscall.SIGTERM); err != nil {
		t.Errorf("%s ended with %v after SIGTERM, want exit 0", second.name, err)
	}
	second.start()
	f.waitInstanceReady(second, true)

	sp := <-spread
	change.settled = sp.settledAt(len(f.instances))
	if change.settled.IsZero() {
		t.Fatalf("the failover did not reach every instance and Envoy: %+v", sp)
	}
	// Restarted, every instance serves the view after the failover, as Envoy does.
	newV := f.serving(first.admin)
	for _, p := range f.instances {
		if v := f.serving(p.admin); v != newV || v == old {
			t.Errorf("%s serves %+v after the restart; %s serves %+v, the view before the failover was %+v", p.name, v, first.name, newV, old)
		}
	}
	testkit.WaitFor(t, "Envoy to hold the view after the failover", 10*time.Second, func() bool {
		_, ok := f.envoyAcked(newV)
		return ok
	})
	load.waitAnswered(faultRate / 2)
	reqs := load.finish()
	rt := f.checkRouting(reqs, change)
	logFigures(t, "rolling-restart-naming-change", "requests", rt.requests, "failed", rt.failed, "writes_ok", rt.writesOK,
		"writes_on_primary", rt.onPrimary, "writes_in_window_old", rt.inWindowOld, "writes_in_window_new", rt.inWindowNew,
		"draining_instance_took_it", sp.instances[first.name].Sub(change.start), "other_instance_took_it", sp.instances[second.name].Sub(change.start),
		"envoy_acked", sp.envoy.Sub(change.start))
	if rt.failed != 0 {
		t.Errorf("%d of %d requests failed during the rolling restart:\n  %s", rt.failed, rt.requests, failures(reqs))
	}
	if rt.onPrimary != rt.writesOK {
		t.Errorf("%d of %d successful writes were not recorded by the primary of their time", rt.writesOK-rt.onPrimary, rt.writesOK)
	}
}

// TestFaultKill kills the instance that holds Envoy's ADS stream with SIGKILL under load: at
// most the requests in flight at that moment may fail, Envoy must stop sending to it within
// faultSwitchBound and take its xDS from the other instance, and no request may reach a
// replica of the wrong partition or role.
func TestFaultKill(t *testing.T) {
	f := startFaultStack(t)
	load := f.startLoad("kill")
	load.waitAnswered(faultRate / 2)
	victim := f.adsHolder()
	if victim == nil {
		t.Fatal("Envoy holds no ADS stream with either instance")
	}
	var survivor *faultInstance
	for _, p := range f.instances {
		if p != victim {
			survivor = p
		}
	}
	stat := func(name string) int { return f.envoyStat("cluster." + envoyconfig.ExtProcCluster + "." + name) }
	ejectionsBefore, retriesBefore := stat("outlier_detection.ejections_enforced_total"), stat("upstream_rq_retry")

	killed := time.Now()
	if err := victim.stop(syscall.SIGKILL); err == nil {
		t.Errorf("%s exited cleanly after SIGKILL", victim.name)
	}
	exitedAt := time.Now()
	var flags string
	testkit.WaitFor(t, "Envoy to stop sending to the killed instance", 10*time.Second, func() bool {
		flags = f.hostHealth(victim.extproc)
		return flags != "" && flags != "healthy"
	})
	removed := time.Since(killed)
	testkit.WaitFor(t, "Envoy to take its xDS from "+survivor.name, 10*time.Second, func() bool { return f.adsHolder() == survivor })
	adsMoved := time.Since(killed)
	load.waitAnswered(faultRate)
	reqs := load.finish()
	ejections, retries := stat("outlier_detection.ejections_enforced_total")-ejectionsBefore, stat("upstream_rq_retry")-retriesBefore

	// Requests in flight through Envoy between the signal and the exit bound those the killed
	// instance had in flight.
	inFlight, afterExit := 0, 0
	var lastFailure time.Duration
	for _, r := range reqs {
		if !r.sent.After(exitedAt) && r.done.After(killed) {
			inFlight++
		}
		if r.failed() {
			lastFailure = max(lastFailure, r.done.Sub(killed))
			if r.sent.After(exitedAt) {
				afterExit++
			}
		}
	}
	rt := f.checkRouting(reqs)
	logFigures(t, "sigkill", "requests", rt.requests, "failed", rt.failed, "in_flight_at_kill", inFlight, "failed_sent_after_exit", afterExit,
		"last_failure_after_kill", lastFailure, "envoy_stopped_sending_after", removed, "envoy_flags", flags, "outlier_ejections", ejections, "streams_retried", retries,
		"ads_moved_after", adsMoved, "writes_ok", rt.writesOK, "writes_on_primary", rt.onPrimary)
	if rt.failed > inFlight {
		t.Errorf("%d requests failed, more than the %d in flight when the instance was killed:\n  %s", rt.failed, inFlight, failures(reqs))
	}
	if lastFailure > faultSwitchBound || removed > faultSwitchBound {
		t.Errorf("the last failure came %v after the kill and Envoy marked the instance %s after %v; want both within %v", lastFailure, flags, removed, faultSwitchBound)
	}
	if rt.onPrimary != rt.writesOK {
		t.Errorf("%d of %d successful writes were not recorded by the primary", rt.writesOK-rt.onPrimary, rt.writesOK)
	}
}

// TestFaultEtcdOutage stops etcd for faultEtcdOutage under load: routing goes on from the last
// view, readiness stays ready, /debug/naming and the metrics show the view is not current;
// once etcd is back the watch resumes, and a failover written then reaches both instances and
// Envoy.
func TestFaultEtcdOutage(t *testing.T) {
	f := startFaultStack(t)
	load := f.startLoad("etcd")
	load.waitAnswered(faultRate / 2)

	// Readiness is polled all through the outage and the recovery.
	var (
		readyMu  sync.Mutex
		notReady []string
		stopPoll sync.Once
	)
	pollStop, pollDone := make(chan struct{}), make(chan struct{})
	endPoll := func() {
		stopPoll.Do(func() { close(pollStop) })
		<-pollDone
	}
	t.Cleanup(endPoll)
	go func() {
		defer close(pollDone)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			for _, p := range f.instances {
				resp, err := f.client.Get("http://" + p.admin + "/readyz")
				status := 0
				if err == nil {
					status = resp.StatusCode
					resp.Body.Close()
				}
				if status != http.StatusOK {
					readyMu.Lock()
					notReady = append(notReady, fmt.Sprintf("%s at %s: %d %v", p.name, time.Now().Format("15:04:05.000"), status, err))
					readyMu.Unlock()
				}
			}
			select {
			case <-pollStop:
				return
			case <-tick.C:
			}
		}
	}()

	f.etcd.Stop()
	down := time.Now()
	outage := time.NewTimer(faultEtcdOutage)
	noticed := map[string]time.Duration{}
	testkit.WaitFor(t, "both instances to report their view not current", faultEtcdOutage, func() bool {
		for _, p := range f.instances {
			if _, seen := noticed[p.name]; seen {
				continue
			}
			if current, ok := f.namingStatus(p.admin); ok && !current {
				noticed[p.name] = time.Since(down)
				if m := f.metrics(p.admin); !strings.Contains(m, "\npartroute_naming_source_up 0\n") {
					t.Errorf("%s reports its view not current, but its metrics say\n%s", p.name, grepLines(m, "partroute_naming_"))
				}
			}
		}
		return len(noticed) == len(f.instances)
	})
	<-outage.C
	f.etcd.Start()
	up := time.Now()
	resumed := map[string]time.Duration{}
	testkit.WaitFor(t, "both instances to be in sync with etcd again", 15*time.Second, func() bool {
		for _, p := range f.instances {
			if _, seen := resumed[p.name]; seen {
				continue
			}
			if current, ok := f.namingStatus(p.admin); ok && current {
				resumed[p.name] = time.Since(up)
			}
		}
		return len(resumed) == len(f.instances)
	})
	for _, p := range f.instances {
		if m := f.metrics(p.admin); !strings.Contains(m, "\npartroute_naming_source_up 1\n") {
			t.Errorf("%s is in sync again, but its metrics say\n%s", p.name, grepLines(m, "partroute_naming_"))
		}
	}

	// A failover written now reaches both instances and Envoy.
	old := f.serving(f.admin)
	change := primaryChange{from: f.a, to: f.b, start: time.Now()}
	spread := f.watchChange(old, f.instances, 10*time.Second)
	f.failoverWithCLI(f.b)
	sp := <-spread
	change.settled = sp.settledAt(len(f.instances))
	if change.settled.IsZero() {
		t.Fatalf("the failover after etcd came back did not reach every instance and Envoy: %+v", sp)
	}
	load.waitAnswered(faultRate / 2)
	reqs := load.finish()
	endPoll()

	rt := f.checkRouting(reqs, change)
	// Per instance, in the order of f.instances.
	var noticedList, resumedList []string
	for _, p := range f.instances {
		noticedList = append(noticedList, noticed[p.name].Round(time.Millisecond).String())
		resumedList = append(resumedList, resumed[p.name].Round(time.Millisecond).String())
	}
	var tookIt []string
	for _, p := range f.instances {
		tookIt = append(tookIt, sp.instances[p.name].Sub(change.start).Round(time.Millisecond).String())
	}
	logFigures(t, "etcd-outage", "requests", rt.requests, "failed", rt.failed, "etcd_down_for", up.Sub(down), "not_ready_samples", len(notReady),
		"not_current_after", strings.Join(noticedList, ","), "in_sync_after_restart", strings.Join(resumedList, ","),
		"failover_reached_instances_after", strings.Join(tookIt, ","), "envoy_acked_after", sp.envoy.Sub(change.start),
		"writes_ok", rt.writesOK, "writes_on_primary", rt.onPrimary, "writes_in_window_old", rt.inWindowOld, "writes_in_window_new", rt.inWindowNew)
	if rt.failed != 0 {
		t.Errorf("%d of %d requests failed across the etcd outage:\n  %s", rt.failed, rt.requests, failures(reqs))
	}
	if len(notReady) > 0 {
		t.Errorf("an instance was not ready %d times while etcd was down or returning:\n  %s", len(notReady), strings.Join(notReady[:min(len(notReady), 10)], "\n  "))
	}
	if rt.onPrimary != rt.writesOK {
		t.Errorf("%d of %d successful writes were not recorded by the primary of their time", rt.writesOK-rt.onPrimary, rt.writesOK)
	}
}
