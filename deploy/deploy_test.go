// Package deploy_test checks the files under deploy/ with the tools that
// read them in production: promtool for the alert rules, systemd-analyze for
// the unit, terraform for the module, and the metric names of the rules and
// the dashboard against metrics.txt, the list the binary must export.
package deploy_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const (
	rulesFile     = "prometheus/replicator-rules.yml"
	rulesTestFile = "prometheus/replicator-rules.test.yml"
	dashboardFile = "grafana/replicator-dashboard.json"
	metricsFile   = "metrics.txt"
)

// requireTool returns the path of a command-line tool, failing the test with
// the Debian package that provides it when it is missing.
func requireTool(t *testing.T, name, debianPackage string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		t.Fatalf("%s is not installed: run `apt-get install %s` (scripts/deps.sh installs it)", name, debianPackage)
	}
	return path
}

// run runs a command and returns its combined output, failing the test
// with that output when it exits non-zero.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	out := run(t, ".", nil, promtool, "check", "rules", rulesFile)
	t.Logf("promtool check rules:\n%s", out)
	// The unit tests feed series and state when each alert fires and when
	// it must stay quiet.
	out = run(t, "prometheus", nil, promtool, "test", "rules", filepath.Base(rulesTestFile))
	t.Logf("promtool test rules:\n%s", out)
}

// Every alert in the rules file has a unit test in the promtool test file,
// so a new alert cannot arrive untested.
func TestEveryAlertIsUnitTested(t *testing.T) {
	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `yaml:"alertname"`
			} `yaml:"alert_rule_test"`
		} `yaml:"tests"`
	}
	readYAML(t, rulesTestFile, &tests)
	tested := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			tested[a.Alertname] = true
		}
	}
	for _, r := range loadRules(t) {
		if r.Alert != "" && !tested[r.Alert] {
			t.Errorf("alert %s has no case in %s: add one that fires it and one that must not", r.Alert, rulesTestFile)
		}
	}
}

type rule struct {
	Alert  string `yaml:"alert"`
	Record string `yaml:"record"`
	Expr   string `yaml:"expr"`
}

