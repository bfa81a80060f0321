package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/partroute/partroute/config"
	"github.com/partroute/partroute/contract"
	envoyconfig "github.com/partroute/partroute/envoy-config"
	"github.com/partroute/partroute/extproc"
	"github.com/partroute/partroute/loadtest"
	"github.com/partroute/partroute/resolver"
	"github.com/partroute/partroute/server"
)

// The servers a load test can run against. partroute and noop are ext_proc servers; nofilter is
// an Envoy without the ext_proc filter, only for the http target.
const (
	serverPartroute = "partroute"
	serverNoop      = "noop"
	serverNoFilter  = "nofilter"
	// serverFloor is the decoding floor (loadtest.FloorProcessor): it decodes each request and
	// answers with pre-encoded bytes of partroute's shape.
	serverFloor = "floor"
)

// loadFlags are the flags of `partroute loadtest` and `partroute loadtest compare`.
type loadFlags struct {
	target      string
	mode        string
	concurrency int
	rate        float64
	rateFrac    float64
	satDuration time.Duration
	satConc     int
	duration    time.Duration
	requests    int64
	warmup      time.Duration
	timeout     time.Duration
	keys        string
	keySpace    uint64
	zipfS       float64
	zipfV       float64
	writes      float64
	seed        uint64
	proto       string
	conns       int
	partitions  int
	replicas    int
	// replicaSettings are more fields of the scenario's replicas block (loadtest.Scenario).
	replicaSettings string
	// readYourWrites is the scenario's read-your-writes window (loadtest.Scenario).
	readYourWrites time.Duration
	// uds serves ext_proc on unix sockets; googleGRPC has Envoy use its Google gRPC client.
	uds, googleGRPC bool
	// floorSpread has the decoding floor answer for every partition in turn.
	floorSpread bool
	// setBy is the scenario's headers.setBy as given, and shape what it names, which options
	// reads.
	setBy      string
	shape      config.SetBy
	servers    string
	out        string
	quiet      bool
	cpuProfile string
	memProfile string
	// run only
	addr   string
	server string
	// compare only
	pairs int
	// aa, when set, is the server of an A/A comparison.
	aa string
	// fortio, when set, is the fortio binary run beside the suite.
	fortio string
}

func (f *loadFlags) register(fs *flag.FlagSet, compare bool) {
	fs.StringVar(&f.target, "target", "extproc", "extproc (speak ext_proc to the server as Envoy does) or http (requests through an Envoy listener)")
	fs.StringVar(&f.mode, "mode", "closed", "closed (workers send back to back: maximum throughput) or open (a constant rate; latency counted from each request's scheduled time)")
	fs.IntVar(&f.concurrency, "c", 64, "workers: concurrent requests (streams) in flight; in the open loop, the most in flight")
	fs.Float64Var(&f.rate, "rate", 0, "open loop: requests per second")
	fs.DurationVar(&f.duration, "d", 10*time.Second, "measured duration of each run, after the warm-up")
	fs.Int64Var(&f.requests, "n", 0, "end each run after this many measured requests (0: the duration alone bounds it)")
	fs.DurationVar(&f.warmup, "warmup", 2*time.Second, "warm-up before each run's measurement")
	fs.DurationVar(&f.timeout, "timeout", 5*time.Second, "timeout of each request")
	fs.StringVar(&f.keys, "keys", "uniform", "key distribution: uniform or zipf")
	fs.Uint64Var(&f.keySpace, "keyspace", 100_000, "number of distinct keys")
	fs.Float64Var(&f.zipfS, "zipf-s", 1.1, "zipf exponent s (> 1)")
	fs.Float64Var(&f.zipfV, "zipf-v", 1, "zipf offset v (>= 1)")
	fs.Float64Var(&f.writes, "writes", 0.2, "share of writes (PUT, to the primary); the rest are reads (GET, to a secondary)")
	fs.Uint64Var(&f.seed, "seed", 1, "seed of the key and read/write draws")
	fs.StringVar(&f.proto, "proto", loadtest.HTTP1, "http target: h1 (HTTP/1.1) or h2c (HTTP/2 cleartext)")
	fs.IntVar(&f.conns, "conns", 1, "extproc target: HTTP/2 connections to the server (Envoy opens one per worker thread)")
	fs.IntVar(&f.partitions, "partitions", loadtest.DefaultScenario().Partitions, "partitions of the load test's service")
	fs.IntVar(&f.replicas, "replicas", loadtest.DefaultScenario().Replicas, "replicas per partition (one primary)")
	fs.BoolVar(&f.uds, "uds", false, "serve ext_proc (partroute and the baselines) on unix domain sockets, which Envoy reaches through pipe addresses")
	fs.BoolVar(&f.googleGRPC, "google-grpc", false, "http target: Envoy calls ext_proc with its Google gRPC client instead of its own")
	fs.DurationVar(&f.readYourWrites, "read-your-writes", 0, "turn read-your-writes on for the scenario's service with this window (writes mint tokens), to measure its cost")
	fs.BoolVar(&f.floorSpread, "floor-spread", false, "the decoding floor answers for each partition of the scenario in turn, a write for the primary and a read for the secondaries, as partroute routes them, instead of every request for the first partition's primary: through Envoy, the difference measures what Envoy's routing over the subsets costs")
	fs.StringVar(&f.setBy, "set-by", config.DefaultSetBy.String(), "headers.setBy of the scenario's configuration, the shape of partroute's answer and of the decoding floor's: extproc, envoy or none; the Envoy configuration follows it")
	fs.StringVar(&f.replicaSettings, "replica-settings", "", `more fields of the service's replicas block, in YAML flow style ("selection: ordered"), to measure a feature`)
	fs.StringVar(&f.servers, "servers", "process", "how servers partroute starts are run: process (each its own process, so its CPU is measured alone) or inprocess")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress lines")
	fs.StringVar(&f.cpuProfile, "cpuprofile", "", "write a CPU profile of this process (servers included with -servers inprocess) to the file")
	fs.StringVar(&f.memProfile, "memprofile", "", "write an allocation profile of this process to the file when the runs end")
	if compare {
		fs.IntVar(&f.pairs, "pairs", 3, "rounds of runs: the target and each baseline once per round, back to back")
		fs.StringVar(&f.fortio, "fortio", "", "http target: after each run of the suite, run this fortio binary against the same Envoy at the same rate, connections and duration, and compare the two generators")
		fs.StringVar(&f.aa, "aa", "", "an A/A comparison: run this server (partroute or noop) against a second instance of itself, to measure what difference is noise")
		fs.Float64Var(&f.rateFrac, "rate-fraction", 0, "open loop: the rate as this fraction of the no-op server's saturation throughput, measured first (closed loop, -saturation-c workers); overrides -rate")
		fs.DurationVar(&f.satDuration, "saturation-d", 5*time.Second, "measured duration of the saturation run that -rate-fraction uses")
		fs.IntVar(&f.satConc, "saturation-c", 64, "workers of the saturation run that -rate-fraction uses")
		fs.StringVar(&f.out, "out", "results", "directory for the JSON, SVG and text reports (empty: text on stdout only)")
	} else {
		fs.StringVar(&f.addr, "addr", "", "address of a server already running (extproc: partroute's gRPC listener; http: Envoy's listener); empty starts -server")
		fs.StringVar(&f.server, "server", serverPartroute, "server to start when -addr is empty: partroute or noop (and nofilter for http: Envoy without ext_proc)")
		fs.StringVar(&f.out, "out", "", "directory for the JSON, SVG and text reports (empty: text on stdout only)")
	}
}

