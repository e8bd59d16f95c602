package schemachange

import (
	"fmt"
	"strings"

	"replicator/pkg/pgutil"
)

// An object's definition may hold a credential: a function body calling
// dblink_connect('… password=…'), a view over a postgres://user:pass@…
// URL. What the stream runs on the target is the definition itself; what
// it shows (its log, its stop message, replicator.schema_changes, verify's
// report) never carries one. Redacted SQL would be wrong to run, so where
// a statement would be shown the message says the definition holds a
// credential and gives instead a command that copies the object from the
// source to the target, which carries none.

// showSQL is stmt as a message shows it: the statement, or, when it holds
// a credential, the command that copies o from the source instead.
func (o *Object) showSQL(stmt string) string {
	if !pgutil.HoldsCredential(stmt) {
		return stmt
	}
	return "its definition holds a credential, which is not shown: copy it from the source with " + o.copyCommand()
}

// copyCommand is a shell command that creates o on the target as the
// source has it, read from the source's own catalog, with
// REPLICATOR_SOURCE_URL and REPLICATOR_TARGET_URL set to the two URLs.
func (o *Object) copyCommand() string {
	var q string
	switch o.Kind {
	case ObjFunction, ObjProcedure:
		q = fmt.Sprintf(`SELECT pg_get_functiondef(p.oid) || ';' FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace`+
			` WHERE n.nspname = %s AND format('%%I(%%s)', p.proname, pg_get_function_identity_arguments(p.oid)) = %s`,
			pgutil.QuoteLiteral(o.Schema), pgutil.QuoteLiteral(o.Name))
	case ObjView:
		q = fmt.Sprintf(`SELECT %s || pg_get_viewdef(%s::regclass)`,
			pgutil.QuoteLiteral("CREATE OR REPLACE VIEW "+o.qualifiedName()+" AS "), pgutil.QuoteLiteral(o.qualifiedName()))
	case ObjMatview:
		q = fmt.Sprintf(`SELECT %s || pg_get_viewdef(%s::regclass)`,
			pgutil.QuoteLiteral("CREATE MATERIALIZED VIEW IF NOT EXISTS "+o.qualifiedName()+" AS "), pgutil.QuoteLiteral(o.qualifiedName()))
	default:
		return fmt.Sprintf(`pg_dump --schema-only --schema=%s "$REPLICATOR_SOURCE_URL", running its CREATE of %s %s on the target`,
			shellQuote(o.Schema), o.Kind, o.display())
	}
	return fmt.Sprintf(`psql "$REPLICATOR_SOURCE_URL" -XAtc %s | psql "$REPLICATOR_TARGET_URL" -X -v ON_ERROR_STOP=1`, shellQuote(q))
}

// shellQuote quotes s as one word of a POSIX shell.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
