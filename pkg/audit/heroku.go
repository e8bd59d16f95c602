package audit

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// HerokuConfig is the parsed output of `heroku config`: variable names and
// the app, never the values (they are read only to classify a variable).
type HerokuConfig struct {
	App  string
	Vars []HerokuVar
}

// HerokuVar is one config variable.
type HerokuVar struct {
	Name string
	// Kind is "postgres" or "redis" for connection URLs that move to the
	// new endpoints, "heroku" for variables Heroku manages itself, else "".
	Kind string
}

var (
	herokuHeader = regexp.MustCompile(`^===\s+(\S+)\s+Config Vars`)
	herokuLine   = regexp.MustCompile(`^([A-Za-z_][A-Za-z0-9_]*)(?::\s+|=)(.*)$`)
)

// ParseHerokuConfig reads `heroku config`, `heroku config --shell` or
// `heroku config --json` output.
func ParseHerokuConfig(r io.Reader) (*HerokuConfig, error) {
	data, err := io.ReadAll(io.LimitReader(r, 16<<20))
	if err != nil {
		return nil, err
	}
	cfg := &HerokuConfig{}
	if trimmed := strings.TrimSpace(string(data)); strings.HasPrefix(trimmed, "{") {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("heroku config JSON: %w: pass the output of `heroku config --json -a APP`", err)
		}
		for k, v := range m {
			cfg.Vars = append(cfg.Vars, HerokuVar{Name: k, Kind: classify(k, fmt.Sprint(v))})
		}
	} else {
		sc := bufio.NewScanner(strings.NewReader(string(data)))
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if m := herokuHeader.FindStringSubmatch(line); m != nil {
				cfg.App = m[1]
				continue
			}
			if m := herokuLine.FindStringSubmatch(line); m != nil {
				cfg.Vars = append(cfg.Vars, HerokuVar{Name: m[1], Kind: classify(m[1], strings.Trim(m[2], `'"`))})
			}
		}
	}
	if len(cfg.Vars) == 0 {
		return nil, fmt.Errorf("no config variables found: pass the output of `heroku config -a APP` (or --shell, or --json)")
	}
	sort.Slice(cfg.Vars, func(i, j int) bool { return cfg.Vars[i].Name < cfg.Vars[j].Name })
	return cfg, nil
}

func classify(name, value string) string {
	switch {
	case strings.HasPrefix(value, "postgres://") || strings.HasPrefix(value, "postgresql://"):
		return "postgres"
	case strings.HasPrefix(value, "redis://") || strings.HasPrefix(value, "rediss://"):
		return "redis"
	case strings.HasPrefix(name, "HEROKU_") && !strings.HasSuffix(name, "_URL"):
		return "heroku"
	}
	return ""
}

// SSMCommands returns the shell commands that store every variable as an
// SSM SecureString under prefix. Values never appear in them: ordinary
// variables are piped from `heroku config:get` at run time, and database
// and Redis URLs are read from NEW_<NAME> shell variables that the operator
// sets (with `read -rs`) to the RDS and ElastiCache endpoints.
func (c *HerokuConfig) SSMCommands(app, prefix string) []string {
	if app == "" {
		app = c.App
	}
	if app == "" {
		app = "APP"
	}
	if prefix == "" {
		prefix = "/" + app + "/"
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	var out []string
	var news []string
	for _, v := range c.Vars {
		switch v.Kind {
		case "heroku":
			out = append(out, fmt.Sprintf("# %s is managed by Heroku; not moved", v.Name))
			continue
		case "postgres", "redis":
			news = append(news, v.Name)
			out = append(out, fmt.Sprintf(`aws ssm put-parameter --overwrite --type SecureString --name %q --value "$NEW_%s"   # the new %s endpoint`,
				prefix+v.Name, v.Name, map[string]string{"postgres": "RDS", "redis": "ElastiCache"}[v.Kind]))
		default:
			out = append(out, fmt.Sprintf(`aws ssm put-parameter --overwrite --type SecureString --name %q --value "$(heroku config:get %s -a %s)"`,
				prefix+v.Name, v.Name, app))
		}
	}
	if len(news) > 0 {
		pre := []string{"# Set the new endpoints first, without echoing them:"}
		for _, n := range news {
			pre = append(pre, fmt.Sprintf("read -rsp 'new %s: ' NEW_%s; echo", n, n))
		}
		out = append(pre, out...)
	}
	return out
}
