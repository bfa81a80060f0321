package deploy

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/partroute/partroute/internal/testkit"
	"github.com/partroute/partroute/resolver"
)

// notExported are the series the dashboard and the rules may use that partroute's /metrics does
// not serve here, with their labels and why.
var notExported = map[string]struct {
	labels []string
	reason string
}{
	"up": {[]string{"job", "instance"}, "Prometheus records it of every scrape"},
}

// scrapeLabels are the labels Prometheus adds to every series it scrapes.
var scrapeLabels = []string{"job", "instance"}

// grafanaIntervals are Grafana's interval variables, which stand where PromQL has a duration;
// the test puts a duration in their place to parse an expression. Other variables ($job) stand
// in label values, where PromQL has a string already.
var grafanaIntervals = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h")

func dashboardPath(tb testing.TB) string {
	return filepath.Join(testkit.RepoRoot(tb), "deploy", "grafana", "partroute.json")
}

func alertsPath(tb testing.TB) string {
	return filepath.Join(testkit.RepoRoot(tb), "deploy", "prometheus", "alerts.yaml")
}

// dashboard is the part of a Grafana dashboard the tests read.
type dashboard struct {
	Title, UID string
	Templating struct {
		List []struct {
			Name, Type string
			Query      json.RawMessage
		}
	}
	Panels []panel
}

type panel struct {
	ID          int
	Type, Title string
	Description string
	Datasource  *struct{ Type, UID string }
	GridPos     struct{ H, W, X, Y int }
	Targets     []struct{ RefID, Expr string }
	Panels      []panel
	Collapsed   bool
}

func loadDashboard(t *testing.T) dashboard {
	t.Helper()
	var d dashboard
	if err := json.Unmarshal(readFile(t, dashboardPath(t)), &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath(t), err)
	}
	return d
}

