package main

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strings"

	"github.com/alecthomas/kong"
)

// herokuEnvLine is one line of `heroku config --shell` (or `-s`): NAME=value,
// the value possibly quoted, the line possibly prefixed by `export`.
var herokuEnvLine = regexp.MustCompile(`^(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)

// loadHerokuEnv reads an env file as `heroku config -s -a APP > FILE`
// writes it. Its values stand behind the real environment: a flag that
// reads DATABASE_URL or REDIS_URL takes the file's value only when no
// environment variable of that flag is set. Errors name the file and the
// line, never a value.
func loadHerokuEnv(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--heroku-env %s: %w: write it with `heroku config -s -a APP > %s`", path, err, path)
	}
	defer f.Close()
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := herokuEnvLine.FindStringSubmatch(line)
		if m == nil {
			return nil, fmt.Errorf("--heroku-env %s line %d is not NAME=value: pass the output of `heroku config -s -a APP`", path, n)
		}
		vars[m[1]] = unquoteShell(m[2])
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("--heroku-env %s: %w", path, err)
	}
	return vars, nil
}

// unquoteShell undoes the quoting `heroku config -s` applies: a value in
// single quotes (with '\” for a quote inside), or in double quotes.
func unquoteShell(v string) string {
	switch {
	case len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'':
		return strings.ReplaceAll(v[1:len(v)-1], `'\''`, `'`)
	case len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"':
		return strings.NewReplacer(`\"`, `"`, `\\`, `\`, `\$`, `$`).Replace(v[1 : len(v)-1])
	}
	return v
}

// herokuEnvFlag finds --heroku-env in args before kong parses them: its
// values must be known when kong resolves the URL flags.
func herokuEnvFlag(args []string) string {
	for i, a := range args {
		if a == "--" {
			break
		}
		if v, ok := strings.CutPrefix(a, "--heroku-env="); ok {
			return v
		}
		if a == "--heroku-env" && i+1 < len(args) {
			return args[i+1]
		}
	}
	return ""
}

// envSource says what the environment (and the --heroku-env file behind
// it) gives a flag, for the resolvers that stand behind it.
type envSource struct{ file map[string]string }

// set reports whether a real environment variable of flag is set.
func (e *envSource) set(flag *kong.Flag) bool {
	for _, env := range flag.Envs {
		if _, ok := os.LookupEnv(env); ok {
			return true
		}
	}
	return false
}

// fromFile is the --heroku-env file's value for flag, if the real
// environment gives it none.
func (e *envSource) fromFile(flag *kong.Flag) (string, bool) {
	if e == nil || e.set(flag) {
		return "", false
	}
	for _, env := range flag.Envs {
		if v, ok := e.file[env]; ok {
			return v, true
		}
	}
	return "", false
}

// Validate is part of kong.Resolver; the file was checked when read.
func (e *envSource) Validate(*kong.Application) error { return nil }

// Resolve gives a flag the --heroku-env file's value.
func (e *envSource) Resolve(_ *kong.Context, _ *kong.Path, flag *kong.Flag) (any, error) {
	if v, ok := e.fromFile(flag); ok {
		return v, nil
	}
	return nil, nil
}
