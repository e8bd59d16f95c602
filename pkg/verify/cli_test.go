package verify

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"replicator/internal/testenv"
)

// buildCLI builds the replicator binary once for the CLI tests.
func buildCLI(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "replicator")
	if err := testenv.BuildReplicator(bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

func runCLI(t *testing.T, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var o, e strings.Builder
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %s: %v", bin, err)
	}
	if strings.Contains(o.String()+e.String(), testenv.Password) {
		t.Errorf("the password appears in the output of %q", args)
	}
	return code, o.String(), e.String()
}

// The command-line contract: exit 0 identical, 1 differences, 2 errors;
// text, JSON and Markdown reports; never a credential.
func TestCLIExitCodesAndFormats(t *testing.T) {
	bin := buildCLI(t)
	src, dst := pg.NewDatabase(t), pg.NewDatabase(t)
	ddl := `CREATE TABLE accounts (id int PRIMARY KEY, balance numeric); INSERT INTO accounts SELECT i, i * 10 FROM generate_series(1, 500) i;
		CREATE SEQUENCE ids; SELECT setval('ids', 77);`
	pg.Exec(t, src, ddl)
	pg.Exec(t, dst, ddl)
	args := []string{"verify", "--source", pg.URL(src), "--target", pg.URL(dst), "--log-format", "json"}

	code, out, errOut := runCLI(t, bin, args...)
	if code != 0 || !strings.Contains(out, "replicator verify: IDENTICAL") || !strings.Contains(out, "1 checked, 1 identical, 0 different") {
		t.Fatalf("identical: exit %d\n%s\n%s", code, out, errOut)
	}

	pg.Exec(t, dst, `UPDATE accounts SET balance = 0 WHERE id = 42; SELECT setval('ids', 5)`)
	code, out, _ = runCLI(t, bin, args...)
	if code != 1 || !strings.Contains(out, "DIFFERENCES FOUND") || !strings.Contains(out, "id=42  columns: balance") ||
		!strings.Contains(out, "sequence public.ids: source 77, target 5") {
		t.Fatalf("differences: exit %d\n%s", code, out)
	}

	jsonFile := filepath.Join(t.TempDir(), "report.json")
	if code, _, _ = runCLI(t, bin, append(args, "--format", "json", "--out", jsonFile)...); code != 1 {
		t.Fatalf("json: exit %d", code)
	}
	var rep Report
	b, _ := os.ReadFile(jsonFile)
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, b)
	}
	if rep.TablesDifferent != 1 || rep.SequencesBehind != 1 || len(rep.Tables) != 1 || len(rep.Tables[0].Rows) != 1 || rep.Tables[0].Rows[0].Key != "id=42" {
		t.Errorf("json report: %s", b)
	}
	if strings.Contains(string(b), testenv.Password) {
		t.Errorf("the password appears in the JSON report")
	}

	mdFile := filepath.Join(t.TempDir(), "report.md")
	runCLI(t, bin, append(args, "--format", "markdown", "--out", mdFile)...)
	md, _ := os.ReadFile(mdFile)
	if !strings.Contains(string(md), "## Data verification: DIFFERENCES FOUND") || !strings.Contains(string(md), "| `public.accounts` | different: balance | `id=42` |") {
		t.Errorf("markdown report:\n%s", md)
	}
	for _, want := range []string{"| Tool | replicator ", "| Source | `127.0.0.1:", "/" + src + "` |", "/" + dst + "` |",
		"| Started | ", "| Ended | ", "| Duration | ", "| Position | no stream: the target as it stands |",
		"| Source fenced | no (no cutover recorded on the target) |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("markdown report header lacks %q:\n%s", want, md)
		}
	}

	// A schema difference alone exits 1 too, naming the object and the fix.
	pg.Exec(t, dst, `UPDATE accounts SET balance = 420 WHERE id = 42; SELECT setval('ids', 77)`)
	pg.Exec(t, src, `CREATE INDEX accounts_balance ON accounts (balance)`)
	code, out, _ = runCLI(t, bin, args...)
	if code != 1 || !strings.Contains(out, "public.accounts index accounts_balance: missing on the target") ||
		!strings.Contains(out, "fix:    CREATE INDEX accounts_balance ON public.accounts USING btree (balance)") ||
		!strings.Contains(out, "1 checked, 1 identical, 0 different") {
		t.Errorf("schema difference only: exit %d, want 1 with the index and its fix\n%s", code, out)
	}

	// Errors exit 2 with one line naming the problem, and no password.
	bad := pg.URLAs("postgres", "wrong-"+testenv.Password, dst)
	code, _, errOut = runCLI(t, bin, "verify", "--source", pg.URL(src), "--target", bad)
	if code != 2 || !strings.Contains(errOut, "target") || !strings.Contains(errOut, "password") || strings.Contains(errOut, "wrong-") {
		t.Errorf("bad password: exit %d: %s", code, errOut)
	}
	code, _, errOut = runCLI(t, bin, append(args, "--tables", "nosuch")...)
	if code != 2 || !strings.Contains(errOut, "no table matches --tables nosuch") {
		t.Errorf("unmatched --tables: exit %d: %s", code, errOut)
	}
}