// options turns the flags into a run's options.
func (f *loadFlags) options(stderr io.Writer) (loadtest.Options, error) {
	o := loadtest.Options{
		Mode:          loadtest.Mode(f.mode),
		Concurrency:   f.concurrency,
		Rate:          f.rate,
		Duration:      f.duration,
		Requests:      f.requests,
		Warmup:        f.warmup,
		Timeout:       f.timeout,
		Keys:          loadtest.KeyOptions{Distribution: loadtest.Distribution(f.keys), Space: f.keySpace, ZipfS: f.zipfS, ZipfV: f.zipfV},
		WriteFraction: f.writes,
		Seed:          f.seed,
	}
	if !f.quiet {
		o.Progress = stderr
	}
	if f.target != "extproc" && f.target != "http" {
		return o, fmt.Errorf("-target %q is not extproc or http", f.target)
	}
	shape, err := config.ParseSetBy(f.setBy)
	if err != nil {
		return o, fmt.Errorf("-set-by: %w", err)
	}
	f.shape = shape
	if o.Mode == loadtest.Open && f.rateFrac > 0 {
		// The rate is set once the saturation run has measured it; Check needs one meanwhile.
		o.Rate = 1
	}
	if err := o.Check(); err != nil {
		return o, err
	}
	if f.servers != "process" && f.servers != "inprocess" {
		return o, fmt.Errorf("-servers %q is not process or inprocess", f.servers)
	}
	return o, nil
}

func (f *loadFlags) scenario() loadtest.Scenario {
	return loadtest.Scenario{Partitions: f.partitions, Replicas: f.replicas, ReplicaSettings: f.replicaSettings, ReadYourWrites: f.readYourWrites, SetBy: f.shape}
}

// runLoadtest is `partroute loadtest [run|compare|noop] [flags]`.
func runLoadtest(args []string, stdout, stderr io.Writer) int {
	sub := "run"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	var err error
	switch sub {
	case "run":
		err = loadtestRun(ctx, args, stdout, stderr)
	case "compare":
		err = loadtestCompare(ctx, args, stdout, stderr)
	case "noop":
		err = loadtestNoop(ctx, args, stdout, stderr)
	case "report":
		err = loadtestReport(args, stdout, stderr)
	default:
		fmt.Fprintf(stderr, "partroute loadtest: unknown subcommand %q (run, compare, noop or report)\n", sub)
		return 1
	}
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		var reported reportedError
		if !errors.As(err, &reported) {
			fmt.Fprintln(stderr, "partroute loadtest:", err)
		}
		return 1
	}
	return 0
}

// reportedError is an error, from flag parsing, that has already been printed.
type reportedError struct{ error }

// parseStopped is the error of a command line that parsing has already answered: flag.ErrHelp
// after help (exit code 0), a reportedError after a usage error.
func parseStopped(code int) error {
	if code == 0 {
		return flag.ErrHelp
	}
	return reportedError{errors.New("usage error")}
}

// loadtestSynopses are the command lines of the loadtest subcommands that take the load flags.
var loadtestSynopses = map[string]string{
	"run":     "partroute loadtest [run] [flags]",
	"compare": "partroute loadtest compare [flags]",
}

func parseLoadFlags(name string, args []string, compare bool, stdout, stderr io.Writer) (*loadFlags, loadtest.Options, error) {
	fs := newCmdFlags("loadtest "+name, loadtestSynopses[name])
	f := &loadFlags{}
	f.register(fs.FlagSet, compare)
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return nil, loadtest.Options{}, parseStopped(code)
	}
	o, err := f.options(stderr)
	return f, o, err
}

