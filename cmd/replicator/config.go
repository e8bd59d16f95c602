package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/alecthomas/kong"
	"go.yaml.in/yaml/v3"
)

// yamlLoader reads the --config file. Keys are flag names; a key may also be
// nested under its command ("redis: {sync: {mode: scan}}") to apply to that
// command alone. Command-line flags win over environment variables, which
// win over the file.
func yamlLoader(r io.Reader) (kong.Resolver, error) {
	config := map[string]any{}
	if err := yaml.NewDecoder(r).Decode(&config); err != nil && !errors.Is(err, io.EOF) {
		// yaml.v3 puts each problem on a line of its own; the error is one line.
		msg := strings.Join(strings.Fields(err.Error()), " ")
		return nil, fmt.Errorf("config file is not valid YAML (%s): it must be a map of flag names to values, e.g. `source: postgres://...`", msg)
	}
	return kong.ResolverFunc(func(_ *kong.Context, parent *kong.Path, flag *kong.Flag) (any, error) {
		// kong consults resolvers after the environment; the environment
		// must win over the file, so step aside when it is set.
		for _, env := range flag.Envs {
			if _, set := os.LookupEnv(env); set {
				return nil, nil
			}
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
	}), nil
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
