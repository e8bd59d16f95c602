package cutover

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// A role that writes through a group role it belongs to is not fenced by
// revoking its own privileges: the fence says so instead of claiming
// success, and the record still undoes exactly what was revoked.
func TestFenceRefusesInheritedWriteAccess(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	group, user := "rw_"+db, "web_"+db
	pg.Exec(t, "postgres", "CREATE ROLE "+group+" NOLOGIN; CREATE ROLE "+user+" LOGIN IN ROLE "+group)
	t.Cleanup(func() {
		pg.Exec(t, db, "DROP OWNED BY "+group+", "+user)
		pg.Exec(t, "postgres", "DROP ROLE "+user+"; DROP ROLE "+group)
	})
	pg.Exec(t, db, `CREATE TABLE items (id int PRIMARY KEY); GRANT INSERT, UPDATE ON items TO `+group+`; GRANT DELETE ON items TO `+user+`;
		CREATE VIEW items_v AS SELECT * FROM items; GRANT INSERT ON items_v TO `+user)
	before := tableGrants(t, db)
	src := pg.Connect(t, db)

	cfg := Config{SourceURL: "x", TargetURL: "y", AppRoles: []string{user}, FenceMethod: FenceRevoke}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	plan, err := planFence(ctx, src, &cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.rec.Revoked) != 2 || plan.rec.Revoked[0].Privilege != "DELETE" || plan.rec.Revoked[1].Table != "items_v" {
		t.Fatalf("plan revokes %+v, want only %s's DELETE on items and INSERT on the view", plan.rec.Revoked, user)
	}
	_, err = applyFence(ctx, src, &plan.rec)
	if err == nil || !strings.Contains(err.Error(), user+" on public.items") || !strings.Contains(err.Error(), "--app-roles") {
		t.Fatalf("fence through a group role: %v, want an incomplete-fence error naming the role and table", err)
	}
	if _, _, _, err := undoFence(ctx, src, &plan.rec); err != nil {
		t.Fatal(err)
	}
	if g := tableGrants(t, db); !slices.Equal(g, before) {
		t.Errorf("undo did not restore the grants: %v → %v", before, g)
	}

	// By default the group's grants are found and fenced too.
	cfg.AppRoles = nil
	if plan, err = planFence(ctx, src, &cfg); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(plan.rec.Roles, []string{group, user}) {
		t.Fatalf("default roles %v, want %s and %s", plan.rec.Roles, group, user)
	}
	if _, err := applyFence(ctx, src, &plan.rec); err != nil {
		t.Fatalf("default fence: %v", err)
	}
	if _, _, _, err := undoFence(ctx, src, &plan.rec); err != nil {
		t.Fatal(err)
	}
	if g := tableGrants(t, db); !slices.Equal(g, before) {
		t.Errorf("undo did not restore the grants: %v → %v", before, g)
	}
}

// The fence takes write access to the app's tables and the views and
// foreign tables it writes through, never to an extension's own tables or
// the replicator's schema (pgcatalog's user relations).
func TestFenceCoversTheAppsRelationsOnly(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	user := "app_" + db
	pg.Exec(t, "postgres", "CREATE ROLE "+user+" LOGIN")
	t.Cleanup(func() {
		pg.Exec(t, db, "DROP OWNED BY "+user)
		pg.Exec(t, "postgres", "DROP ROLE "+user)
	})
	pg.Exec(t, db, `CREATE EXTENSION hstore; CREATE TABLE items (id int); CREATE VIEW items_v AS SELECT * FROM items;
		CREATE TABLE ext_tab (id int); ALTER EXTENSION hstore ADD TABLE ext_tab;
		CREATE SCHEMA replicator; CREATE TABLE replicator.own (id int);
		GRANT INSERT ON items, items_v, ext_tab, replicator.own TO `+user)
	cfg := Config{SourceURL: "x", TargetURL: "y", AppRoles: []string{user}, FenceMethod: FenceRevoke}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	plan, err := planFence(ctx, pg.Connect(t, db), &cfg)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, g := range plan.rec.Revoked {
		got = append(got, g.Schema+"."+g.Table+" "+g.Privilege)
	}
	if want := []string{"public.items INSERT", "public.items_v INSERT"}; !slices.Equal(got, want) {
		t.Errorf("the fence revokes %v, want %v", got, want)
	}
}
