package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/alecthomas/kong"
)

// foreignTools are the other programs whose commands messages quote in
// full; a flag after one of them in the same clause is that tool's.
var foreignTools = []string{"heroku ", "aws ", "pg_dump", "pg_restore", "psql ", "curl ", "python3 ", "terraform "}

// foreignFlag reports whether the flag at offset i of s belongs to a
// command of another tool quoted in the same clause (since the last ": ",
// ". ", ";" or line break).
func foreignFlag(s string, i int) bool {
	clause := s[:i]
	for _, sep := range []string{": ", ". ", ";", "\n"} {
		if j := strings.LastIndex(clause, sep); j >= 0 {
			clause = clause[j+len(sep):]
		}
	}
	for _, tool := range foreignTools {
		if strings.Contains(clause, tool) {
			return true
		}
	}
	return false
}

// TestHintsNameExistingFlags reads every string literal in the non-test Go
// files of cmd/ and pkg/ and checks that each --flag it names is a flag of
// the command line (of any command), so that no hint sends a user to a flag
// that does not exist.
func TestHintsNameExistingFlags(t *testing.T) {
	var c cli
	p, err := newParser(&c, nil)
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{"help": true}
	var walk func(n *kong.Node)
	walk = func(n *kong.Node) {
		for _, f := range n.Flags {
			known[f.Name] = true
			if f.Tag != nil && f.Tag.Negatable != "" {
				known["no-"+f.Name] = true
			}
		}
		for _, ch := range n.Children {
			walk(ch)
		}
	}
	walk(p.Model.Node)

	flagRe := regexp.MustCompile(`(?:^|[\s"'(\x60\[,])--([a-z][a-z0-9-]*[a-z0-9])`)
	var bad []string
	for _, root := range []string{".", "../../pkg"} {
		err := filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				lit, ok := n.(*ast.BasicLit)
				if !ok || lit.Kind != token.STRING {
					return true
				}
				s, err := strconv.Unquote(lit.Value)
				if err != nil {
					return true
				}
				if strings.HasPrefix(s, "--") {
					return true // an argument built for another program (pg_dump, pg_restore)
				}
				for _, m := range flagRe.FindAllStringSubmatchIndex(s, -1) {
					name := s[m[2]:m[3]]
					if !known[name] && !foreignFlag(s, m[2]) {
						bad = append(bad, fset.Position(lit.Pos()).String()+": --"+name)
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	sort.Strings(bad)
	for _, b := range bad {
		t.Errorf("names a flag the command line does not have: %s", b)
	}
}
