package audit

// rdsExtensions are the extensions RDS for PostgreSQL 15 offers, with the
// version it offers where this table knows it ("" where it does not: the
// report then says to check `SHOW rds.extensions` and
// pg_available_extensions on the instance rather than guess a number).
//
// Names: AWS, "Extension versions for Amazon RDS for PostgreSQL",
// https://docs.aws.amazon.com/AmazonRDS/latest/PostgreSQLReleaseNotes/postgresql-extensions.html,
// its PostgreSQL 15 section, looked up 2026-12-03.
//
// Versions: only for the modules that ship with PostgreSQL itself
// (contrib, plpgsql), whose version is fixed by the major version: the
// default_version of their control files in PostgreSQL 15 (read from a
// 15.20 installation, 2026-12-03; RDS builds the same sources). The
// versions of third-party extensions (PostGIS, pg_cron, pgvector, ...)
// change with RDS minor releases and could not be read from that page
// here, so they are left unknown rather than guessed.
var rdsExtensions = map[string]string{
	// Shipped with PostgreSQL 15.
	"amcheck": "1.3", "autoinc": "1.0", "bloom": "1.0", "btree_gin": "1.3", "btree_gist": "1.7",
	"citext": "1.6", "cube": "1.5", "dblink": "1.2", "dict_int": "1.0", "dict_xsyn": "1.0",
	"earthdistance": "1.1", "fuzzystrmatch": "1.1", "hstore": "1.8", "insert_username": "1.0",
	"intagg": "1.1", "intarray": "1.5", "isn": "1.2", "lo": "1.1", "ltree": "1.2", "moddatetime": "1.0",
	"old_snapshot": "1.0", "pg_buffercache": "1.3", "pg_freespacemap": "1.2", "pg_prewarm": "1.2",
	"pg_stat_statements": "1.10", "pg_trgm": "1.6", "pg_visibility": "1.2", "pgcrypto": "1.3",
	"pgrowlocks": "1.2", "pgstattuple": "1.5", "plpgsql": "1.0", "postgres_fdw": "1.1", "refint": "1.0",
	"seg": "1.4", "sslinfo": "1.2", "tablefunc": "1.0", "tcn": "1.0", "tsm_system_rows": "1.0",
	"tsm_system_time": "1.0", "unaccent": "1.1", "uuid-ossp": "1.1",

	// Shipped with PostgreSQL, but their version was not checked here
	// (their languages are not in the installation read).
	"bool_plperl": "", "hstore_plperl": "", "jsonb_plperl": "", "plperl": "", "pltcl": "",

	// Third-party or AWS's own: offered, version unknown here.
	"address_standardizer": "", "address_standardizer_data_us": "", "aws_commons": "", "aws_lambda": "",
	"aws_s3": "", "h3": "", "h3_postgis": "", "hll": "", "hypopg": "", "ip4r": "", "log_fdw": "",
	"mysql_fdw": "", "oracle_fdw": "", "orafce": "", "pg_bigm": "", "pg_cron": "", "pg_hint_plan": "",
	"pg_partman": "", "pg_proctab": "", "pg_repack": "", "pg_similarity": "", "pg_tle": "", "pgaudit": "",
	"pglogical": "", "pgrouting": "", "pgtap": "", "plprofiler": "", "plrust": "", "plv8": "", "postgis": "",
	"postgis_raster": "", "postgis_tiger_geocoder": "", "postgis_topology": "", "prefix": "", "rdkit": "",
	"tds_fdw": "", "vector": "",
}

// rdsVersionNote says, for a report, at which version RDS for PostgreSQL
// 15 offers an extension the source has at version source.
func rdsVersionNote(e Extension) string {
	switch {
	case !e.OnRDS:
		return "NOT offered by RDS for PostgreSQL 15: " + e.Remediation
	case e.RDSVersion == "":
		return "offered by RDS for PostgreSQL 15, version not in this tool's table: check `SHOW rds.extensions` and `SELECT default_version FROM pg_available_extensions WHERE name = '" + e.Name + "'` on the instance (" + RDSExtensionsPage + ")"
	case e.RDSVersion == e.Version:
		return "offered by RDS for PostgreSQL 15 at " + e.RDSVersion + ", the source's version"
	default:
		return "offered by RDS for PostgreSQL 15 at " + e.RDSVersion + " (the source has " + e.Version + "): after CREATE EXTENSION on the target, check that what uses it works at " + e.RDSVersion
	}
}
