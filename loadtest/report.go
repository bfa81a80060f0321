package loadtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is everything one invocation of the load test measured, as written to JSON and drawn
// in the SVG.
type Report struct {
	Title       string       `json:"title"`
	Command     string       `json:"command,omitempty"`
	Started     time.Time    `json:"started"`
	Machine     Machine      `json:"machine"`
	Runs        []*Result    `json:"runs"`
	Comparisons []Comparison `json:"comparisons,omitempty"`
}

// Machine describes where the numbers were taken: they mean little without it.
type Machine struct {
	OS        string `json:"os"`
	Arch      string `json:"arch"`
	CPUs      int    `json:"cpus"`
	CPUModel  string `json:"cpu_model,omitempty"`
	Kernel    string `json:"kernel,omitempty"`
	GoVersion string `json:"go_version"`
	// LoadAverage is /proc/loadavg when the report was made: other work on the machine skews
	// every number.
	LoadAverage string `json:"load_average,omitempty"`
}

// DescribeMachine reads the machine's description from the runtime and /proc.
func DescribeMachine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), GoVersion: runtime.Version()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		m.LoadAverage = strings.Join(strings.Fields(string(b))[:3], " ")
	}
	return m
}

// Comparison is a metric of a target over the same metric of its baseline, for each pair of
// runs made back to back, and their median.
type Comparison struct {
	Target   string    `json:"target"`
	Baseline string    `json:"baseline"`
	Metric   Metric    `json:"metric"`
	Ratios   []float64 `json:"ratios"`
	Median   float64   `json:"median"`
	// Limit, when set, is the median's bound: at least Limit for throughput, at most Limit for
	// a latency or a cost.
	Limit float64 `json:"limit,omitempty"`
	Pass  *bool   `json:"pass,omitempty"`
}

// Metric is what a comparison compares.
type Metric string

// The metrics.
const (
	Throughput Metric = "throughput"
	P50        Metric = "p50"
	P99        Metric = "p99"
	P999       Metric = "p99.9"
	ServerCPU  Metric = "server_cpu_per_request"
	EnvoyCPU   Metric = "envoy_cpu_per_request"
)

// Value returns the metric of r.
func (m Metric) Value(r *Result) float64 {
	switch m {
	case Throughput:
		return r.Throughput
	case P50:
		return float64(r.Latency.P50)
	case P99:
		return float64(r.Latency.P99)
	case P999:
		return float64(r.Latency.P999)
	case ServerCPU:
		return r.ServerCPUPerRequest
	case EnvoyCPU:
		return r.EnvoyCPUPerRequest
	}
	return math.NaN()
}

// HigherIsBetter says which way the metric improves.
func (m Metric) HigherIsBetter() bool { return m == Throughput }

// Compare builds the comparison of metric between target and baseline runs paired by
// position, with limit as its bound (0 for none).
func Compare(target, baseline []*Result, metric Metric, limit float64) Comparison {
	c := Comparison{Metric: metric, Limit: limit}
	if len(target) > 0 {
		c.Target = target[0].Target
	}
	if len(baseline) > 0 {
		c.Baseline = baseline[0].Target
	}
	for i := 0; i < len(target) && i < len(baseline); i++ {
		b := metric.Value(baseline[i])
		if b == 0 {
			continue
		}
		c.Ratios = append(c.Ratios, metric.Value(target[i])/b)
	}
	c.Median = Median(c.Ratios)
	if limit > 0 && len(c.Ratios) > 0 {
		pass := c.Median <= limit
		if metric.HigherIsBetter() {
			pass = c.Median >= limit
		}
		c.Pass = &pass
	}
	return c
}

// String renders the comparison on one line.
func (c Comparison) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s / %s %s:", c.Target, c.Baseline, c.Metric)
	for _, r := range c.Ratios {
		fmt.Fprintf(&b, " %.3f", r)
	}
	fmt.Fprintf(&b, "  median %.3f", c.Median)
	if c.Pass != nil {
		op := "<="
		if c.Metric.HigherIsBetter() {
			op = ">="
		}
		verdict := "FAIL"
		if *c.Pass {
			verdict = "pass"
		}
		fmt.Fprintf(&b, " (limit %s %.2f: %s)", op, c.Limit, verdict)
	}
	return b.String()
}

// FormatNS renders nanoseconds with a unit that keeps three significant digits.
func FormatNS(ns float64) string {
	switch {
	case ns >= 1e9:
		return strconv.FormatFloat(ns/1e9, 'f', 2, 64) + "s"
	case ns >= 1e6:
		return strconv.FormatFloat(ns/1e6, 'f', 2, 64) + "ms"
	case ns >= 1e3:
		return strconv.FormatFloat(ns/1e3, 'f', 0, 64) + "µs"
	}
	return strconv.FormatFloat(ns, 'f', 0, 64) + "ns"
}

