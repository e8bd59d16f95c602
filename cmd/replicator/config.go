package main

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// yamlLoader reads the --config file. Keys are flag names; a key may also be
// nested under its command ("redis: {sync: {mode: scan}}") to apply to that
// command alone. Command-line flags win over environment variables, which
// win over the file.
func yamlLoader(env *envSource) kong.ConfigurationLoader {
	return func(r io.Reader) (kong.Resolver, error) { return loadYAML(r, env) }
}

func loadYAML(r io.Reader, env *envSource) (kong.Resolver, error) {
	config := map[string]any{}
	if err := yaml.NewDecoder(r).Decode(&config); err != nil && !errors.Is(err, io.EOF) {
		// yaml.v3 puts each problem on a line of its own; the error is one line.
		msg := strings.Join(strings.Fields(err.Error()), " ")
		return nil, fmt.Errorf("config file is not valid YAML (%s): it must be a map of flag names to values, e.g. `source: postgres://...`", msg)
	}
	return &configResolver{config: config, env: env}, nil
}

// configResolver answers kong's questions from the parsed --config file.
type configResolver struct {
	config map[string]any
	env    *envSource // the environment and --heroku-env file, which win over the file
}

// Resolve gives the file's value for flag, if any.
func (r *configResolver) Resolve(_ *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
	config := r.config
	// kong consults resolvers after the environment; the environment
	// (and the --heroku-env file behind it) must win over the file, so
	// step aside when either gives the flag a value.
	if r.env.set(flag) {
		return nil, nil
	}
	if _, ok := r.env.fromFile(flag); ok {
		return nil, nil
	}
	var cmds []string
	for n := parent.Node(); n != nil && n.Type != kong.ApplicationNode; n = n.Parent {
		cmds = append([]string{n.Name}, cmds...)
	}
	// Most specific first: redis.sync.mode, then redis.mode, then mode.
	for i := len(cmds); i >= 0; i-- {
		m := config
		ok := true
		for _, c := range cmds[:i] {
			if m, ok = m[c].(map[string]any); !ok {
				break
			}
		}
		if !ok {
			continue
		}
		if v, found := m[flag.Name]; found {
			if _, isMap := v.(map[string]any); !isMap {
				return scalar(v), nil
			}
		}
	}
	return nil, nil
}

// Validate refuses keys that name no flag and no command, so that a typo
// (sorce:) is an error rather than a setting silently not taken. A key
// names a flag of its command, of a command below it, or a global flag;
// a map names a command.
func (r *configResolver) Validate(app *kong.Application) error {
	return validateKeys(r.config, app.Node, app.Node, "")
}

func validateKeys(m map[string]any, app, node *kong.Node, prefix string) error {
	known := map[string]bool{}
	for _, n := range []*kong.Node{app, node} {
		for _, f := range n.Flags {
			known[f.Name] = true
		}
	}
	var below func(*kong.Node)
	below = func(n *kong.Node) {
		for _, c := range n.Children {
			for _, f := range c.Flags {
				known[f.Name] = true
			}
			below(c)
		}
	}
	below(node)
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if sub, isMap := m[k].(map[string]any); isMap {
			if child := childNamed(node, k); child != nil {
				if err := validateKeys(sub, app, child, prefix+k+"."); err != nil {
					return err
				}
				continue
			}
		} else if known[k] {
			continue
		}
		names := make([]string, 0, len(known)+len(node.Children))
		for n := range known {
			names = append(names, n)
		}
		for _, c := range node.Children {
			names = append(names, c.Name)
		}
		msg := fmt.Sprintf("config file: unknown key %q", prefix+k)
		if near := nearest(k, names); near != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", prefix+near)
		}
		return errors.New(msg + ": keys are flag names, or a command name holding its own flags; see `replicator --help`")
	}
	return nil
}

func childNamed(n *kong.Node, name string) *kong.Node {
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// nearest is the name closest to k by edit distance, if it is close enough
// to be a likely typo (at most a third of its length, and at least 1).
func nearest(k string, names []string) string {
	best, bestD := "", max(1, len(k)/3)+1
	sort.Strings(names)
	for _, n := range names {
		// On a tie the name with k's first letter wins: typos rarely
		// start at the first letter ("sorce" is source, not force).
		if d := editDistance(k, n); d < bestD || (d == bestD && best != "" && k != "" && best[0] != k[0] && n[0] == k[0]) {
			best, bestD = n, d
		}
	}
	return best
}

// editDistance is the optimal-string-alignment distance between a and b:
// insertions, deletions, substitutions and swaps of neighbours, each 1.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// scalar turns YAML values into what kong parses from a command line.
func scalar(v any) any {
	switch x := v.(type) {
	case []any:
		parts := make([]string, len(x))
		for i, p := range x {
			parts[i] = fmt.Sprint(p)
		}
		return strings.Join(parts, ",")
	default:
		return v
	}
}
