package redisconn

import (
	"strings"
	"testing"
)

// TestParseURLNeverQuotesThePassword: every malformed URL is refused
// with the fix and without any 4-character piece of its password.
func TestParseURLNeverQuotesThePassword(t *testing.T) {
	for _, c := range []struct{ url, pw, want string }{
		{"redis://h:Ab3/dE6fG9@host:6379", "Ab3dE6fG9", "percent-encoded"},
		{"redis://h:Ab3#dE6fG9@host:6379", "Ab3dE6fG9", "percent-encoded"},
		{"redis://h:Ab3?dE6fG9@host:6379", "Ab3dE6fG9", "percent-encoded"},
		{"redis://:Ab3dE6fG9%zz@host:6379", "Ab3dE6fG9", "percent-encoded"},
		{"redis://:Ab3dE6fG9@host:6379/zz", "Ab3dE6fG9", "database number"},
		{"http://:Ab3dE6fG9@host:6379", "Ab3dE6fG9", "must start with redis://"},
		// These parse, into the wrong host, port, database or option.
		{"redis://:1234/5678@host:6379", "12345678", "percent-encode the password"},
		{"redis://:1234#5678@host:6379", "12345678", "percent-encode the password"},
		{"redis://h:1234?5678@host:6379", "12345678", "percent-encode the password"},
		{"rediss://:1234/5678@host:6379/0", "12345678", "percent-encode the password"},
	} {
		_, err := ParseURL("target", c.url)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.url, err, c.want)
			continue
		}
		for i := 0; i+4 <= len(c.pw); i++ {
			if strings.Contains(err.Error(), c.pw[i:i+4]) {
				t.Errorf("%s: error shows %q of the password: %v", c.url, c.pw[i:i+4], err)
			}
		}
	}
	// '@' and ':' unencoded are read right (the host follows the last
	// '@', the password the first ':'): accepted as they are.
	for _, c := range []struct{ url, pw string }{
		{"redis://:Ab@3d:E6@host:6379/0", "Ab@3d:E6"},
		{"redis://h:Ab3d:E6@host:6379", "Ab3d:E6"},
	} {
		o, err := ParseURL("source", c.url)
		if err != nil || o.Password != c.pw || o.Addr != "host:6379" {
			t.Errorf("%s: %+v, %v; want password %q on host:6379", c.url, o, err, c.pw)
		}
	}
	o, err := ParseURL("source", "rediss://h:p%2Fw@host:6380/2")
	if err != nil || o.Username != "h" || o.Password != "p/w" || o.DB != 2 || o.TLSConfig == nil {
		t.Errorf("a good URL: %+v, %v", o, err)
	}
}