// loadtestRun makes one run against a server, started here unless -addr names one.
func loadtestRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, o, err := parseLoadFlags("run", args, false, stdout, stderr)
	if err != nil {
		return err
	}
	if o.Mode == loadtest.Open && f.rate <= 0 {
		return errors.New("-mode open needs -rate")
	}
	var arm loadtest.Arm
	if f.addr != "" {
		arm, err = externalArm(f)
		if err != nil {
			return err
		}
	} else {
		st, err := startLoadStack(ctx, f, []string{f.server}, stderr)
		if err != nil {
			return err
		}
		defer st.close()
		arm = st.arms[0]
	}
	o.Name = arm.Name
	stopProfiles, err := startProfiles(f)
	if err != nil {
		return err
	}
	res, err := loadtest.RunArm(ctx, arm, o)
	if perr := stopProfiles(); err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	rep := newReport(fmt.Sprintf("partroute loadtest: %s %s, %s", f.target, arm.Name, describeLoad(f, o)), []*loadtest.Result{res}, nil)
	return writeReports(rep, f.out, "run-"+f.target+"-"+f.mode, stdout)
}

// startProfiles starts the CPU profile the flags ask for; the returned function stops it and
// writes the allocation profile.
func startProfiles(f *loadFlags) (stop func() error, err error) {
	var cpu *os.File
	if f.cpuProfile != "" {
		if cpu, err = os.Create(f.cpuProfile); err != nil {
			return nil, err
		}
		if err := pprof.StartCPUProfile(cpu); err != nil {
			cpu.Close()
			return nil, err
		}
	}
	return func() error {
		if cpu != nil {
			pprof.StopCPUProfile()
			if err := cpu.Close(); err != nil {
				return err
			}
		}
		if f.memProfile == "" {
			return nil
		}
		mem, err := os.Create(f.memProfile) //nolint:gosec // the operator names the profile's path
		if err != nil {
			return err
		}
		if err := pprof.Lookup("allocs").WriteTo(mem, 0); err != nil {
			mem.Close()
			return err
		}
		return mem.Close()
	}, nil
}

// externalArm targets a server someone else runs.
func externalArm(f *loadFlags) (loadtest.Arm, error) {
	name := "server at " + f.addr
	if f.target == "http" {
		t, err := loadtest.NewHTTPTarget(f.addr, f.proto, f.concurrency)
		return loadtest.Arm{Name: name, Target: t}, err
	}
	t, err := loadtest.DialExtProc(f.addr, f.conns)
	if err == nil {
		t.SetBy = f.shape
	}
	return loadtest.Arm{Name: name, Target: t}, err
}

// loadtestCompare runs partroute and its baselines alternately and reports their ratios.
func loadtestCompare(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f, o, err := parseLoadFlags("compare", args, true, stdout, stderr)
	if err != nil {
		return err
	}
	if o.Mode == loadtest.Open && f.rate <= 0 && f.rateFrac <= 0 {
		return errors.New("-mode open needs -rate or -rate-fraction")
	}
	servers := []string{serverPartroute, serverNoop}
	switch {
	case f.aa != "":
		if f.aa != serverPartroute && f.aa != serverNoop && f.aa != serverFloor {
			return fmt.Errorf("-aa %q: an A/A comparison runs partroute, noop or floor", f.aa)
		}
		servers = []string{f.aa, f.aa}
	case f.target == "http":
		servers = append(servers, serverNoFilter, serverFloor)
	default:
		servers = append(servers, serverFloor)
	}
	st, err := startLoadStack(ctx, f, servers, stderr)
	if err != nil {
		return err
	}
	defer st.close()

	var runs []*loadtest.Result
	if o.Mode == loadtest.Open && f.rateFrac > 0 {
		// Saturation of the no-op baseline: the most the machine can do with no routing work at
		// all. A fraction of it is a load every arm can carry, so the comparison is of latency
		// at the same rate rather than of who saturates first.
		so := o
		so.Mode, so.Concurrency, so.Duration, so.Requests, so.Name = loadtest.Closed, f.satConc, f.satDuration, 0, serverNoop+" saturation"
		sat, err := loadtest.RunArm(ctx, st.arms[1], so)
		if err != nil {
			return err
		}
		sat.Target = serverNoop + " saturation"
		runs = append(runs, sat)
		o.Rate = f.rateFrac * sat.Throughput
		fmt.Fprintf(stderr, "no-op saturation %.0f req/s; open loop at %.0f%%: %.0f req/s\n", sat.Throughput, 100*f.rateFrac, o.Rate)
	}
	stopProfiles, err := startProfiles(f)
	if err != nil {
		return err
	}
	var byArm [][]*loadtest.Result
	var fortio [][]*loadtest.Result
	if f.fortio != "" {
		byArm, fortio, err = alternateWithFortio(ctx, f, o, st)
	} else {
		byArm, err = loadtest.Alternate(ctx, st.arms, f.pairs, o)
	}
	if perr := stopProfiles(); err == nil {
		err = perr
	}
	if err != nil {
		return err
	}
	for k := 0; k < f.pairs; k++ {
		for i := range byArm {
			runs = append(runs, byArm[i][k])
		}
	}
	title := fmt.Sprintf("partroute loadtest compare: %s, %s, %d pairs", f.target, describeLoad(f, o), f.pairs)
	cs := comparisons(f, o, servers, byArm)
	name := "compare-" + f.target + "-" + f.mode
	if f.aa != "" {
		title = fmt.Sprintf("partroute loadtest compare -aa %s: %s, %s, %d pairs", f.aa, f.target, describeLoad(f, o), f.pairs)
		cs = aaComparisons(byArm)
		name = "compare-aa-" + f.aa + "-" + f.target + "-" + f.mode
	}
	if fortio != nil {
		cs = append(cs, fortioComparisons(servers, byArm, fortio)...)
	}
	rep := newReport(title, runs, cs)
	if f.target == "http" {
		name += "-" + f.proto
	}
	return writeReports(rep, f.out, name, stdout)
}

