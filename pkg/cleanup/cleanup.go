package cleanup

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"replicator/pkg/pgutil"
	"replicator/pkg/state"
)

// Object is one thing the replicator created.
type Object struct {
	Side   string // "source" or "target"
	Kind   string // "replication slot", "publication", "schema", "trigger"
	Name   string
	Exists bool
	Note   string
}

func (o Object) String() string {
	s := fmt.Sprintf("%s %s %s", o.Side, o.Kind, o.Name)
	if o.Note != "" {
		s += " (" + o.Note + ")"
	}
	return s
}

// ErrSlotActive is returned when the slot is in use by a running stream.
var ErrSlotActive = errors.New("the replication slot is in use by a running stream")

// Plan lists what the replicator created on source and target and whether
// each still exists. Names come from the target's bookkeeping when it is
// there, else the defaults.
func Plan(ctx context.Context, source, target *pgx.Conn) ([]Object, error) {
	slot, pub := state.DefaultSlot, state.DefaultPublication
	if st, err := state.Load(ctx, target); err == nil {
		if st.SlotName != "" {
			slot = st.SlotName
		}
		if st.Publication != "" {
			pub = st.Publication
		}
	} else if !errors.Is(err, state.ErrNoMigration) {
		return nil, err
	}
	var objs []Object

	var slotExists, slotActive bool
	err := source.QueryRow(ctx, `SELECT true, active FROM pg_replication_slots WHERE slot_name = $1 AND database = current_database()`, slot).Scan(&slotExists, &slotActive)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("source: read pg_replication_slots: %w", err)
	}
	o := Object{Side: "source", Kind: "replication slot", Name: slot, Exists: slotExists}
	if slotActive {
		o.Note = "active"
	}
	objs = append(objs, o)

	var pubExists bool
	if err := source.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = $1)`, pub).Scan(&pubExists); err != nil {
		return nil, fmt.Errorf("source: read pg_publication: %w", err)
	}
	objs = append(objs, Object{Side: "source", Kind: "publication", Name: pub, Exists: pubExists})

	trig, err := captureTriggers(ctx, source)
	if err != nil {
		return nil, err
	}
	for _, t := range trig {
		objs = append(objs, Object{Side: "source", Kind: "trigger", Name: t, Exists: true})
	}
	// The fallback window's capture on the target (pkg/cutover
	// reverse.go): the same triggers, going with the target's schema.
	ttrig, err := captureTriggers(ctx, target)
	if err != nil {
		return nil, err
	}
	for _, t := range ttrig {
		objs = append(objs, Object{Side: "target", Kind: "trigger", Name: t, Exists: true, Note: "reverse capture"})
	}
	// A rollback fences the target (its fence is recorded on the source,
	// whose schema replicator goes too): cleanup, the end of that attempt,
	// lifts it with the rest.
	var targetFenced bool
	if err := target.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'replicator_fence')`).Scan(&targetFenced); err != nil {
		return nil, fmt.Errorf("target: read pg_namespace: %w", err)
	}
	objs = append(objs, Object{Side: "target", Kind: "fence", Name: "replicator_fence", Exists: targetFenced, Note: "the rollback's fence on the target"})
	for _, side := range []struct {
		name string
		conn *pgx.Conn
	}{{"source", source}, {"target", target}} {
		var exists bool
		if err := side.conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)`, state.Schema).Scan(&exists); err != nil {
			return nil, fmt.Errorf("%s: read pg_namespace: %w", side.name, err)
		}
		objs = append(objs, Object{Side: side.name, Kind: "schema", Name: state.Schema, Exists: exists})
	}
	return objs, nil
}

// captureTriggers lists triggers on application tables whose function lives
// in schema replicator (trigger capture), as "table: trigger".
func captureTriggers(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, `SELECT format('%s: %I', t.tgrelid::regclass, t.tgname)
		FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_namespace n ON n.oid = p.pronamespace
		JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
		WHERE n.nspname = $1 AND cn.nspname <> $1 ORDER BY 1`, state.Schema)
	if err != nil {
		return nil, fmt.Errorf("source: read pg_trigger: %w", err)
	}
	return pgx.CollectRows(rows, pgx.RowTo[string])
}

// Run removes every object of Plan that exists and returns what it
// removed. It refuses (ErrSlotActive) while the slot is active, and
// (ErrBusy) while the source is fenced or a stream runs: see RunWith.
func Run(ctx context.Context, source, target *pgx.Conn) ([]Object, error) {
	return RunWith(ctx, source, target, Options{})
}

func run(ctx context.Context, source, target *pgx.Conn, fenced bool) ([]Object, error) {
	objs, err := Plan(ctx, source, target)
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		if o.Kind == "replication slot" && o.Note == "active" {
			return nil, fmt.Errorf("source replication slot %s: %w: stop `replicator stream`/`run` first, then rerun cleanup", o.Name, ErrSlotActive)
		}
	}
	var done []Object
	for _, o := range objs {
		if !o.Exists {
			continue
		}
		conn := source
		if o.Side == "target" {
			conn = target
		}
		var q string
		switch o.Kind {
		case "replication slot":
			q = fmt.Sprintf("SELECT pg_drop_replication_slot(%s)", pgutil.QuoteLiteral(o.Name))
		case "publication":
			q = "DROP PUBLICATION IF EXISTS " + pgutil.QuoteIdent(o.Name)
		case "schema":
			// CASCADE takes the changelog, the capture functions and the
			// triggers on application tables that call them.
			q = "DROP SCHEMA IF EXISTS " + pgutil.QuoteIdent(o.Name) + " CASCADE"
			if fenced && o.Side == "target" {
				q = keepFenceRecordSQL
				o.Note = "emptied; replicator.cutover kept: it records the fence"
			}
		case "fence":
			q = "DROP SCHEMA IF EXISTS replicator_fence CASCADE"
		default:
			continue // triggers go with the schema's functions
		}
		if _, err := conn.Exec(ctx, q); err != nil {
			return done, fmt.Errorf("%s: drop %s %s: %w", o.Side, o.Kind, o.Name, err)
		}
		done = append(done, o)
	}
	for _, o := range objs {
		if o.Kind == "trigger" {
			done = append(done, o)
		}
	}
	return done, nil
}
