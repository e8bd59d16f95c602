package schemachange

import (
	"strings"
	"testing"
)

func users() *Table {
	return &Table{OID: 10, Schema: "public", Name: "users", Kind: "r",
		Columns: []Column{{Num: 1, Name: "id", Type: "bigint", NotNull: true}, {Num: 2, Name: "email", Type: "text"}},
		Indexes: map[string]Index{"users_pkey": {Def: "CREATE UNIQUE INDEX users_pkey ON public.users USING btree (id)", Constraint: "users_pkey"}}}
}

func cat(ts ...*Table) *Catalog {
	c := &Catalog{Tables: map[uint32]*Table{}}
	for _, t := range ts {
		c.Tables[t.OID] = t
	}
	return c
}

// TestDiffClassifies builds the before and after catalogs by hand: each
// kind of change is found once, named, and sorted into applied or refused.
func TestDiffClassifies(t *testing.T) {
	cases := []struct {
		name     string
		change   func(*Table) *Catalog
		kind     Kind
		additive bool
		says     string
	}{
		{"add column", func(u *Table) *Catalog {
			u.Columns = append(u.Columns, Column{Num: 3, Name: "score", Type: "integer", NotNull: true, Default: "7"})
			return cat(u)
		}, AddColumn, true, "column public.users.score was added on the source (integer DEFAULT 7 NOT NULL)"},
		{"drop column", func(u *Table) *Catalog { u.Columns = u.Columns[:1]; return cat(u) },
			DropColumn, false, "column public.users.email was dropped on the source; the target still has it"},
		{"rename column", func(u *Table) *Catalog { u.Columns[1].Name = "mail"; return cat(u) },
			RenameColumn, false, "column public.users.email was renamed to mail on the source"},
		{"type change", func(u *Table) *Catalog { u.Columns[0].Type = "numeric"; return cat(u) },
			AlterColumnType, false, "column public.users.id changed type from bigint to numeric on the source"},
		{"rename table", func(u *Table) *Catalog { u.Name = "User"; return cat(u) },
			RenameTable, false, `table public.users was renamed to public."User" on the source`},
		{"drop table", func(u *Table) *Catalog { return cat() }, DropTable, false, "table public.users was dropped on the source"},
		{"create table", func(u *Table) *Catalog {
			return cat(u, &Table{OID: 11, Schema: "public", Name: "posts", Kind: "r", Indexes: map[string]Index{}})
		}, CreateTable, true, "table public.posts was created on the source"},
		{"create index", func(u *Table) *Catalog {
			u.Indexes["users_email_idx"] = Index{Def: "CREATE INDEX users_email_idx ON public.users USING btree (email)"}
			return cat(u)
		}, CreateIndex, true, "index public.users_email_idx was created on the source"},
		{"drop not null", func(u *Table) *Catalog { u.Columns[0].NotNull = false; return cat(u) },
			DropNotNull, true, "column public.users.id was made nullable on the source"},
		{"set default", func(u *Table) *Catalog { u.Columns[1].Default = "'x'::text"; return cat(u) },
			SetDefault, true, "column public.users.email has the default 'x'::text on the source"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Diff(cat(users()), c.change(users()))
			if len(got) != 1 {
				t.Fatalf("Diff found %d changes, want 1: %v", len(got), got)
			}
			if got[0].Kind != c.kind || got[0].Kind.Additive() != c.additive {
				t.Errorf("kind %q (additive %v), want %q (additive %v)", got[0].Kind, got[0].Kind.Additive(), c.kind, c.additive)
			}
			if !strings.Contains(got[0].String(), c.says) {
				t.Errorf("change reads %q, want it to say %q", got[0], c.says)
			}
			if !c.additive && got[0].Fix == "" {
				t.Errorf("refused change %q has no fix", got[0])
			}
		})
	}
	if got := Diff(cat(users()), cat(users())); len(got) != 0 {
		t.Errorf("the same catalog differs: %v", got)
	}
}