// comparisons are the ratios the published limits are about: partroute over the no-op server
// and over the decoding floor, and, through Envoy, the no-op server over Envoy without the
// filter (the ext_proc hop itself, which has no limit: it is measured and published). servers
// names the arms of byArm, in order.
func comparisons(f *loadFlags, o loadtest.Options, servers []string, byArm [][]*loadtest.Result) []loadtest.Comparison {
	arm := func(name string) []*loadtest.Result {
		if i := slices.Index(servers, name); i >= 0 {
			return byArm[i]
		}
		return nil
	}
	pr, noop, nf, floor := arm(serverPartroute), arm(serverNoop), arm(serverNoFilter), arm(serverFloor)
	var cs []loadtest.Comparison
	switch {
	case f.target == "extproc" && o.Mode == loadtest.Closed:
		cs = append(cs, loadtest.Compare(pr, noop, loadtest.Throughput, 0.90), loadtest.Compare(pr, noop, loadtest.P99, 0))
	case f.target == "extproc":
		cs = append(cs, loadtest.Compare(pr, noop, loadtest.P99, 1.25), loadtest.Compare(pr, noop, loadtest.P50, 0))
	default:
		if o.Mode == loadtest.Closed {
			cs = append(cs, loadtest.Compare(pr, noop, loadtest.Throughput, 0))
		}
		cs = append(cs, loadtest.Compare(pr, noop, loadtest.P50, 1.05), loadtest.Compare(pr, noop, loadtest.P99, 1.10))
		if nf != nil {
			if o.Mode == loadtest.Closed {
				cs = append(cs, loadtest.Compare(noop, nf, loadtest.Throughput, 0))
			}
			cs = append(cs, loadtest.Compare(noop, nf, loadtest.P50, 0), loadtest.Compare(noop, nf, loadtest.P99, 0))
		}
	}
	if floor != nil {
		cs = append(cs, loadtest.Compare(pr, floor, loadtest.P50, 0), loadtest.Compare(pr, floor, loadtest.P99, 0))
	}
	cpu := func(target, baseline []*loadtest.Result, m loadtest.Metric, limit float64) {
		if target != nil && baseline != nil && m.Value(target[0]) > 0 && m.Value(baseline[0]) > 0 {
			cs = append(cs, loadtest.Compare(target, baseline, m, limit))
		}
	}
	cpu(pr, noop, loadtest.ServerCPU, 0)
	cpu(pr, floor, loadtest.ServerCPU, 1.05)
	cpu(pr, noop, loadtest.EnvoyCPU, 0)
	cpu(noop, nf, loadtest.EnvoyCPU, 0)
	cpu(floor, noop, loadtest.EnvoyCPU, 0)
	return cs
}

// alternateWithFortio runs the arms as loadtest.Alternate does, and after each run of the
// suite a run of fortio against the same Envoy listener, at the same rate (or as fast as it
// goes in a closed loop), connections and duration. fortio's runs are returned as results of
// their own, named "fortio " and the arm's name, holding fortio's throughput and percentiles.
func alternateWithFortio(ctx context.Context, f *loadFlags, o loadtest.Options, st *loadStack) (suite, fortio [][]*loadtest.Result, err error) {
	if f.target != "http" {
		return nil, nil, errors.New("-fortio runs against Envoy: it needs -target http")
	}
	run := loadtest.FortioRun{Bin: f.fortio, Rate: o.Rate, Connections: o.Concurrency, Duration: o.Duration, H2: f.proto == loadtest.H2C}
	if o.Mode == loadtest.Closed {
		run.Rate = 0
	}
	suite = make([][]*loadtest.Result, len(st.arms))
	fortio = make([][]*loadtest.Result, len(st.arms))
	for k := range f.pairs {
		for i, arm := range st.arms {
			ro := o
			ro.Name = fmt.Sprintf("%s #%d", arm.Name, k+1)
			res, err := loadtest.RunArm(ctx, arm, ro)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", ro.Name, err)
			}
			suite[i] = append(suite[i], res)
			out := filepath.Join(st.work, fmt.Sprintf("fortio-%d-%d.json", i, k))
			cmd := exec.CommandContext(ctx, run.Bin, run.Args(st.listens[i], out)...) //nolint:gosec // the fortio binary the operator named with -fortio, on arguments built here
			if msg, err := cmd.CombinedOutput(); err != nil {
				return nil, nil, fmt.Errorf("fortio against %s: %w\n%s", arm.Name, err, msg)
			}
			file, err := os.Open(out) //nolint:gosec // a file of the run's own work directory
			if err != nil {
				return nil, nil, err
			}
			fr, err := loadtest.ReadFortio(file)
			file.Close()
			if err != nil {
				return nil, nil, err
			}
			fortio[i] = append(fortio[i], fortioAsResult(fr, "fortio "+arm.Name, k))
		}
	}
	return suite, fortio, nil
}

