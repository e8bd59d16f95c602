package snapshot

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/trigger"
)

// tools are the pg_dump and pg_restore binaries used for the schema.
type tools struct {
	pgDump, pgRestore string
	major             int
}

var toolVersion = regexp.MustCompile(`\(PostgreSQL\) (\d+)`)

// findTools locates pg_dump and pg_restore: in dir when given, else the
// newest /usr/lib/postgresql/*/bin (Debian installs several side by side),
// else $PATH.
func findTools(ctx context.Context, dir string) (tools, error) {
	var dirs []string
	if dir != "" {
		dirs = []string{dir}
	} else {
		found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
		sort.Slice(found, func(i, j int) bool { return dirVersion(found[i]) > dirVersion(found[j]) })
		dirs = found
	}
	var t tools
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "pg_dump")); err == nil {
			t.pgDump, t.pgRestore = filepath.Join(d, "pg_dump"), filepath.Join(d, "pg_restore")
			break
		}
	}
	if t.pgDump == "" && dir == "" {
		if p, err := exec.LookPath("pg_dump"); err == nil {
			t.pgDump = p
			t.pgRestore, _ = exec.LookPath("pg_restore")
		}
	}
	if t.pgDump == "" || t.pgRestore == "" {
		return t, fmt.Errorf("pg_dump and pg_restore not found")
	}
	out, err := exec.CommandContext(ctx, t.pgDump, "--version").Output()
	if err != nil {
		return t, fmt.Errorf("%s --version: %w", t.pgDump, err)
	}
	m := toolVersion.FindSubmatch(out)
	if m == nil {
		return t, fmt.Errorf("cannot tell the version of %s from %q", t.pgDump, strings.TrimSpace(string(out)))
	}
	t.major, _ = strconv.Atoi(string(m[1]))
	return t, nil
}

