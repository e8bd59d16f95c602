package pgutil

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgproto3"

	"replicator/internal/testenv"
)

func TestConnectReplication(t *testing.T) {
	ctx := context.Background()
	db := pg.NewDatabase(t)
	// A pgx-only parameter in the URL is not sent to the server.
	conn, err := ConnectReplication(ctx, pg.URL(db)+"&statement_cache_capacity=0", "source")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	sys, err := pglogrepl.IdentifySystem(ctx, conn)
	if err != nil {
		t.Fatalf("IDENTIFY_SYSTEM: %v", err)
	}
	if sys.DBName != db {
		t.Errorf("IDENTIFY_SYSTEM names database %q, want %q", sys.DBName, db)
	}

	for _, c := range []struct{ name, url, reason string }{
		{"no URL", "", "no connection URL"},
		{"malformed URL", "postgres://u:" + testenv.Password + "@host:notaport/db", "malformed connection URL"},
		{"wrong password", pg.URLAs("postgres", testenv.Password+"x", db), "password authentication failed"},
	} {
		_, err := ConnectReplication(ctx, c.url, "source")
		var ce *ConnError
		if !errors.As(err, &ce) || ce.Side != "source" || !strings.Contains(ce.Reason, c.reason) {
			t.Errorf("%s: err = %v, want a source *ConnError saying %q", c.name, err, c.reason)
		}
		if err != nil && strings.Contains(err.Error(), testenv.Password) {
			t.Errorf("%s: the error holds the password: %v", c.name, err)
		}
	}
}

// A literal made by QuoteLiteral, quotes and backslash included, passes
// the replication protocol's grammar (which has no E'…' strings) intact:
// pgoutput finds the publication it names and decodes a change for it.
// (publication_names is itself a list of identifiers, hence QuoteIdent.)
func TestQuoteLiteralInReplicationCommand(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db := pg.NewDatabase(t)
	const pub = `pub 'q' \n`
	pg.Exec(t, db, `CREATE TABLE t (id int PRIMARY KEY); CREATE PUBLICATION `+QuoteIdent(pub)+` FOR TABLE t`)
	conn, err := ConnectReplication(ctx, pg.URL(db), "source")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	slot, err := pglogrepl.CreateReplicationSlot(ctx, conn, "quote_test", "pgoutput",
		pglogrepl.CreateReplicationSlotOptions{Temporary: true, Mode: pglogrepl.LogicalReplication})
	if err != nil {
		t.Fatal(err)
	}
	start, err := pglogrepl.ParseLSN(slot.ConsistentPoint)
	if err != nil {
		t.Fatal(err)
	}
	names := QuoteLiteral(QuoteIdent(pub))
	if err := pglogrepl.StartReplication(ctx, conn, "quote_test", start, pglogrepl.StartReplicationOptions{
		PluginArgs: []string{"proto_version '1'", "publication_names " + names}}); err != nil {
		t.Fatalf("START_REPLICATION with publication_names %s: %v", names, err)
	}
	pg.Exec(t, db, `INSERT INTO t VALUES (1)`)
	for {
		msg, err := conn.ReceiveMessage(ctx)
		if err != nil {
			t.Fatalf("receive: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.ErrorResponse:
			t.Fatalf("the server refused the stream: %s", m.Message)
		case *pgproto3.CopyData:
			if m.Data[0] != pglogrepl.XLogDataByteID {
				continue
			}
			x, err := pglogrepl.ParseXLogData(m.Data[1:])
			if err != nil {
				t.Fatal(err)
			}
			lm, err := pglogrepl.Parse(x.WALData)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := lm.(*pglogrepl.InsertMessage); ok {
				return
			}
		}
	}
}