// fortioAsResult is a fortio run as a result of the suite: its throughput, requests and
// percentiles, enough to compare.
func fortioAsResult(fr loadtest.FortioResult, target string, round int) *loadtest.Result {
	r := &loadtest.Result{Name: fmt.Sprintf("%s #%d", target, round+1), Target: target, Throughput: fr.ActualQPS,
		Concurrency: fr.NumThreads, Requests: fr.DurationHistogram.Count, Seconds: float64(fr.ActualDuration) / 1e9}
	for code, n := range fr.RetCodes {
		if code != 200 {
			r.Errors += n
		}
	}
	r.Latency.P50, _ = fr.DurationHistogram.Percentile(50)
	r.Latency.P90, _ = fr.DurationHistogram.Percentile(90)
	r.Latency.P99, _ = fr.DurationHistogram.Percentile(99)
	r.Latency.P999, _ = fr.DurationHistogram.Percentile(99.9)
	r.Latency.Min = int64(fr.DurationHistogram.Min * 1e9)
	r.Latency.Max = int64(fr.DurationHistogram.Max * 1e9)
	return r
}

// fortioComparisons say whether fortio and the suite agree: fortio's latency over the suite's
// for each arm, and partroute over the no-op server as fortio measures it.
func fortioComparisons(servers []string, suite, fortio [][]*loadtest.Result) []loadtest.Comparison {
	var cs []loadtest.Comparison
	for i := range suite {
		cs = append(cs, loadtest.Compare(fortio[i], suite[i], loadtest.P50, 0), loadtest.Compare(fortio[i], suite[i], loadtest.P99, 0))
	}
	pr, noop := slices.Index(servers, serverPartroute), slices.Index(servers, serverNoop)
	if pr >= 0 && noop >= 0 {
		cs = append(cs, loadtest.Compare(fortio[pr], fortio[noop], loadtest.P50, 0), loadtest.Compare(fortio[pr], fortio[noop], loadtest.P99, 0))
	}
	return cs
}

// aaComparisons are the ratios of an A/A comparison, the same server in both arms, for every
// metric the published comparisons use: their spread is what a difference between two
// servers must exceed to mean anything. None has a limit.
func aaComparisons(byArm [][]*loadtest.Result) []loadtest.Comparison {
	a, b := byArm[0], byArm[1]
	cs := []loadtest.Comparison{loadtest.Compare(a, b, loadtest.Throughput, 0), loadtest.Compare(a, b, loadtest.P50, 0), loadtest.Compare(a, b, loadtest.P99, 0)}
	if a[0].ServerCPUPerRequest > 0 && b[0].ServerCPUPerRequest > 0 {
		cs = append(cs, loadtest.Compare(a, b, loadtest.ServerCPU, 0))
	}
	if a[0].EnvoyCPUPerRequest > 0 && b[0].EnvoyCPUPerRequest > 0 {
		cs = append(cs, loadtest.Compare(a, b, loadtest.EnvoyCPU, 0))
	}
	return cs
}

func describeLoad(f *loadFlags, o loadtest.Options) string {
	load := fmt.Sprintf("closed loop c=%d", o.Concurrency)
	if o.Mode == loadtest.Open {
		load = fmt.Sprintf("open loop %.0f req/s (c<=%d)", o.Rate, o.Concurrency)
	}
	if f.target == "http" {
		load += " " + f.proto
	}
	floor := ""
	if f.floorSpread {
		floor = ", floor spread over the partitions"
	}
	return fmt.Sprintf("%s, %s keys over %d, %.0f%% writes, headers set by %s%s, %v + %v warm-up", load, f.keys, f.keySpace, 100*f.writes, f.shape.OrDefault(), floor, f.duration, f.warmup)
}

func newReport(title string, runs []*loadtest.Result, cs []loadtest.Comparison) *loadtest.Report {
	return &loadtest.Report{
		Title:       title,
		Command:     "partroute loadtest " + strings.Join(os.Args[min(2, len(os.Args)):], " "),
		Started:     time.Now().UTC(),
		Machine:     loadtest.DescribeMachine(),
		Runs:        runs,
		Comparisons: cs,
	}
}

// writeReports prints the table on stdout and, with a directory, writes NAME.txt, NAME.json and
// NAME.svg into it.
func writeReports(rep *loadtest.Report, dir, name string, stdout io.Writer) error {
	if err := loadtest.WriteText(stdout, rep); err != nil {
		return err
	}
	if dir == "" {
		return nil
	}
	// Reports are for people to read and share: the folder is world-readable, like `make`'s.
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // see above
		return err
	}
	for ext, write := range map[string]func(io.Writer, *loadtest.Report) error{
		".txt": loadtest.WriteText, ".json": loadtest.WriteJSON, ".svg": loadtest.WriteSVG,
	} {
		path := filepath.Join(dir, name+ext)
		file, err := os.Create(path)
		if err != nil {
			return err
		}
		if err := write(file, rep); err != nil {
			file.Close()
			return err
		}
		if err := file.Close(); err != nil {
			return err
		}
	}
	// Each run is also written in fortio's JSON, one file a run, for the tools that read it.
	fortioDir := filepath.Join(dir, name+"-fortio")
	if err := os.MkdirAll(fortioDir, 0o755); err != nil { //nolint:gosec // world-readable, as above
		return err
	}
	for _, res := range rep.Runs {
		if res.Histogram() == nil {
			continue // a run read back from JSON, or fortio's own
		}
		file, err := os.Create(filepath.Join(fortioDir, fileLabel(strings.NewReplacer(" ", "", "#", "-", "+", "-").Replace(res.Name))+".json"))
		if err != nil {
			return err
		}
		if err := loadtest.WriteFortio(file, loadtest.FortioOf(res, version)); err != nil {
			file.Close()
			return err
		}
		if err := file.Close(); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "reports: %s.{txt,json,svg}, each run in fortio's JSON in %s\n", filepath.Join(dir, name), fortioDir)
	return nil
}

