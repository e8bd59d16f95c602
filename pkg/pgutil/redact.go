package pgutil

import (
	"net/url"
	"regexp"
	"strings"
)

// Redact returns a URL or libpq keyword/value connection string with the
// password replaced by "xxxxx". Anything it cannot parse is returned with
// every "password=" value and "user:pass@" part masked.
func Redact(conn string) string {
	if u, err := url.Parse(conn); err == nil && u.Scheme != "" && u.Host != "" {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
		}
		q := u.Query()
		for _, k := range []string{"password", "sslpassword"} {
			if q.Has(k) {
				q.Set(k, "xxxxx")
			}
		}
		u.RawQuery = q.Encode()
		return u.String()
	}
	return RedactText(conn)
}

var (
	// A password= value: quoted as libpq quotes it, quoted inside an SQL
	// string literal (the quotes doubled, as a function body calling
	// dblink_connect('… password=''…'' …') holds it), or up to the next
	// space. An unquoted value is masked to the space, closing quote and
	// parenthesis of a surrounding literal included: a password may hold
	// a quote, and a mask too wide costs only readability.
	kvPassword = regexp.MustCompile(`(?i)((?:ssl)?password\s*=\s*)(''(?:[^']|'''')*''|'(?:[^'\\]|\\.)*'|\S+)`)
	// A password as a foreign data wrapper's option: OPTIONS (password
	// '…'), the quotes doubled inside a literal too.
	optPassword = regexp.MustCompile(`(?i)(\bpassword\s+)(''(?:[^']|'''')*''|'(?:[^']|'')*')`)
	// The userinfo of a URL: scheme://user:password@. The password runs
	// to the last @ before a space or slash, as a password holding an
	// unescaped @ would.
	urlUserinfo = regexp.MustCompile(`(?i)([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^\s/]*@`)
)

// RedactText masks passwords inside free text that may hold connection
// strings: an error message from a driver, or an object's definition (a
// function body calling dblink_connect, a view over a URL).
func RedactText(s string) string {
	s = kvPassword.ReplaceAllString(s, "${1}xxxxx")
	s = optPassword.ReplaceAllString(s, "${1}'xxxxx'")
	return urlUserinfo.ReplaceAllString(s, "${1}xxxxx@")
}

// HoldsCredential reports whether s holds a password RedactText masks.
func HoldsCredential(s string) bool { return RedactText(s) != s }

// Secrets extracts the passwords of the given connection strings, so that
// output can be scrubbed of them even where they appear without context.
func Secrets(conns ...string) []string {
	var out []string
	for _, c := range conns {
		if c == "" {
			continue
		}
		if u, err := url.Parse(c); err == nil && u.User != nil {
			if p, ok := u.User.Password(); ok && p != "" {
				out = append(out, p)
			}
			if p := u.Query().Get("password"); p != "" {
				out = append(out, p)
			}
			continue
		}
		for _, m := range kvPassword.FindAllStringSubmatch(c, -1) {
			out = append(out, strings.Trim(m[2], "'"))
		}
	}
	return out
}

// Scrub replaces every occurrence of each secret in s.
func Scrub(s string, secrets []string) string {
	for _, sec := range secrets {
		if len(sec) >= 3 {
			s = strings.ReplaceAll(s, sec, "xxxxx")
		}
	}
	return RedactText(s)
}
