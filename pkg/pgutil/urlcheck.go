package pgutil

import (
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"strings"
)

// RDSCABundleURL is where AWS publishes the CA bundle that RDS server
// certificates chain to (all regions).
const RDSCABundleURL = "https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem"

// percentEncodeFix is the one-line fix for a password with reserved
// characters. It names the characters, never the password.
const percentEncodeFix = "percent-encode the password in the URL (@ as %40, : as %3A, / as %2F, ? as %3F, # as %23, % as %25, space as %20), " +
	`e.g. python3 -c 'import sys,urllib.parse;print(urllib.parse.quote(sys.argv[1],safe=""))' 'PASSWORD'`

// urlPassword returns the raw password text of a postgres:// URL, taken
// between the first ':' of the user part and the last '@' (a host never
// holds an '@'), and the host part that follows it. ok is false when the
// string is not such a URL or has no password.
func urlPassword(conn string) (pw, host string, ok bool) {
	rest, found := cutScheme(conn)
	if !found {
		return "", "", false
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", "", false
	}
	colon := strings.IndexByte(rest[:at], ':')
	if colon < 0 {
		return "", "", false
	}
	host = rest[at+1:]
	if i := strings.IndexAny(host, "/?"); i >= 0 {
		host = host[:i]
	}
	return rest[colon+1 : at], host, true
}

func cutScheme(conn string) (string, bool) {
	for _, scheme := range []string{"postgres://", "postgresql://"} {
		if len(conn) >= len(scheme) && strings.EqualFold(conn[:len(scheme)], scheme) {
			return conn[len(scheme):], true
		}
	}
	return "", false
}

// needsPercentEncoding reports whether a URL password holds characters that
// a URL parser splits on or cannot decode.
func needsPercentEncoding(pw string) bool {
	if strings.ContainsAny(pw, "@:/?#[] ") {
		return true
	}
	_, err := url.PathUnescape(pw)
	return err != nil
}

// badPassword is the error for a URL whose password must be percent-encoded,
// or nil. parsedPassword is the password the driver read (when it parsed
// the URL at all): the driver splits at the first '@' and '/', so a
// password with those unencoded comes out cut short, and the rest is taken
// for host and database. Passwords with '#' or '?' that the driver reads
// whole are left alone.
func badPassword(conn, side string, parseErr error, parsedPassword string) error {
	pw, host, ok := urlPassword(conn)
	if !ok || !needsPercentEncoding(pw) {
		return nil
	}
	if parseErr == nil {
		if whole, err := url.PathUnescape(pw); err == nil && whole == parsedPassword {
			return nil
		}
	}
	if host == "" {
		host = "(host not readable)"
	}
	return &ConnError{Side: side, Where: host,
		Reason: fmt.Sprintf("the password in the %s URL has characters that must be percent-encoded (password not shown)", side),
		Fix:    percentEncodeFix, Err: ErrPasswordEncoding}
}

// ErrPasswordEncoding is the cause of a ConnError for a URL password that
// must be percent-encoded.
var ErrPasswordEncoding = errors.New("password must be percent-encoded")

// fileError names a certificate or key file from the URL that cannot be
// read, or returns nil when err is not about such a file.
func fileError(err error, connString, side string) error {
	var pe *fs.PathError
	if !errors.As(err, &pe) {
		return nil
	}
	param := "sslrootcert"
	for _, p := range []string{"sslcert", "sslkey"} {
		if v := urlParam(connString, p); v != "" && v == pe.Path {
			param = p
		}
	}
	what := "cannot be read"
	switch {
	case errors.Is(pe.Err, fs.ErrNotExist):
		what = "does not exist"
	case errors.Is(pe.Err, fs.ErrPermission):
		what = "is not readable by this user"
	}
	e := &ConnError{Side: side, Where: RedactText(hostOf(connString)),
		Reason: fmt.Sprintf("the %s file %s named in the %s URL %s", param, pe.Path, side, what), Err: err}
	if param == "sslrootcert" {
		e.Fix = "give the path of a readable CA bundle in sslrootcert=; for RDS download it from " + RDSCABundleURL +
			" (curl -o global-bundle.pem " + RDSCABundleURL + ")"
	} else {
		e.Fix = fmt.Sprintf("give the path of a readable file in %s=", param)
	}
	return e
}

// urlParam is a query parameter of a URL connection string, "" when absent
// or when the string is not a URL.
func urlParam(conn, name string) string {
	i := strings.IndexByte(conn, '?')
	if i < 0 {
		return ""
	}
	q, err := url.ParseQuery(conn[i+1:])
	if err != nil {
		return ""
	}
	return q.Get(name)
}

// hostOf is the host:port/db part of a URL for messages, without the user
// part; for a keyword/value string it is the redacted string.
func hostOf(conn string) string {
	rest, ok := cutScheme(conn)
	if !ok {
		return Redact(conn)
	}
	if at := strings.LastIndex(rest, "@"); at >= 0 {
		rest = rest[at+1:]
	}
	if i := strings.IndexByte(rest, '?'); i >= 0 {
		rest = rest[:i]
	}
	return rest
}