// loadtestReport reads JSON reports and writes them again as one: the table on stdout and, with
// -out, the text, JSON and SVG files. It redraws a report, or puts runs of several invocations
// on one chart.
func loadtestReport(args []string, stdout, stderr io.Writer) error {
	fs := newCmdFlags("loadtest report", "partroute loadtest report [-out DIR] [-name NAME] [-title TITLE] REPORT.json [REPORT.json ...]").
		positional("REPORT.json files", 1, -1)
	out := fs.String("out", "", "directory for the merged report's text, JSON and SVG (empty: the table on stdout only)")
	name := fs.String("name", "report", "file name of the merged report, without extension")
	title := fs.String("title", "", "title of the merged report (default: the first report's)")
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return parseStopped(code)
	}
	var merged *loadtest.Report
	for _, path := range fs.Args() {
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		rep, err := loadtest.ReadJSON(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if merged == nil {
			merged = rep
			continue
		}
		merged.Runs = append(merged.Runs, rep.Runs...)
		merged.Comparisons = append(merged.Comparisons, rep.Comparisons...)
	}
	if *title != "" {
		merged.Title = *title
	}
	return writeReports(merged, *out, *name, stdout)
}

// loadtestNoop serves the no-op ext_proc server until interrupted: the baseline in a process of
// its own, with partroute's gRPC server options and runtime settings, so that the comparison
// differs in the handler alone.
func loadtestNoop(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newCmdFlags("loadtest noop", "partroute loadtest noop [-listen ADDR] [-floor-partition ID]... [-set-by SHAPE] [-stream-workers N] [-gogc N] [-gc-headroom SIZE] [-memory-limit SIZE]")
	listen := fs.String("listen", "127.0.0.1:50061", "address to serve ext_proc on (loopback)")
	workers := fs.Int("stream-workers", server.DefaultStreamWorkers, "goroutines that serve streams, as partroute serve's")
	var floor []string
	fs.Func("floor-partition", "answer request headers as the decoding floor does: partroute's answer for a write to this partition, encoded once (none: the empty answer of the no-op server); given more than once, the floor answers for each in turn, a read for the secondaries", func(v string) error {
		if v == "" {
			return errors.New("the partition id is empty")
		}
		floor = append(floor, v)
		return nil
	})
	setBy := fs.String("set-by", config.DefaultSetBy.String(), "with -floor-partition, the headers.setBy whose shape the floor answers in: extproc, envoy or none")
	var tune gcFlags
	tune.register(fs.FlagSet)
	if code, ok := fs.parse(args, stdout, stderr); !ok {
		return parseStopped(code)
	}
	shape, err := config.ParseSetBy(*setBy)
	if err != nil {
		return fmt.Errorf("-set-by: %w", err)
	}
	if err := tune.tuning().Apply(ctx); err != nil {
		return err
	}
	srv, err := startBaseline(*listen, floor, shape, *workers)
	if err != nil {
		return err
	}
	fmt.Fprintln(stderr, "baseline ext_proc server on", srv.Addr)
	select {
	case <-ctx.Done():
		srv.Close()
		return nil
	case err := <-srv.Done():
		return err
	}
}

// loadStack is everything a load test started: servers, backends and Envoys, and the arm that
// targets each server.
type loadStack struct {
	f      *loadFlags
	work   string
	status io.Writer
	arms   []loadtest.Arm
	// listens are the Envoy listeners of the arms, for the http target.
	listens []string
	closers []func()
}

func (s *loadStack) onClose(fn func()) { s.closers = append(s.closers, fn) }

func (s *loadStack) close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
	s.closers = nil
}

// startLoadStack starts the named servers, in order, and the arm of each. For the http target
// it also starts the replicas' backends and an Envoy per server.
func startLoadStack(ctx context.Context, f *loadFlags, servers []string, status io.Writer) (st *loadStack, err error) {
	work, err := os.MkdirTemp("", "partroute-loadtest-")
	if err != nil {
		return nil, err
	}
	st = &loadStack{f: f, work: work, status: status}
	st.onClose(func() { os.RemoveAll(work) })
	// A failure returns a nil stack: what was started is closed through a copy of the pointer.
	started := st
	defer func() {
		if err != nil {
			started.close()
		}
	}()
	sc := st.f.scenario()
	if err := sc.Check(); err != nil {
		return nil, err
	}
	replicas := loadtest.FakeReplicaAddrs(sc.ReplicaCount())
	if f.target == "http" {
		if replicas, err = loadtest.ReservePorts(sc.ReplicaCount()); err != nil {
			return nil, err
		}
		backends, err := loadtest.StartBackends(replicas)
		if err != nil {
			return nil, err
		}
		st.onClose(backends.Close)
	}
	// Each server is known by its label, its name unless the same server runs twice (an A/A
	// comparison), where the instances are name/A and name/B.
	labels := armLabels(servers)
	extprocAddrs := make([]string, len(servers))
	cpu := make([]func() (time.Duration, error), len(servers))
	anyExtProc := ""
	for i, name := range servers {
		if name == serverNoFilter {
			continue
		}
		addr, cpuOf, err := st.startExtProc(ctx, name, labels[i], replicas)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", labels[i], err)
		}
		extprocAddrs[i], cpu[i], anyExtProc = addr, cpuOf, addr
	}
	if f.target == "extproc" {
		for i, name := range servers {
			if extprocAddrs[i] == "" {
				return nil, fmt.Errorf("server %q has no ext_proc target", name)
			}
			t, err := loadtest.DialExtProc(extprocAddrs[i], f.conns)
			if err != nil {
				return nil, err
			}
			t.ExpectRouted = name == serverPartroute || name == serverFloor
			t.SetBy = f.shape
			st.onClose(func() { t.Close() })
			st.arms = append(st.arms, loadtest.Arm{Name: labels[i], Target: t, ServerCPU: cpu[i]})
		}
		return st, nil
	}
	for i, name := range servers {
		ep := extprocAddrs[i]
		if name == serverNoFilter {
			// The filter is left out, but the bootstrap still holds partroute's ext_proc cluster,
			// whose health check needs a server to answer: any of the ones running.
			ep = anyExtProc
		}
		listen, envoyCPU, err := st.startEnvoy(ctx, name, labels[i], ep, replicas)
		if err != nil {
			return nil, fmt.Errorf("envoy for %s: %w", labels[i], err)
		}
		t, err := loadtest.NewHTTPTarget(listen, f.proto, f.concurrency)
		if err != nil {
			return nil, err
		}
		st.onClose(func() { t.Close() })
		st.arms = append(st.arms, loadtest.Arm{Name: "envoy+" + labels[i], Target: t, ServerCPU: cpu[i], EnvoyCPU: envoyCPU})
		st.listens = append(st.listens, listen)
	}
	return st, nil
}

