package audit

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Each source extension is listed with whether RDS for PostgreSQL 15
// offers it and at which version; one whose version the table does not
// know says to check `SHOW rds.extensions`, and one RDS does not offer
// says so with the fix.
func TestExtensionsWithRDSVersions(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	pg.Exec(t, db, `CREATE EXTENSION hstore; CREATE EXTENSION pg_trgm; CREATE EXTENSION file_fdw`)
	rep, err := Postgres(ctx, pg.Connect(t, db), Options{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Extension{}
	for _, e := range rep.Extensions {
		got[e.Name] = e
	}
	// The source is PostgreSQL 15 too: its contrib versions are the ones
	// RDS for PostgreSQL 15 offers.
	for _, name := range []string{"hstore", "pg_trgm", "plpgsql"} {
		e := got[name]
		if !e.OnRDS || e.RDSVersion == "" || e.RDSVersion != e.Version || !strings.Contains(e.RDSNote, "at "+e.Version+", the source's version") {
			t.Errorf("%s: %+v, want offered by RDS at the source's version", name, e)
		}
	}
	if e := got["file_fdw"]; e.OnRDS || !strings.Contains(e.RDSNote, "NOT offered by RDS") || e.Remediation == "" {
		t.Errorf("file_fdw: %+v, want not offered, with what to do", e)
	}

	var md bytes.Buffer
	if err := (&Report{Postgres: rep}).Write(&md, "markdown"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"hstore 1.8: offered by RDS for PostgreSQL 15 at 1.8", "file_fdw 1.0: NOT offered by RDS"} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown lacks %q:\n%s", want, md.String())
		}
	}

	// Versions this table does not hold are never guessed.
	for _, e := range []Extension{{Name: "postgis", Version: "3.4.0"}, {Name: "vector", Version: "0.7.0"}} {
		e.RDSVersion, e.OnRDS = rdsExtensions[e.Name]
		note := rdsVersionNote(e)
		if !e.OnRDS || e.RDSVersion != "" || !strings.Contains(note, "check `SHOW rds.extensions`") || !strings.Contains(note, RDSExtensionsPage) {
			t.Errorf("%s: %q, want offered, version unknown, check SHOW rds.extensions", e.Name, note)
		}
	}
	if n := rdsVersionNote(Extension{Name: "citext", Version: "1.4", OnRDS: true, RDSVersion: "1.6"}); !strings.Contains(n, "at 1.6 (the source has 1.4)") {
		t.Errorf("an older source version: %q", n)
	}
}
