-- The row capture function as the version before the function per operation
-- installed it (rowFunctionDDL at commit b1bb6bb, hstore in schema replicator):
-- one function for INSERT, UPDATE and DELETE, part NULL unless a partition.

CREATE OR REPLACE FUNCTION replicator.capture_row() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER
AS $f$
DECLARE
	o "replicator".hstore;
	n "replicator".hstore;
	k "replicator".hstore;
	s pg_catalog.text[];
	r pg_catalog.oid;
	p pg_catalog.oid;
	z pg_catalog.int4; -- never set: RETURN z returns NULL without an expression
BEGIN
	IF COALESCE(pg_catalog.current_setting('replicator.applying', true), '') OPERATOR(pg_catalog.<>) ALL ('{"",off}'::pg_catalog.text[]) OR pg_catalog.current_setting('DateStyle') OPERATOR(pg_catalog.<>) 'ISO, MDY' OR pg_catalog.current_setting('IntervalStyle') OPERATOR(pg_catalog.<>) 'postgres' OR pg_catalog.current_setting('bytea_output') OPERATOR(pg_catalog.<>) 'hex' OR pg_catalog.current_setting('extra_float_digits') OPERATOR(pg_catalog.<>) '1' OR pg_catalog.current_setting('TimeZone') OPERATOR(pg_catalog.<>) ALL (ARRAY['UTC', 'Etc/UTC']) THEN
	IF pg_catalog.current_setting('replicator.applying', true) OPERATOR(pg_catalog.=) 'on' THEN RETURN NULL; END IF;
		s := ARRAY[pg_catalog.current_setting('DateStyle'), pg_catalog.current_setting('IntervalStyle'), pg_catalog.current_setting('bytea_output'), pg_catalog.current_setting('extra_float_digits'), pg_catalog.current_setting('TimeZone')];
		PERFORM pg_catalog.set_config('DateStyle', 'ISO, MDY', true), pg_catalog.set_config('IntervalStyle', 'postgres', true), pg_catalog.set_config('bytea_output', 'hex', true), pg_catalog.set_config('extra_float_digits', '1', true), pg_catalog.set_config('TimeZone', 'UTC', true);
		r := TG_ARGV[0]::pg_catalog.oid;
	p := CASE WHEN TG_RELID OPERATOR(pg_catalog.<>) r THEN TG_RELID END;
	IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
		o := "replicator".hstore(OLD);
		k := CASE WHEN TG_NARGS OPERATOR(pg_catalog.>) 1 AND o OPERATOR("replicator".?&) TG_ARGV[1:] THEN "replicator".slice(o, TG_ARGV[1:]) ELSE o END;
		n := "replicator".hstore(NEW);
		n := CASE WHEN TG_NARGS OPERATOR(pg_catalog.=) 1 OR "replicator".slice(n, TG_ARGV[1:]) OPERATOR("replicator".=) k THEN n OPERATOR("replicator".-) o ELSE n END;
		IF n OPERATOR("replicator".<>) ''::"replicator".hstore THEN
			INSERT INTO replicator.changelog (txid, rel, part, op, key, vals) VALUES (pg_catalog.pg_current_xact_id(), r, p, 'U', k, n);
		END IF;
	ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
		INSERT INTO replicator.changelog (txid, rel, part, op, vals) VALUES (pg_catalog.pg_current_xact_id(), r, p, 'I', "replicator".hstore(NEW));
	ELSE
		o := "replicator".hstore(OLD);
		k := CASE WHEN TG_NARGS OPERATOR(pg_catalog.>) 1 AND o OPERATOR("replicator".?&) TG_ARGV[1:] THEN "replicator".slice(o, TG_ARGV[1:]) ELSE o END;
		INSERT INTO replicator.changelog (txid, rel, part, op, key) VALUES (pg_catalog.pg_current_xact_id(), r, p, 'D', k);
	END IF;
	PERFORM pg_catalog.set_config('DateStyle', s[1], true), pg_catalog.set_config('IntervalStyle', s[2], true), pg_catalog.set_config('bytea_output', s[3], true), pg_catalog.set_config('extra_float_digits', s[4], true), pg_catalog.set_config('TimeZone', s[5], true);
		RETURN z;
	END IF;
	r := TG_ARGV[0]::pg_catalog.oid;
	p := CASE WHEN TG_RELID OPERATOR(pg_catalog.<>) r THEN TG_RELID END;
	IF TG_OP OPERATOR(pg_catalog.=) 'UPDATE' THEN
		o := "replicator".hstore(OLD);
		k := CASE WHEN TG_NARGS OPERATOR(pg_catalog.>) 1 AND o OPERATOR("replicator".?&) TG_ARGV[1:] THEN "replicator".slice(o, TG_ARGV[1:]) ELSE o END;
		n := "replicator".hstore(NEW);
		n := CASE WHEN TG_NARGS OPERATOR(pg_catalog.=) 1 OR "replicator".slice(n, TG_ARGV[1:]) OPERATOR("replicator".=) k THEN n OPERATOR("replicator".-) o ELSE n END;
		IF n OPERATOR("replicator".<>) ''::"replicator".hstore THEN
			INSERT INTO replicator.changelog (txid, rel, part, op, key, vals) VALUES (pg_catalog.pg_current_xact_id(), r, p, 'U', k, n);
		END IF;
	ELSIF TG_OP OPERATOR(pg_catalog.=) 'INSERT' THEN
		INSERT INTO replicator.changelog (txid, rel, part, op, vals) VALUES (pg_catalog.pg_current_xact_id(), r, p, 'I', "replicator".hstore(NEW));
	ELSE
		o := "replicator".hstore(OLD);
		k := CASE WHEN TG_NARGS OPERATOR(pg_catalog.>) 1 AND o OPERATOR("replicator".?&) TG_ARGV[1:] THEN "replicator".slice(o, TG_ARGV[1:]) ELSE o END;
		INSERT INTO replicator.changelog (txid, rel, part, op, key) VALUES (pg_catalog.pg_current_xact_id(), r, p, 'D', k);
	END IF;
	RETURN z;
END $f$;
REVOKE ALL ON FUNCTION replicator.capture_row() FROM PUBLIC;