// WriteText writes the report as a table of runs, their errors, and the comparisons.
func WriteText(w io.Writer, r *Report) error {
	var buf bytes.Buffer
	tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "run\tmode\tload\trequests\terrors\treq/s\tp50\tp90\tp99\tp99.9\tmax\tserver cpu/req\tenvoy cpu/req\tclient cpu/req\t")
	for _, res := range r.Runs {
		load := "c=" + strconv.Itoa(res.Concurrency)
		if res.Mode == Open {
			load = strconv.FormatFloat(res.Rate, 'f', 0, 64) + "/s"
		}
		srv, envoy := "-", "-"
		if res.ServerCPUPerRequest > 0 {
			srv = FormatNS(res.ServerCPUPerRequest)
		}
		if res.EnvoyCPUPerRequest > 0 {
			envoy = FormatNS(res.EnvoyCPUPerRequest)
		}
		l := res.Latency
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n",
			res.Name, res.Mode, load, res.Requests, res.Errors, res.Throughput,
			FormatNS(float64(l.P50)), FormatNS(float64(l.P90)), FormatNS(float64(l.P99)), FormatNS(float64(l.P999)), FormatNS(float64(l.Max)),
			srv, envoy, FormatNS(res.ClientCPUPerRequest))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, res := range r.Runs {
		if res.Errors == 0 {
			continue
		}
		codes := make([]string, 0, len(res.ErrorCodes))
		for code, n := range res.ErrorCodes {
			codes = append(codes, code+"="+strconv.FormatInt(n, 10))
		}
		sort.Strings(codes)
		fmt.Fprintf(&buf, "errors of %s: %s\n", res.Name, strings.Join(codes, " "))
	}
	for _, c := range r.Comparisons {
		fmt.Fprintln(&buf, c.String())
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// WriteJSON writes the report as indented JSON.
func WriteJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// ReadJSON reads a report written by WriteJSON.
func ReadJSON(rd io.Reader) (*Report, error) {
	var r Report
	dec := json.NewDecoder(rd)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return nil, fmt.Errorf("load test report: %w", err)
	}
	return &r, nil
}

// Chart geometry, in SVG user units.
const (
	chartW, chartH             = 1200, 580
	plotL, plotR, plotT, plotB = 80, 760, 70, 520
)

// seriesColors are distinguishable colors for the targets, one each, in order of appearance.
func seriesColors() []string {
	return []string{"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"}
}

