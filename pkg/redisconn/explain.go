package redisconn

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"strings"
	"syscall"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/pgutil"
)

// ConnError is a failed connection to a Redis server, explained. Error is
// one line: role, address, what happened, and the fix.
type ConnError struct {
	Role string // "source", "target"
	Addr string
	// Problem says what happened; Fix what to do about it.
	Problem, Fix string
	Err          error // the cause, for errors.Is/As; its text may be scrubbed
}

func (e *ConnError) Error() string {
	return fmt.Sprintf("%s Redis %s: %s: %s", e.Role, e.Addr, e.Problem, e.Fix)
}

func (e *ConnError) Unwrap() error { return e.Err }

// Explain describes err, returned by the first command on a connection to
// the server o points at, for a user. An error it does not recognise is
// kept, with the password scrubbed from its text. nil stays nil.
func Explain(role string, o *redis.Options, err error) error {
	if err == nil {
		return nil
	}
	e := &ConnError{Role: role, Addr: o.Addr, Err: err}
	msg := err.Error()
	lower := strings.ToLower(msg)
	tlsURL := o.TLSConfig != nil
	var ua x509.UnknownAuthorityError
	var hn x509.HostnameError
	var ci x509.CertificateInvalidError
	var rh tls.RecordHeaderError
	switch {
	case strings.Contains(msg, "WRONGPASS") || strings.Contains(lower, "invalid password") || strings.Contains(lower, "invalid username-password"):
		e.Problem, e.Fix = wrongPass(o)
	case strings.Contains(msg, "NOAUTH"):
		e.Problem = "the server requires a password and the URL has none"
		e.Fix = "put it in the URL: after redis:// (rediss:// for TLS) write :PASSWORD@host:port"
	case strings.Contains(lower, "without any password configured"):
		e.Problem = "the URL has a password but the server requires none"
		e.Fix = "remove the password from the URL, or check that the URL points at the right server"
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Problem = "connection refused: nothing listens on that port"
		e.Fix = "check the host and port in the URL and that the server is running (and reachable from this host)"
	case errors.As(err, &ua):
		e.Problem = "its TLS certificate is signed by an authority this host does not trust"
		e.Fix = "pass --tls-ca FILE with the CA bundle, or --tls-skip-verify for a self-signed certificate (Heroku Redis)"
	case errors.As(err, &hn):
		e.Problem = "its TLS certificate is for another host name"
		e.Fix = "use the host name the certificate names in the URL, or --tls-skip-verify (Heroku Redis)"
	case errors.As(err, &ci) || strings.Contains(lower, "x509:") || strings.Contains(lower, "certificate"):
		e.Problem = "its TLS certificate was not accepted (" + scrub(msg, o) + ")"
		e.Fix = "pass --tls-ca FILE with the CA bundle, or --tls-skip-verify for a self-signed certificate (Heroku Redis)"
	case tlsURL && (errors.As(err, &rh) || errors.Is(err, io.EOF) || timeout(err) || strings.Contains(lower, "first record does not look like a tls handshake")):
		e.Problem = "no TLS handshake: the port does not seem to speak TLS"
		e.Fix = "use redis:// instead of rediss:// if the server has no TLS, or the server's TLS port"
	case !tlsURL && (errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || timeout(err) || strings.Contains(lower, "connection reset")):
		// A TLS port answers a plaintext command by closing the
		// connection, or by waiting for a handshake that never comes.
		e.Problem = "the server closed the connection or did not answer a plain (non-TLS) command"
		e.Fix = "if it requires TLS (Heroku Redis, ElastiCache with in-transit encryption) use rediss:// (and --tls-skip-verify for self-signed certificates); else check the host, port and network"
	case timeout(err):
		e.Problem = "no answer in time"
		e.Fix = "check the host, port and security groups / firewall between this host and the server"
	default:
		e.Problem = scrub(msg, o)
		e.Fix = "check the URL, password and TLS settings"
	}
	return e
}