// armLabels names each server of a stack: by its name, and a server that runs more than once
// by its name and a letter per instance (noop/A, noop/B).
func armLabels(servers []string) []string {
	count := map[string]int{}
	for _, s := range servers {
		count[s]++
	}
	seen := map[string]int{}
	labels := make([]string, len(servers))
	for i, s := range servers {
		labels[i] = s
		if count[s] > 1 {
			labels[i] = s + "/" + string(byte('A'+seen[s]%26))
			seen[s]++
		}
	}
	return labels
}

// startExtProc starts partroute or the no-op server on a free loopback port, in its own process
// or in this one, and waits until it serves.
func (s *loadStack) startExtProc(ctx context.Context, name, label string, replicas []string) (string, func() (time.Duration, error), error) {
	ports, err := loadtest.ReservePorts(2)
	if err != nil {
		return "", nil, err
	}
	addr, admin := ports[0], ports[1]
	if s.f.uds {
		addr = config.UnixSocketPrefix + filepath.Join(s.work, fileLabel(label)+".sock")
	}
	switch name {
	case serverPartroute:
		dir := filepath.Join(s.work, fileLabel(label))
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return "", nil, err
		}
		cfgPath, err := s.f.scenario().WriteFiles(dir, addr, admin, replicas)
		if err != nil {
			return "", nil, err
		}
		if s.f.servers == "process" {
			pid, exited, err := s.startChild(label, "serve", "-config", cfgPath, "-log-level", "warn", "-drain-delay", "0s", "-shutdown-timeout", "1s")
			if err != nil {
				return "", nil, err
			}
			if err := loadtest.WaitHTTP(ctx, "http://"+admin+"/readyz", exited); err != nil {
				return "", nil, err
			}
			return addr, func() (time.Duration, error) { return loadtest.ProcessCPU(pid) }, nil
		}
		serveCtx, stop := context.WithCancel(context.Background())
		served := make(chan error, 1)
		go func() {
			so := server.DefaultOptions(cfgPath, slog.New(slog.DiscardHandler))
			so.DrainDelay, so.ShutdownTimeout, so.MaxConnectionAge = 0, time.Second, time.Hour
			served <- server.Run(serveCtx, so)
		}()
		// The load test has its results by then; a failure to stop is still said.
		s.onClose(func() {
			stop()
			if err := <-served; err != nil {
				fmt.Fprintln(os.Stderr, "partroute (in process) stopped:", err)
			}
		})
		if err := loadtest.WaitHTTP(ctx, "http://"+admin+"/readyz", served); err != nil {
			return "", nil, err
		}
		return addr, nil, nil
	case serverNoop, serverFloor:
		var partitions []string
		if name == serverFloor {
			var err error
			if partitions, err = s.floorPartitions(replicas); err != nil {
				return "", nil, err
			}
		}
		if s.f.servers == "process" {
			args := []string{"loadtest", "noop", "-listen", addr, "-set-by", s.f.shape.String()}
			for _, id := range partitions {
				args = append(args, "-floor-partition", id)
			}
			pid, exited, err := s.startChild(label, args...)
			if err != nil {
				return "", nil, err
			}
			if err := waitGRPCHealth(ctx, addr, exited); err != nil {
				return "", nil, err
			}
			return addr, func() (time.Duration, error) { return loadtest.ProcessCPU(pid) }, nil
		}
		srv, err := startBaseline(addr, partitions, s.f.shape, 0)
		if err != nil {
			return "", nil, err
		}
		s.onClose(srv.Close)
		return srv.Addr, nil, nil
	}
	return "", nil, fmt.Errorf("no server called %q (partroute, noop, floor or nofilter)", name)
}

// startBaseline serves a baseline ext_proc server on addr with partroute serve's server
// options: the no-op server, or the decoding floor answering for partitions, in the shape of
// setBy, when there are any.
func startBaseline(addr string, partitions []string, setBy config.SetBy, workers int) (*loadtest.GRPCServer, error) {
	opts := server.ExtProcServerOptions(time.Hour, workers)
	if len(partitions) == 0 {
		return loadtest.StartExtProcServer(addr, loadtest.NoopProcessor{}, opts...)
	}
	floor, err := loadtest.NewFloorProcessor(partitions, "0", setBy)
	if err != nil {
		return nil, err
	}
	return loadtest.StartExtProcServer(addr, floor, loadtest.FloorServerOptions(extproc.NewCodec(), opts...)...)
}

