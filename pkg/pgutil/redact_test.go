package pgutil

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	cases := []string{
		"postgres://app:hunter22@db.example.com:5432/app?sslmode=require",
		"postgres://app:hunter22@db.example.com/app?password=hunter22",
		"host=db user=app password=hunter22 dbname=app",
		"host=db user=app password='hunter22' dbname=app",
		"redis://:hunter22@cache:6379/0",
		"rediss://default:hunter22@cache:6379",
	}
	for _, c := range cases {
		got := Redact(c)
		if strings.Contains(got, "hunter22") {
			t.Errorf("Redact(%q) = %q still holds the password", c, got)
		}
		if !strings.Contains(got, "xxxxx") {
			t.Errorf("Redact(%q) = %q shows no mask", c, got)
		}
	}
	msg := "failed to connect to `user=app database=app`: postgres://app:hunter22@h/app"
	if got := Scrub(msg, Secrets(cases[0])); strings.Contains(got, "hunter22") {
		t.Errorf("Scrub left the password: %q", got)
	}
}

// Objects' definitions (function bodies, views) quote connection strings
// inside SQL literals: no fragment of the password may be left, and text
// that holds none is left as it is.
func TestRedactTextDefinitions(t *testing.T) {
	cases := []string{
		"PERFORM dblink_connect('host=h user=app password=s3cr3t dbname=app');",
		"PERFORM dblink_connect('c', 'password=s3cr3t');",
		"PERFORM dblink_connect('host=h password = ''s3 cr3t'' dbname=app');",
		"PERFORM dblink_connect('host=h password=''it''''s3cr3t'' dbname=app');",
		"PERFORM dblink_connect('host=h PASSWORD=\"s3cr3t\"');",
		"SELECT * FROM dblink('postgres://app:s3cr3t@db.example.com:5432/app', 'SELECT 1') AS t(x int)",
		"SELECT 'postgresql://app:s3c@r3t@db/app'::text",
		"SELECT 'POSTGRES://app:s3cr3t@db/app'::text",
		"SELECT 'redis://:s3cr3t@cache:6379/0'::text",
		"EXECUTE 'CREATE USER MAPPING FOR app SERVER s OPTIONS (user ''app'', password ''s3cr3t'')';",
		"CREATE USER MAPPING FOR app SERVER s OPTIONS (user 'app', password 's3cr3t')",
		"sslpassword=s3cr3t",
	}
	for _, c := range cases {
		got := RedactText(c)
		for _, frag := range []string{"s3", "cr3t", "r3t"} {
			if strings.Contains(got, frag) {
				t.Errorf("RedactText(%q) = %q still holds %q of the password", c, got, frag)
			}
		}
		if !strings.Contains(got, "xxxxx") || !HoldsCredential(c) {
			t.Errorf("RedactText(%q) = %q: no mask, or HoldsCredential false", c, got)
		}
	}
	for _, c := range []string{
		"SELECT 'https://example.com/a@b'::text",
		"SELECT x FROM users WHERE password_hash = crypt($1, password_hash)",
		"CREATE VIEW v AS SELECT id, 'mailto:a@b' FROM t",
		"BEGIN RETURN a + b; END",
	} {
		if got := RedactText(c); got != c || HoldsCredential(c) {
			t.Errorf("RedactText(%q) = %q: it holds no password and must be left as it is", c, got)
		}
	}
}