func loadRules(t *testing.T) []rule {
	t.Helper()
	var f struct {
		Groups []struct {
			Rules []rule `yaml:"rules"`
		} `yaml:"groups"`
	}
	readYAML(t, rulesFile, &f)
	var rules []rule
	for _, g := range f.Groups {
		rules = append(rules, g.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("%s has no rules", rulesFile)
	}
	return rules
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// loadMetricsList reads metrics.txt: one metric name per line, no
// duplicates, each a valid Prometheus name starting with replicator_.
func loadMetricsList(t *testing.T) map[string]bool {
	t.Helper()
	f, err := os.Open(metricsFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	valid := regexp.MustCompile(`^replicator_[a-z0-9_]+$`)
	names := map[string]bool{}
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		name := strings.TrimSpace(sc.Text())
		switch {
		case !valid.MatchString(name):
			t.Errorf("%s:%d: %q is not a replicator metric name", metricsFile, line, name)
		case names[name]:
			t.Errorf("%s:%d: %s is listed twice", metricsFile, line, name)
		}
		names[name] = true
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return names
}

// dashboardQuery is one PromQL expression of the dashboard and where it is.
type dashboardQuery struct {
	where string
	expr  string
}

// loadDashboard parses the dashboard JSON and returns every PromQL
// expression in it: panel targets (rows included) and template variables.
func loadDashboard(t *testing.T) []dashboardQuery {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		Title      string            `json:"title"`
		UID        string            `json:"uid"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []struct {
				Name  string          `json:"name"`
				Type  string          `json:"type"`
				Query json.RawMessage `json:"query"`
			} `json:"list"`
		} `json:"templating"`
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s is not valid JSON: %v", dashboardFile, err)
	}
	if d.Title == "" || d.UID == "" {
		t.Fatalf("%s: the dashboard needs a title and a uid", dashboardFile)
	}
	var queries []dashboardQuery
	var walk func([]json.RawMessage)
	walk = func(raw []json.RawMessage) {
		for _, r := range raw {
			var p panel
			if err := json.Unmarshal(r, &p); err != nil {
				t.Fatalf("%s: panel: %v", dashboardFile, err)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("%s: panel %q target %s has no expr", dashboardFile, p.Title, tg.RefID)
					continue
				}
				queries = append(queries, dashboardQuery{fmt.Sprintf("panel %q target %s", p.Title, tg.RefID), tg.Expr})
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// Grafana stores the query as a string or as {"query": "..."}.
		var q string
		if err := json.Unmarshal(v.Query, &q); err != nil {
			var obj struct {
				Query string `json:"query"`
			}
			if err := json.Unmarshal(v.Query, &obj); err != nil {
				t.Fatalf("%s: variable %s: query: %v", dashboardFile, v.Name, err)
			}
			q = obj.Query
		}
		sel, err := labelValuesSelector(q)
		if err != nil {
			t.Errorf("%s: variable %s: %v", dashboardFile, v.Name, err)
			continue
		}
		if sel != "" {
			queries = append(queries, dashboardQuery{"variable " + v.Name, sel})
		}
	}
	if len(queries) == 0 {
		t.Fatalf("%s has no queries", dashboardFile)
	}
	return queries
}

// labelValuesSelector returns the series selector of a Grafana
// label_values(selector, label) variable query ("" for label_values(label)).
func labelValuesSelector(q string) (string, error) {
	q = strings.TrimSpace(q)
	if !strings.HasPrefix(q, "label_values(") || !strings.HasSuffix(q, ")") {
		return "", fmt.Errorf("query %q: only label_values(...) variables are checked; add support for this form to the test", q)
	}
	args := strings.TrimSuffix(strings.TrimPrefix(q, "label_values("), ")")
	i := strings.LastIndex(args, ",")
	if i < 0 {
		return "", nil
	}
	return strings.TrimSpace(args[:i]), nil
}

// grafanaToPromQL replaces Grafana's variables with values Prometheus
// accepts, so that promtool can parse the expression.
func grafanaToPromQL(expr string) string {
	return strings.NewReplacer(
		"$__rate_interval", "5m",
		"$__interval", "1m",
		"$__range", "1h",
		"$instance", ".*",
	).Replace(expr)
}

// The dashboard's expressions are valid PromQL: promtool parses them as
// recording rules.
func TestDashboardQueriesParse(t *testing.T) {
	promtool := requireTool(t, "promtool", "prometheus")
	queries := loadDashboard(t)
	type recording struct {
		Record string `yaml:"record"`
		Expr   string `yaml:"expr"`
	}
	var rules []recording
	for i, q := range queries {
		if strings.Contains(grafanaToPromQL(q.expr), "$") {
			t.Errorf("%s: %s uses a Grafana variable the test does not know: %q", dashboardFile, q.where, q.expr)
		}
		rules = append(rules, recording{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: grafanaToPromQL(q.expr)})
	}
	b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rules}}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "dashboard-queries.yml")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(promtool, "check", "rules", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		// Name the panels, not the generated rule numbers.
		var where []string
		for i, q := range queries {
			if strings.Contains(string(out), fmt.Sprintf("query_%d\"", i)) || strings.Contains(string(out), fmt.Sprintf("query_%d:", i)) {
				where = append(where, q.where)
			}
		}
		t.Fatalf("%s: a query is not valid PromQL (%s): %v\n%s", dashboardFile, strings.Join(where, ", "), err, out)
	}
}

// The rules and the dashboard use only metric names listed in metrics.txt
// (plus Prometheus's own `up`), and every listed name is used, so the list
// is exactly what the binary must export for them to work.
func TestMetricNamesAreListed(t *testing.T) {
	listed := loadMetricsList(t)
	used := map[string][]string{} // name -> where
	use := func(where, expr string) {
		names, err := metricNames(grafanaToPromQL(expr))
		if err != nil {
			t.Errorf("%s: %v", where, err)
			return
		}
		for _, n := range names {
			used[n] = append(used[n], where)
		}
	}
	for _, r := range loadRules(t) {
		use(rulesFile+": "+r.Alert+r.Record, r.Expr)
	}
	for _, q := range loadDashboard(t) {
		use(dashboardFile+": "+q.where, q.expr)
	}

	covered := map[string]bool{}
	var names []string
	for n := range used {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		base, ok := listedName(n, listed)
		if !ok {
			t.Errorf("metric %s is not in %s (used by %s): add it there only if the binary exports it, or fix the name",
				n, metricsFile, strings.Join(used[n], "; "))
			continue
		}
		covered[base] = true
	}
	for n := range listed {
		if !covered[n] {
			t.Errorf("%s lists %s but no alert rule or dashboard panel uses it: remove it or use it", metricsFile, n)
		}
	}
}

// listedName maps a name used in PromQL to its entry in metrics.txt: the
// name itself, `up`, or a histogram's _bucket/_sum/_count series.
func listedName(name string, listed map[string]bool) (string, bool) {
	if name == "up" {
		return "", true
	}
	if listed[name] {
		return name, true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, found := strings.CutSuffix(name, suffix); found && listed[base] {
			return base, true
		}
	}
	return "", false
}

var (
	promqlString   = regexp.MustCompile("\"(?:[^\"\\\\]|\\\\.)*\"|'(?:[^'\\\\]|\\\\.)*'|`[^`]*`")
	promqlMatchers = regexp.MustCompile(`\{[^{}]*\}`)
	promqlRange    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promqlGrouping = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promqlOffset   = regexp.MustCompile(`\boffset\s+-?[0-9a-zA-Z]+`)
	promqlNumber   = regexp.MustCompile(`\b0x[0-9a-fA-F]+\b|(?:\b[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?`)
	promqlIdent    = regexp.MustCompile(`[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promqlKeywords = map[string]bool{
		"and": true, "or": true, "unless": true, "bool": true, "offset": true,
		"by": true, "without": true, "on": true, "ignoring": true,
		"group_left": true, "group_right": true, "inf": true, "nan": true,
		"Inf": true, "NaN": true,
	}
)

// metricNames returns the metric names an expression selects: what is left
// of its identifiers once strings, label matchers, ranges, grouping labels,
// numbers, keywords and function names (an identifier before "(") are
// removed.
func metricNames(expr string) ([]string, error) {
	s := promqlString.ReplaceAllString(expr, `""`)
	s = promqlMatchers.ReplaceAllString(s, " ")
	s = promqlRange.ReplaceAllString(s, " ")
	s = promqlGrouping.ReplaceAllString(s, " ")
	s = promqlOffset.ReplaceAllString(s, " ")
	s = promqlNumber.ReplaceAllString(s, " ")
	if strings.ContainsAny(s, "{}[]") {
		return nil, errors.New("unbalanced braces or brackets in " + expr)
	}
	seen := map[string]bool{}
	var names []string
	for _, loc := range promqlIdent.FindAllStringIndex(s, -1) {
		id := s[loc[0]:loc[1]]
		rest := strings.TrimLeft(s[loc[1]:], " \t\n")
		if promqlKeywords[id] || strings.HasPrefix(rest, "(") {
			continue
		}
		if !seen[id] {
			seen[id] = true
			names = append(names, id)
		}
	}
	return names, nil
}

func TestMetricNamesExtraction(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up{job="replicator"} == 0`, []string{"up"}},
		{`max by (job, instance) (replicator_apply_lag_seconds) > 60`, []string{"replicator_apply_lag_seconds"}},
		{`sum by (le) (rate(h_bucket{instance=~"a|b", x='y{'}[5m])) / on (job) group_left (instance) c_total offset 1h`, []string{"h_bucket", "c_total"}},
		{`(sum(increase(a_total[15m])) == 0) and on (job, instance) (b > 1.5e9) unless sum(rate(c[5m])) > 0`, []string{"a_total", "b", "c"}},
		{`histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m]))) or vector(0)`, []string{"x_bucket"}},
		{`deriv(lsn [5m]) > bool 0x10`, []string{"lsn"}},
		{`topk(10, sum without (instance) (rate(changes_total[1m])))`, []string{"changes_total"}},
	} {
		got, err := metricNames(tc.expr)
		if err != nil {
			t.Errorf("%s: %v", tc.expr, err)
			continue
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("metricNames(%s) = %v, want %v", tc.expr, got, tc.want)
		}
	}
}

// The example config is valid YAML with flag names as keys and holds no
// credentials.
func TestExampleConfig(t *testing.T) {
	var cfg map[string]any
	readYAML(t, "replicator.example.yaml", &cfg)
	for _, key := range []string{"source", "target"} {
		if _, set := cfg[key]; set {
			t.Errorf("replicator.example.yaml sets %s: connection strings belong in SSM or the environment, not in the example", key)
		}
	}
	for _, key := range []string{"capture", "jobs", "metrics-addr"} {
		if _, set := cfg[key]; !set {
			t.Errorf("replicator.example.yaml does not show %s", key)
		}
	}
	if addr, _ := cfg["metrics-addr"].(string); !strings.HasPrefix(addr, "127.0.0.1:") {
		t.Errorf("replicator.example.yaml: metrics-addr %q: the default must stay on loopback", addr)
	}
}