func wrongPass(o *redis.Options) (problem, fix string) {
	switch o.Username {
	case "h":
		return `the password was refused for user "h" (the part of the URL before the ':')`,
			`Heroku's legacy URLs (h:PASSWORD@host) mean the default user, but Redis 6+ takes "h" for an ACL username: ` +
				`drop the "h", leaving nothing between "//" and the colon (:PASSWORD@host:port after redis:// or rediss://), and check the password`
	case "":
		return "the password was refused (user default)", "check the password in the URL (:PASSWORD@host:port after redis://); a password holding % must have it percent-encoded (% as %25)"
	}
	return fmt.Sprintf("the username %q and password were refused", o.Username),
		"check both in the URL (USER:PASSWORD@host:port after redis://); for the default user leave USER empty"
}

func timeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() || errors.Is(err, os.ErrDeadlineExceeded) || strings.Contains(err.Error(), "deadline exceeded")
}

// scrub removes the password, in every form a URL may carry it, from s.
func scrub(s string, o *redis.Options) string {
	if o.Password == "" {
		return s
	}
	for _, f := range []string{o.Password, url.QueryEscape(o.Password), url.PathEscape(o.Password)} {
		if f != "" {
			s = strings.ReplaceAll(s, f, "xxxxx")
		}
	}
	return s
}

// ParseURL parses a redis:// or rediss:// URL. Its errors never quote the
// URL: the standard parser quotes the text around a mistake, which is
// often a piece of the password.
func ParseURL(role, raw string) (*redis.Options, error) {
	if !strings.HasPrefix(raw, "redis://") && !strings.HasPrefix(raw, "rediss://") {
		return nil, fmt.Errorf("%s Redis URL must start with redis:// or rediss:// (TLS)", role)
	}
	o, err := redis.ParseURL(raw)
	// A '/', '?' or '#' in the password ends the URL's host part early, so
	// the parser reads a piece of the password as host, port, database or
	// option (and may even succeed: "redis://:12/34@host" is port 12,
	// database "34@host"); '@' and ':' are read right, '%' is decoded. So
	// the raw password decides before any other message, which would
	// quote what the parser made of it.
	if pw := passwordOf(raw); pw != "" && pgutil.PasswordNeedsPercentEncoding(pw) {
		whole, uerr := url.PathUnescape(pw)
		if err != nil || uerr != nil || o.Password != whole {
			return nil, fmt.Errorf("%s Redis URL: the password has characters that must be percent-encoded (password not shown): %s", role, pgutil.PercentEncodeFix)
		}
	}
	if err == nil {
		// go-redis dials up to 5 times before it gives up, each attempt
		// waiting out the dial timeout: a rediss:// URL against a plain
		// port took 25 s to be explained. A failed dial is reported at
		// once; what must survive a dropped connection (the follower)
		// retries with its own backoff.
		o.DialerRetries = 1
		return o, nil
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return nil, fmt.Errorf("%s Redis URL cannot be parsed (it is not shown, as it may hold the password): "+
			"if the user or password holds reserved characters, %s", role, pgutil.PercentEncodeFix)
	}
	if strings.Contains(err.Error(), "database number") {
		return nil, fmt.Errorf("%s Redis URL: the path must be a database number (redis://host:port/0) or nothing", role)
	}
	return nil, fmt.Errorf("%s Redis URL: %s", role, scrub(err.Error(), &redis.Options{Password: passwordOf(raw)}))
}

// passwordOf is the password of a URL that may not parse, for scrubbing.
func passwordOf(raw string) string {
	rest := raw[strings.Index(raw, "://")+3:]
	at := strings.LastIndexByte(rest, '@')
	if at < 0 {
		return ""
	}
	if i := strings.IndexByte(rest[:at], ':'); i >= 0 {
		return rest[i+1 : at]
	}
	return rest[:at]
}