// WriteSVG draws the latency percentile curve of every run on one chart: percentiles on a
// "number of nines" axis (0, 90, 99, 99.9 ... evenly spaced) and latency on a log axis, one
// color per target. The file stands alone: no script, font or stylesheet from elsewhere.
func WriteSVG(w io.Writer, r *Report) error {
	var b bytes.Buffer
	maxNines, minLat, maxLat := 1.0, math.Inf(1), 0.0
	for _, res := range r.Runs {
		if n := res.Requests; n > 0 {
			maxNines = max(maxNines, math.Log10(float64(n)))
		}
		for _, p := range res.Curve {
			if p.LatencyNS > 0 {
				minLat = min(minLat, float64(p.LatencyNS))
				maxLat = max(maxLat, float64(p.LatencyNS))
			}
		}
	}
	if maxLat == 0 {
		minLat, maxLat = 1e3, 1e6
	}
	maxNines = math.Ceil(maxNines)
	lo, hi := math.Floor(math.Log10(minLat)), math.Ceil(math.Log10(maxLat))
	if hi <= lo {
		hi = lo + 1
	}
	xOf := func(pct float64) float64 {
		nines := maxNines
		if pct < 100 {
			nines = min(-math.Log10(1-pct/100), maxNines)
		}
		return plotL + (plotR-plotL)*nines/maxNines
	}
	yOf := func(ns float64) float64 {
		return plotB - (plotB-plotT)*(math.Log10(max(ns, 1))-lo)/(hi-lo)
	}

	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&b, `<rect width="%d" height="%d" fill="white"/>`+"\n", chartW, chartH)
	for i, line := range titleLines(r.Title, 120) {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="15">%s</text>`+"\n", plotL, 22+18*i, escape(line))
	}
	fmt.Fprintf(&b, `<text x="%d" y="58" fill="#555">%s</text>`+"\n", plotL, escape(machineLine(r.Machine)))
	// Grid and axes.
	for k := 0; k <= int(maxNines); k++ {
		x := plotL + (plotR-plotL)*float64(k)/maxNines
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>`+"\n", x, plotT, x, plotB)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" text-anchor="middle">%s</text>`+"\n", x, plotB+18, escape(ninesLabel(k)))
	}
	for e := lo; e <= hi; e++ {
		for _, m := range []float64{1, 2, 5} {
			ns := m * math.Pow(10, e)
			if math.Log10(ns) > hi+1e-9 {
				break
			}
			y := yOf(ns)
			stroke := "#eee"
			if m == 1 {
				stroke = "#ccc"
			}
			fmt.Fprintf(&b, `<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="%s"/>`+"\n", plotL, y, plotR, y, stroke)
			fmt.Fprintf(&b, `<text x="%d" y="%.1f" text-anchor="end">%s</text>`+"\n", plotL-6, y+4, escape(axisLabel(ns)))
		}
	}
	fmt.Fprintf(&b, `<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#333"/>`+"\n", plotL, plotT, plotR-plotL, plotB-plotT)
	fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle">percentile</text>`+"\n", (plotL+plotR)/2, plotB+40)
	fmt.Fprintf(&b, `<text x="20" y="%d" text-anchor="middle" transform="rotate(-90 20 %d)">latency (log scale)</text>`+"\n", (plotT+plotB)/2, (plotT+plotB)/2)

	// One polyline per run, colored by target.
	colors := seriesColors()
	colorOf := map[string]string{}
	var order []string
	for _, res := range r.Runs {
		key := res.Target
		if key == "" {
			key = res.Name
		}
		if _, ok := colorOf[key]; !ok {
			colorOf[key] = colors[len(order)%len(colors)]
			order = append(order, key)
		}
		var pts strings.Builder
		for _, p := range res.Curve {
			fmt.Fprintf(&pts, "%.1f,%.1f ", xOf(p.Percentile), yOf(float64(p.LatencyNS)))
		}
		fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5" stroke-opacity="0.8" points="%s"><title>%s</title></polyline>`+"\n",
			colorOf[key], strings.TrimSpace(pts.String()), escape(res.Name))
	}
	// The legend: a target per line, with the number of runs and the median of their p99s.
	y := plotT + 10
	for _, key := range order {
		var p99s []float64
		for _, res := range r.Runs {
			if res.Target == key || (res.Target == "" && res.Name == key) {
				p99s = append(p99s, float64(res.Latency.P99))
			}
		}
		fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="3"/>`+"\n", plotR+15, y, plotR+35, y, colorOf[key])
		fmt.Fprintf(&b, `<text x="%d" y="%d">%s</text>`+"\n", plotR+40, y+4, escape(fmt.Sprintf("%s (%d runs, p99 %s)", key, len(p99s), FormatNS(Median(p99s)))))
		y += 20
	}
	for _, c := range r.Comparisons {
		fmt.Fprintf(&b, `<text x="%d" y="%d" font-size="11">%s</text>`+"\n", plotR+15, y+4, escape(fmt.Sprintf("%s / %s %s: median %.3f", c.Target, c.Baseline, c.Metric, c.Median)))
		y += 16
	}
	b.WriteString("</svg>\n")
	_, err := w.Write(b.Bytes())
	return err
}

// titleLines splits a title longer than width characters into two lines, at the last ", "
// that fits.
func titleLines(title string, width int) []string {
	if len(title) <= width {
		return []string{title}
	}
	if i := strings.LastIndex(title[:width], ", "); i > 0 {
		return []string{title[:i+1], title[i+2:]}
	}
	return []string{title}
}

// axisLabel renders a latency axis tick: 500µs, 1ms, 20ms, 1s.
func axisLabel(ns float64) string {
	for _, u := range []struct {
		unit  string
		scale float64
	}{{"s", 1e9}, {"ms", 1e6}, {"µs", 1e3}} {
		if ns >= u.scale {
			return strconv.FormatFloat(ns/u.scale, 'g', 3, 64) + u.unit
		}
	}
	return strconv.FormatFloat(ns, 'g', 3, 64) + "ns"
}

func ninesLabel(k int) string {
	switch k {
	case 0:
		return "0%"
	case 1:
		return "90%"
	case 2:
		return "99%"
	}
	return "99." + strings.Repeat("9", k-2) + "%"
}

func machineLine(m Machine) string {
	s := fmt.Sprintf("%s/%s, %d CPUs", m.OS, m.Arch, m.CPUs)
	if m.CPUModel != "" {
		s += ", " + m.CPUModel
	}
	s += ", " + m.GoVersion
	if m.LoadAverage != "" {
		s += ", load " + m.LoadAverage
	}
	return s
}

func escape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
