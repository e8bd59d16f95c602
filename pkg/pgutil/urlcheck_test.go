package pgutil

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// fragments are every 3-character piece of a password: none may appear in
// a message.
func fragments(pw string) []string {
	var out []string
	for i := 0; i+3 <= len(pw); i++ {
		out = append(out, pw[i:i+3])
	}
	return out
}

// A password with unencoded reserved characters gets one line that says how
// to percent-encode it and shows no part of the password.
func TestPasswordNeedsPercentEncoding(t *testing.T) {
	for _, pw := range []string{"Qz9@Xk7Vw", "Qz9@Xk7/Vw", "Qz9/Xk7:Vw@", "Qz9%Xk7Vw", "Qz9 Xk7/Vw"} {
		conn := "postgres://app:" + pw + "@db.example.com:5432/shop?sslmode=require"
		_, err := ParseConfig(conn, "source")
		if err == nil {
			t.Errorf("password %q: parsed without complaint (the driver read another host or password)", pw)
			continue
		}
		msg := err.Error()
		if !errors.Is(err, ErrPasswordEncoding) || !strings.Contains(msg, "percent-encode") || !strings.Contains(msg, "%40") {
			t.Errorf("password %q: message does not say how to percent-encode: %s", pw, msg)
		}
		if !strings.Contains(msg, "source db.example.com:5432") {
			t.Errorf("password %q: message does not name the side and host: %s", pw, msg)
		}
		if strings.Contains(msg, "\n") {
			t.Errorf("password %q: more than one line: %s", pw, msg)
		}
		for _, f := range fragments(pw) {
			if strings.Contains(msg, f) {
				t.Errorf("password %q: message shows the fragment %q: %s", pw, f, msg)
			}
		}
	}
	// Encoded, and characters the driver reads correctly, are accepted.
	for _, conn := range []string{
		"postgres://app:Qz9%40Xk7Vw@db.example.com/shop",
		"postgres://app:Qz9#Xk7?Vw@db.example.com/shop",
		"postgres://app:plain@db.example.com/shop?sslrootcert=",
	} {
		if _, err := ParseConfig(conn, "source"); err != nil {
			t.Errorf("%s: %v", Redact(conn), err)
		}
	}
}

// A missing or unreadable CA file is named as such, with where the RDS CA
// bundle comes from, not as a malformed URL.
func TestMissingCAFile(t *testing.T) {
	dir := t.TempDir()
	unreadable := filepath.Join(dir, "locked.pem")
	os.WriteFile(unreadable, []byte("x"), 0o000)
	cases := map[string]string{
		filepath.Join(dir, "global-bundle.pem"): "does not exist",
	}
	if os.Geteuid() != 0 { // root reads any file
		cases[unreadable] = "is not readable"
	}
	for path, want := range cases {
		conn := "postgres://app:Sekr1tPw@rds.example.com:5432/shop?sslmode=verify-full&sslrootcert=" + path
		_, err := ParseConfig(conn, "target")
		if err == nil {
			t.Fatalf("%s: parsed without complaint", path)
		}
		msg := err.Error()
		for _, w := range []string{"target", "sslrootcert", path, want, RDSCABundleURL} {
			if !strings.Contains(msg, w) {
				t.Errorf("message does not name %q: %s", w, msg)
			}
		}
		if strings.Contains(msg, "malformed") || strings.Contains(msg, "Sekr1tPw") {
			t.Errorf("message: %s", msg)
		}
	}
}