// TestPartitionChanges: a partition attached is applied, one detached or
// with other bounds is refused.
func TestPartitionChanges(t *testing.T) {
	parent := &Table{OID: 20, Schema: "public", Name: "events", Kind: "p", PartKey: "RANGE (k)", Indexes: map[string]Index{}}
	part := func(p uint32, bound string) *Table {
		return &Table{OID: 21, Schema: "public", Name: "events_2", Kind: "r", Parent: p, Bound: bound, Indexes: map[string]Index{}}
	}
	for _, c := range []struct {
		old, new *Table
		kind     Kind
	}{
		{part(0, ""), part(20, "FOR VALUES FROM (100) TO (200)"), AttachPartition},
		{part(20, "FOR VALUES FROM (100) TO (200)"), part(0, ""), DetachPartition},
		{part(20, "FOR VALUES FROM (100) TO (200)"), part(20, "FOR VALUES FROM (100) TO (300)"), AlterPartition},
	} {
		got := Diff(cat(parent, c.old), cat(parent, c.new))
		if len(got) != 1 || got[0].Kind != c.kind {
			t.Errorf("%s → %s: %v, want one %s", c.old.Bound, c.new.Bound, got, c.kind)
		}
	}
	got := Diff(cat(parent), cat(parent, part(20, "FOR VALUES FROM (100) TO (200)")))
	if len(got) != 1 || got[0].Kind != CreateTable || !strings.Contains(got[0].String(), "as a partition FOR VALUES FROM (100) TO (200)") {
		t.Errorf("new partition: %v", got)
	}
}

// TestRefusedMessage is the one line the operator reads.
func TestRefusedMessage(t *testing.T) {
	u := users()
	u.Columns = u.Columns[:1]
	c := Diff(cat(users()), cat(u))[0]
	msg := (&RefusedError{Change: c, Mode: ModeApply}).Error()
	want := "schema change: column public.users.email was dropped on the source; the target still has it: drop it on the target (ALTER TABLE public.users DROP COLUMN email) and restart the stream"
	if !strings.HasPrefix(msg, want) {
		t.Errorf("message\n %s\nwant it to start with\n %s", msg, want)
	}
	add := Change{Kind: AddColumn, Object: "column public.users.score", Detail: "was added on the source (integer)"}
	if msg := (&RefusedError{Change: add, Mode: ModeStop}).Error(); !strings.Contains(msg, "--ddl apply") {
		t.Errorf("--ddl stop message %q does not point at --ddl apply", msg)
	}
	if ident("user") != `"user"` || ident("Mixed") != `"Mixed"` || ident("email_2") != "email_2" {
		t.Error("ident quotes the wrong names")
	}
}

// TestAlignTakesTheSourcesKeys: the target's copy becomes the baseline
// keyed like the source, so only what differs by name shows.
func TestAlignTakesTheSourcesKeys(t *testing.T) {
	src := users()
	tgt := users()
	tgt.OID = 99
	tgt.Columns[1].Num = 7 // a target whose table once had dropped columns
	if got := Diff(Align(cat(tgt), cat(src)), cat(src)); len(got) != 0 {
		t.Errorf("the aligned copy differs: %v", got)
	}
	tgt.Columns = tgt.Columns[:1] // the target lacks email
	got := Diff(Align(cat(tgt), cat(src)), cat(src))
	if len(got) != 1 || got[0].Kind != AddColumn {
		t.Errorf("a column missing on the target: %v, want one add column", got)
	}
}

// An enum's labels added anywhere are made in the source's order with
// BEFORE/AFTER; a label renamed cannot be taken in order and is refused
// with the fix.
func TestDiffEnumLabels(t *testing.T) {
	enum := func(labels ...string) *Catalog {
		c := cat(users())
		c.Objects = map[string]*Object{"type:50": {Kind: ObjEnum, Schema: "public", Name: "mood", Labels: labels, Def: strings.Join(quoteAll(labels), ", ")}}
		return c
	}
	cs := Diff(enum("ok", "sad"), enum("meh", "ok", "happy", "sad", "angry"))
	if len(cs) != 1 || cs[0].Kind != AddEnumValue || !cs[0].Kind.Additive() {
		t.Fatalf("changes %+v, want one additive enum change", cs)
	}
	want := []string{
		`ALTER TYPE "public"."mood" ADD VALUE IF NOT EXISTS 'meh' BEFORE 'ok'`,
		`ALTER TYPE "public"."mood" ADD VALUE IF NOT EXISTS 'happy' AFTER 'ok'`,
		`ALTER TYPE "public"."mood" ADD VALUE IF NOT EXISTS 'angry' AFTER 'sad'`,
	}
	if strings.Join(cs[0].Stmts, "\n") != strings.Join(want, "\n") {
		t.Errorf("statements:\n%s\nwant:\n%s", strings.Join(cs[0].Stmts, "\n"), strings.Join(want, "\n"))
	}
	cs = Diff(enum("ok", "sad"), enum("ok", "unhappy"))
	if len(cs) != 1 || cs[0].Kind.Additive() {
		t.Fatalf("changes %+v, want one refused enum change", cs)
	}
	msg := (&RefusedError{Change: cs[0], Mode: ModeApply}).Error()
	if !strings.Contains(msg, "type public.mood had labels renamed or reordered on the source") || !strings.Contains(msg, "RENAME VALUE") {
		t.Errorf("message %q does not name the enum and the fix", msg)
	}
}