// floorPartitions are the ids of the partitions the decoding floor answers for: the scenario's
// first, or with -floor-spread all of them.
func (s *loadStack) floorPartitions(replicas []string) ([]string, error) {
	dir := filepath.Join(s.work, "floor-scenario")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	ports, err := loadtest.ReservePorts(2)
	if err != nil {
		return nil, err
	}
	cfgPath, err := s.f.scenario().WriteFiles(dir, ports[0], ports[1], replicas)
	if err != nil {
		return nil, err
	}
	_, view, err := resolver.LoadConfigAndView(cfgPath, "")
	if err != nil {
		return nil, err
	}
	partitions := view.Services[loadtest.ScenarioService].Partitions
	if !s.f.floorSpread {
		partitions = partitions[:1]
	}
	ids := make([]string, len(partitions))
	for i, p := range partitions {
		ids[i] = p.ID
	}
	return ids, nil
}

// startChild runs this binary with args as a child process that dies with this one, logging to
// a file of the work directory. The returned channel reports its exit.
func (s *loadStack) startChild(name string, args ...string) (int, <-chan error, error) {
	self, err := os.Executable()
	if err != nil {
		return 0, nil, err
	}
	logFile, err := os.Create(filepath.Join(s.work, fileLabel(name)+".log"))
	if err != nil {
		return 0, nil, err
	}
	cmd := exec.Command(self, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return 0, nil, err
	}
	exited := make(chan error, 1)
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		logFile.Close()
		if err == nil {
			err = errors.New("exited")
		}
		exited <- fmt.Errorf("%s: %w (log: %s)", name, err, logFile.Name())
		close(done)
	}()
	s.onClose(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			_ = cmd.Process.Kill()
			<-done
		}
	})
	return cmd.Process.Pid, exited, nil
}

// startEnvoy runs an Envoy for the named server (ext_proc at extproc; no filter for nofilter)
// in front of the replicas and returns its listener and the reading of its CPU time.
func (s *loadStack) startEnvoy(ctx context.Context, name, label, extprocAddr string, replicas []string) (string, func() (time.Duration, error), error) {
	listen, pid, err := s.runEnvoy(ctx, name, label, extprocAddr, replicas)
	if err != nil {
		return "", nil, err
	}
	return listen, func() (time.Duration, error) { return loadtest.ProcessCPU(pid) }, nil
}

// fileLabel is a server's label as a file name.
func fileLabel(label string) string { return strings.ReplaceAll(label, "/", "-") }

// runEnvoy is startEnvoy, returning Envoy's process id.
func (s *loadStack) runEnvoy(ctx context.Context, name, label, extprocAddr string, replicas []string) (string, int, error) {
	bin, err := envoyconfig.FindEnvoy()
	if err != nil {
		return "", 0, err
	}
	ports, err := loadtest.ReservePorts(4)
	if err != nil {
		return "", 0, err
	}
	dir := filepath.Join(s.work, "envoy-"+fileLabel(label))
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return "", 0, err
	}
	cfgPath, err := s.f.scenario().WriteFiles(dir, ports[2], ports[3], replicas)
	if err != nil {
		return "", 0, err
	}
	cfg, view, err := resolver.LoadConfigAndView(cfgPath, "")
	if err != nil {
		return "", 0, err
	}
	boot, err := loadtest.EnvoyBootstrap(cfg, view, envoyconfig.Options{
		ListenAddress: ports[0], AdminAddress: ports[1], ExtProcAddress: extprocAddr, NoExtProc: name == serverNoFilter, GoogleGRPC: s.f.googleGRPC,
	})
	if err != nil {
		return "", 0, err
	}
	y, err := envoyconfig.MarshalYAML(boot)
	if err != nil {
		return "", 0, err
	}
	bootPath := filepath.Join(dir, "envoy.yaml")
	if err := os.WriteFile(bootPath, y, 0o600); err != nil {
		return "", 0, err
	}
	logFile, err := os.Create(filepath.Join(dir, "envoy.log"))
	if err != nil {
		return "", 0, err
	}
	e, err := envoyconfig.StartEnvoy(bin, bootPath, ports[1], logFile)
	if err != nil {
		logFile.Close()
		return "", 0, err
	}
	s.onClose(func() { _ = e.Stop(5 * time.Second); logFile.Close() })
	readyCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := e.WaitReady(readyCtx, envoyconfig.ExtProcCluster); err != nil {
		return "", 0, fmt.Errorf("%w (log: %s)", err, logFile.Name())
	}
	return ports[0], e.Pid(), nil
}

// waitGRPCHealth waits until the gRPC server at addr reports ext_proc SERVING, or the process
// serving it exits.
func waitGRPCHealth(ctx context.Context, addr string, exited <-chan error) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	hc := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		callCtx, done := context.WithTimeout(ctx, time.Second)
		resp, err := hc.Check(callCtx, &healthpb.HealthCheckRequest{Service: contract.ExtProcService()})
		done()
		if err == nil && resp.GetStatus() == healthpb.HealthCheckResponse_SERVING {
			return nil
		}
		select {
		case err := <-exited:
			return err
		case <-ctx.Done():
			return fmt.Errorf("ext_proc server at %s not serving: %w", addr, ctx.Err())
		case <-tick.C:
		}
	}
}
