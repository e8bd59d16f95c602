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