// dashboardQueries returns every PromQL expression of the dashboard, by where it is: its
// panels' targets and the metric selectors of its variables' label_values queries.
func dashboardQueries(t *testing.T, d dashboard) map[string]string {
	t.Helper()
	out := map[string]string{}
	var walk func([]panel)
	walk = func(ps []panel) {
		for i := range ps {
			p := &ps[i]
			for _, tg := range p.Targets {
				out[fmt.Sprintf("panel %q target %s", p.Title, tg.RefID)] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	labelValues := regexp.MustCompile(`^label_values\((.+), *([a-zA-Z_][a-zA-Z0-9_]*)\)$`)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil {
			t.Fatalf("variable %s: query: %v", v.Name, err)
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		// label_values(selector, label) asks for the label of the selector's series: the
		// selector summed by that label has the same series to look the label up on.
		out["variable "+v.Name] = fmt.Sprintf("count by (%s) (%s)", m[2], m[1])
	}
	return out
}

type alertRule struct {
	rulefmt.Rule
	group string
}

// loadAlerts parses the rules with Prometheus's own rule parser, which also parses each
// expression and each template.
func loadAlerts(t *testing.T) []alertRule {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsPath(t), false, model.UTF8Validation, parser.NewParser(parser.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	for _, err := range errs {
		t.Error(err)
	}
	if groups == nil {
		t.FailNow()
	}
	var out []alertRule
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			out = append(out, alertRule{Rule: r, group: g.Name})
		}
	}
	return out
}

// TestMonitoringUsesExportedSeries checks that every series the dashboard and the rules
// select, and every label they match, group by or print, is one partroute exports, as read
// from the /metrics of partroute running on each naming source; and that the 503 codes they
// name are the ones the error table answers with 503.
func TestMonitoringUsesExportedSeries(t *testing.T) {
	series := allSeries(t)
	for name, ne := range notExported {
		if _, ok := series[name]; ok {
			t.Errorf("%s is exported now: remove it from notExported (%s)", name, ne.reason)
		}
	}
	p := parser.NewParser(parser.Options{})
	check := func(where, expr string) exprLabels {
		t.Helper()
		e, err := p.ParseExpr(grafanaIntervals.Replace(expr))
		if err != nil {
			t.Errorf("%s: %q: %v", where, expr, err)
			return exprLabels{}
		}
		c := &exprChecker{t: t, where: where, series: series}
		return c.labels(e)
	}

	d := loadDashboard(t)
	for where, expr := range dashboardQueries(t, d) {
		check(where, expr)
	}
	for _, r := range loadAlerts(t) {
		where := "alert " + r.Alert
		out := check(where, r.Expr)
		// A template can print only the labels the expression's result has.
		for _, text := range slices.Concat(slices.Collect(maps.Values(r.Annotations)), slices.Collect(maps.Values(r.Labels))) {
			for _, m := range templateLabel.FindAllStringSubmatch(text, -1) {
				if !out.all && !out.names[m[1]] {
					t.Errorf("%s prints $labels.%s, which its expression's result does not have (it has %v)", where, m[1], slices.Sorted(maps.Keys(out.names)))
				}
			}
		}
	}
}

// templateLabel matches a label printed by an alert template.
var templateLabel = regexp.MustCompile(`\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)`)

// exprChecker checks the series and labels of one expression against what partroute exports.
type exprChecker struct {
	t      *testing.T
	where  string
	series exported
}

// exprLabels are the labels an expression's result can have; all when they cannot be told.
type exprLabels struct {
	names map[string]bool
	all   bool
}

func labelSet(names ...string) exprLabels {
	out := exprLabels{names: map[string]bool{}}
	for _, n := range names {
		out.names[n] = true
	}
	return out
}

func (l exprLabels) has(name string) bool { return l.all || l.names[name] }

func (l exprLabels) without(names []string) exprLabels {
	out := exprLabels{names: maps.Clone(l.names), all: l.all}
	for _, n := range names {
		delete(out.names, n)
	}
	return out
}

func (l exprLabels) intersect(o exprLabels) exprLabels {
	switch {
	case l.all:
		return o
	case o.all:
		return l
	}
	out := labelSet()
	for n := range l.names {
		if o.names[n] {
			out.names[n] = true
		}
	}
	return out
}

// labels checks the selectors of e, and the labels its aggregations and matchings name, and
// returns the labels of e's result.
func (c *exprChecker) labels(e parser.Expr) exprLabels {
	c.t.Helper()
	switch e := e.(type) {
	case *parser.VectorSelector:
		return c.selector(e)
	case *parser.MatrixSelector:
		return c.labels(e.VectorSelector)
	case *parser.SubqueryExpr:
		return c.labels(e.Expr)
	case *parser.ParenExpr:
		return c.labels(e.Expr)
	case *parser.UnaryExpr:
		return c.labels(e.Expr)
	case *parser.NumberLiteral, *parser.StringLiteral:
		return labelSet()
	case *parser.AggregateExpr:
		inner := c.labels(e.Expr)
		if e.Param != nil {
			c.labels(e.Param)
		}
		for _, l := range e.Grouping {
			if !inner.has(l) {
				c.t.Errorf("%s: %s by (%s): the series aggregated have no label %q", c.where, e.Op, strings.Join(e.Grouping, ", "), l)
			}
		}
		switch {
		case e.Without:
			return inner.without(e.Grouping)
		case e.Op == parser.TOPK || e.Op == parser.BOTTOMK || e.Op == parser.LIMITK || e.Op == parser.LIMIT_RATIO:
			return inner
		default:
			return labelSet(e.Grouping...)
		}
	case *parser.BinaryExpr:
		lhs, rhs := c.labels(e.LHS), c.labels(e.RHS)
		if m := e.VectorMatching; m != nil {
			for _, l := range slices.Concat(m.MatchingLabels, m.Include) {
				if m.On && (!lhs.has(l) || !rhs.has(l)) {
					c.t.Errorf("%s: on(%s): a side of %s has no label %q", c.where, strings.Join(m.MatchingLabels, ", "), e.Op, l)
				}
			}
		}
		switch {
		case e.LHS.Type() != parser.ValueTypeVector:
			return rhs
		case e.RHS.Type() != parser.ValueTypeVector:
			return lhs
		case e.Op == parser.LOR:
			return lhs.intersect(rhs)
		case e.Op.IsComparisonOperator() || e.Op == parser.LAND || e.Op == parser.LUNLESS:
			return lhs
		default:
			// Arithmetic between vectors drops the metric name and keeps the left side's
			// labels (one-to-one), plus any group_left include.
			return lhs
		}
	case *parser.Call:
		var args []exprLabels
		for _, a := range e.Args {
			args = append(args, c.labels(a))
		}
		switch e.Func.Name {
		case "time", "vector", "scalar":
			return labelSet()
		case "absent", "absent_over_time":
			// absent's result has the labels its selector matches exactly.
			out := labelSet()
			parser.Inspect(e.Args[0], func(n parser.Node, _ []parser.Node) error {
				if vs, ok := n.(*parser.VectorSelector); ok {
					for _, m := range vs.LabelMatchers {
						if m.Type == labels.MatchEqual && m.Name != model.MetricNameLabel {
							out.names[m.Name] = true
						}
					}
				}
				return nil
			})
			return out
		case "histogram_quantile":
			return args[1].without([]string{"le"})
		case "label_replace", "label_join":
			c.t.Errorf("%s: %s: the test does not follow the labels it makes", c.where, e.Func.Name)
			return exprLabels{all: true}
		}
		for i, a := range e.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return args[i]
			}
		}
		return labelSet()
	default:
		c.t.Errorf("%s: the test does not know the expression %T (%s)", c.where, e, e)
		return exprLabels{all: true}
	}
}