func dirVersion(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

// schemaDump is the source's schema, dumped once (directory format, no
// data) through the exported snapshot, and restored in two parts.
type schemaDump struct {
	dir   string
	tools tools
}

// dumpSchema runs pg_dump for the schema as of the snapshot. The
// replicator's own schema, publications and subscriptions are left out;
// owners and privileges are left out too, because the target's roles are
// not the source's.
func dumpSchema(ctx context.Context, t tools, sourceURL, snapshotName, dir string) (*schemaDump, error) {
	dsn, env := toolConn(sourceURL)
	args := []string{"--format=directory", "--file=" + filepath.Join(dir, "schema"), "--schema-only",
		"--no-owner", "--no-privileges", "--no-publications", "--no-subscriptions", "--no-security-labels",
		"--no-tablespaces", "--exclude-schema=replicator", "--dbname=" + dsn,
		// The catalog session already holds the tables' locks; pg_dump
		// waiting behind an exclusive request queued after them would
		// never end (see lockTables).
		"--lock-wait-timeout=10s"}
	if snapshotName != "" {
		args = append(args, "--snapshot="+snapshotName)
	}
	if err := runTool(ctx, t.pgDump, args, env); err != nil {
		return nil, fmt.Errorf("dump the source schema: %w", err)
	}
	return &schemaDump{dir: filepath.Join(dir, "schema"), tools: t}, nil
}

// restore applies one section ("pre-data" or "post-data") to the target
// with jobs parallel connections (pre-data runs in one transaction). The
// table of contents is filtered first: extensions and schemas that already
// exist on the target are not created again (so `extension "…" already
// exists` cannot stop the run) and their comments, which only their owner
// may set, are left alone.
func (s *schemaDump) restore(ctx context.Context, target *pgx.Conn, targetURL, section string, jobs, memMB int) error {
	list, err := s.filteredList(ctx, target)
	if err != nil {
		return err
	}
	listFile := filepath.Join(filepath.Dir(s.dir), section+".list")
	if err := os.WriteFile(listFile, list, 0o600); err != nil {
		return err
	}
	dsn, env := toolConn(targetURL)
	if memMB > 0 {
		// Index builds sort in memory rather than on disk when they can.
		env = append(env, fmt.Sprintf("PGOPTIONS=-c maintenance_work_mem=%dMB", memMB))
	}
	args := []string{"--section=" + section, "--use-list=" + listFile, "--exit-on-error", "--no-owner", "--no-privileges",
		"--dbname=" + dsn}
	if section == "pre-data" || jobs <= 1 {
		args = append(args, "--single-transaction")
	} else {
		args = append(args, "--jobs="+strconv.Itoa(jobs))
	}
	args = append(args, s.dir)
	if err := runTool(ctx, s.tools.pgRestore, args, env); err != nil {
		return fmt.Errorf("restore the schema's %s section on the target: %w", section, err)
	}
	return nil
}

// filteredList is `pg_restore --list` without the entries for extensions
// and schemas the target already has.
func (s *schemaDump) filteredList(ctx context.Context, target *pgx.Conn) ([]byte, error) {
	out, err := exec.CommandContext(ctx, s.tools.pgRestore, "--list", s.dir).Output()
	if err != nil {
		return nil, fmt.Errorf("read the schema dump's table of contents: %w", err)
	}
	var skip []string
	rows, err := target.Query(ctx, `SELECT 'EXTENSION - ' || extname FROM pg_extension
		UNION ALL SELECT 'COMMENT - EXTENSION ' || extname FROM pg_extension
		UNION ALL SELECT 'SCHEMA - ' || nspname FROM pg_namespace
		UNION ALL SELECT 'COMMENT - SCHEMA ' || nspname FROM pg_namespace`)
	if err != nil {
		return nil, fmt.Errorf("list the target's extensions and schemas: %w", err)
	}
	skip, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list the target's extensions and schemas: %w", err)
	}
	var b bytes.Buffer
	sc := bufio.NewScanner(bytes.NewReader(out))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if tocEntrySkipped(line, skip) {
			b.WriteString(";")
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return b.Bytes(), sc.Err()
}

// tocEntrySkipped matches a TOC line "id; tableoid oid DESC namespace tag
// owner" against "DESC namespace tag" entries; the tag may hold spaces.
func tocEntrySkipped(line string, skip []string) bool {
	if strings.HasPrefix(line, ";") {
		return false
	}
	_, rest, ok := strings.Cut(line, "; ")
	if !ok {
		return false
	}
	// Drop "tableoid oid ".
	for i := 0; i < 2; i++ {
		if _, rest, ok = strings.Cut(rest, " "); !ok {
			return false
		}
	}
	if ourTrigger(rest) {
		return true
	}
	for _, p := range skip {
		// After the tag only the owner may follow, and owners (unlike
		// tags) are taken to hold no space: "SCHEMA - a b owner" is not
		// schema "a".
		if owner, ok := strings.CutPrefix(rest, p+" "); (ok && !strings.Contains(owner, " ")) || rest == p {
			return true
		}
	}
	return false
}

// runTool runs pg_dump or pg_restore; its error output (free of
// passwords: none is on its command line) becomes the error.
func runTool(ctx context.Context, bin string, args, env []string) error {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = append(os.Environ(), env...)
	// The parent-death signal follows the thread that started the child:
	// keep that thread until the child is gone.
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	dieWithParent(cmd)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(pgutil.RedactText(stderr.String()))
		if len(msg) > 2000 {
			msg = msg[:2000] + " …"
		}
		return fmt.Errorf("%s failed (%w): %s", filepath.Base(bin), err, msg)
	}
	return nil
}

// ourTrigger matches the TOC entry ("TRIGGER namespace table trigger
// owner") of a capture trigger that trigger capture installed on the
// source: its function lives in schema replicator, which is not dumped,
// and the target must not capture anything.
func ourTrigger(entry string) bool {
	rest, ok := strings.CutPrefix(entry, "TRIGGER ")
	if !ok {
		return false
	}
	f := strings.Fields(rest)
	for _, name := range trigger.TriggerNames() {
		// The owner may follow the trigger's name, or be empty.
		if n := len(f); n >= 3 && (f[n-1] == name || f[n-2] == name) {
			return true
		}
	}
	return false
}