// selector checks that vs selects by name a series partroute exports, and matches only labels
// and label values it has; it returns the series' labels.
func (c *exprChecker) selector(vs *parser.VectorSelector) exprLabels {
	c.t.Helper()
	name := vs.Name
	if name == "" {
		c.t.Errorf("%s: %s selects no series by name", c.where, vs)
		return exprLabels{all: true}
	}
	out := labelSet(scrapeLabels...)
	exportedLabels, isExported := c.series[name]
	switch ne, allowed := notExported[name]; {
	case isExported:
		for l := range exportedLabels {
			out.names[l] = true
		}
	case allowed:
		for _, l := range ne.labels {
			out.names[l] = true
		}
	default:
		c.t.Errorf("%s: %s is not a series partroute exports", c.where, name)
		return exprLabels{all: true}
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel {
			continue
		}
		if !out.names[m.Name] {
			c.t.Errorf("%s: %s has no label %q", c.where, name, m.Name)
			continue
		}
		values, known := exportedLabels[m.Name]
		if !known || strings.Contains(m.Value, "$") {
			continue // a scrape label, a series not exported here, or a Grafana variable
		}
		if m.Name == "code" && m.Type == labels.MatchRegexp {
			c.check503(name, m, values)
		}
		// A matcher names values the series has: one that selects none, or excludes none, is
		// a misspelt value.
		positive := m
		switch m.Type {
		case labels.MatchNotEqual:
			positive = labels.MustNewMatcher(labels.MatchEqual, m.Name, m.Value)
		case labels.MatchNotRegexp:
			positive = labels.MustNewMatcher(labels.MatchRegexp, m.Name, m.Value)
		}
		if !slices.ContainsFunc(slices.Collect(maps.Keys(values)), positive.Matches) {
			c.t.Errorf("%s: %s{%s}: %s has no value %s matches (it has %v)", c.where, name, m, m.Name, positive, slices.Sorted(maps.Keys(values)))
		}
	}
	return out
}

// check503 checks that a regular expression on the code label matches exactly the codes of the
// error table that are answered with 503: it is how the dashboard and the rules pick out the
// requests answered 503.
func (c *exprChecker) check503(name string, m *labels.Matcher, values map[string]bool) {
	c.t.Helper()
	var want, got []string
	for _, code := range resolver.Codes() {
		if code.Status() == 503 {
			want = append(want, code.String())
		}
	}
	for v := range values {
		if m.Matches(v) {
			got = append(got, v)
		}
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		c.t.Errorf("%s: %s{%s} matches the codes %v; the codes answered with 503 are %v", c.where, name, m, got, want)
	}
}

// TestDashboardLayout checks what Grafana needs of each panel, and what a reader does: a title
// and a description, the dashboard's data source variable, targets with their own ids, and a
// place on the grid that no other panel takes.
func TestDashboardLayout(t *testing.T) {
	d := loadDashboard(t)
	if d.Title == "" || d.UID == "" {
		t.Errorf("dashboard title %q, uid %q: both are needed", d.Title, d.UID)
	}
	hasDatasource := false
	for _, v := range d.Templating.List {
		if v.Type == "datasource" && v.Name == "datasource" && string(v.Query) == `"prometheus"` {
			hasDatasource = true
		}
	}
	if !hasDatasource {
		t.Error("the dashboard has no datasource variable of type prometheus")
	}
	const columns = 24
	ids, titles := map[int]bool{}, map[string]bool{}
	var placed []panel
	for _, p := range d.Panels {
		if ids[p.ID] || titles[p.Title] || p.Title == "" {
			t.Errorf("panel %d %q: ids and titles must be given and unique", p.ID, p.Title)
		}
		ids[p.ID], titles[p.Title] = true, true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.Y < 0 || g.X+g.W > columns {
			t.Errorf("panel %q: grid position %+v is outside the %d columns", p.Title, g, columns)
		}
		for _, q := range placed {
			o := q.GridPos
			if g.X < o.X+o.W && o.X < g.X+g.W && g.Y < o.Y+o.H && o.Y < g.Y+g.H {
				t.Errorf("panels %q and %q overlap", q.Title, p.Title)
			}
		}
		placed = append(placed, p)
		switch p.Type {
		case "row":
			if len(p.Targets) > 0 || p.Collapsed || len(p.Panels) > 0 {
				t.Errorf("row %q: rows are open and hold no queries or panels of their own", p.Title)
			}
			continue
		case "timeseries", "stat", "table":
		default:
			t.Errorf("panel %q: type %q is not one the dashboard uses", p.Title, p.Type)
		}
		if p.Description == "" {
			t.Errorf("panel %q has no description", p.Title)
		}
		if p.Datasource == nil || p.Datasource.Type != "prometheus" || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: data source %+v, want the dashboard's variable", p.Title, p.Datasource)
		}
		refs := map[string]bool{}
		for _, tg := range p.Targets {
			if tg.Expr == "" || tg.RefID == "" || refs[tg.RefID] {
				t.Errorf("panel %q: target %q: each target has an expression and an id of its own", p.Title, tg.RefID)
			}
			refs[tg.RefID] = true
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
	}
}

// TestAlertsSayWhatToDo checks that every alert has a severity, a summary, a description, and a
// runbook link to its section of docs/deploy.md.
func TestAlertsSayWhatToDo(t *testing.T) {
	module, _, _ := strings.Cut(strings.TrimPrefix(string(readFile(t, filepath.Join(testkit.RepoRoot(t), "go.mod"))), "module "), "\n")
	runbook := "https://" + module + "/blob/main/docs/deploy.md#"
	anchors := docAnchors(t)
	names := map[string]bool{}
	for _, r := range loadAlerts(t) {
		if r.Alert == "" {
			t.Errorf("group %s: rule %q is not an alert", r.group, r.Record)
			continue
		}
		if names[r.Alert] {
			t.Errorf("alert %s is defined twice", r.Alert)
		}
		names[r.Alert] = true
		if s := r.Labels["severity"]; s != "critical" && s != "warning" {
			t.Errorf("alert %s: severity %q, want critical or warning", r.Alert, s)
		}
		for _, a := range []string{"summary", "description"} {
			if r.Annotations[a] == "" {
				t.Errorf("alert %s has no %s", r.Alert, a)
			}
		}
		anchor, ok := strings.CutPrefix(r.Annotations["runbook_url"], runbook)
		if !ok || !anchors[anchor] {
			t.Errorf("alert %s: runbook_url %q is not %s<the anchor of a section of docs/deploy.md>", r.Alert, r.Annotations["runbook_url"], runbook)
		}
	}
}

// TestDeployDocsDescribeEveryPanelAndAlert checks that docs/deploy.md names every panel of the
// dashboard and has a section for every alert.
func TestDeployDocsDescribeEveryPanelAndAlert(t *testing.T) {
	doc := string(readFile(t, filepath.Join(testkit.RepoRoot(t), "docs", "deploy.md")))
	for _, p := range loadDashboard(t).Panels {
		if p.Type != "row" && !strings.Contains(doc, "**"+p.Title+"**") {
			t.Errorf("docs/deploy.md does not describe the panel %q (as **%s**)", p.Title, p.Title)
		}
	}
	anchors := docAnchors(t)
	for _, r := range loadAlerts(t) {
		if !anchors[strings.ToLower(r.Alert)] {
			t.Errorf("docs/deploy.md has no section %q for the alert", r.Alert)
		}
	}
}

// docAnchors returns the anchors GitHub gives the headings of docs/deploy.md: lower case, each
// space a hyphen, other punctuation dropped.
func docAnchors(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	for _, line := range strings.Split(string(readFile(t, filepath.Join(testkit.RepoRoot(t), "docs", "deploy.md"))), "\n") {
		heading, ok := strings.CutPrefix(strings.TrimLeft(line, "#"), " ")
		if !ok || !strings.HasPrefix(line, "#") {
			continue
		}
		var b strings.Builder
		for _, r := range strings.ToLower(heading) {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || ('a' <= r && r <= 'z') || ('0' <= r && r <= '9'):
				b.WriteRune(r)
			}
		}
		out[b.String()] = true
	}
	return out
}
