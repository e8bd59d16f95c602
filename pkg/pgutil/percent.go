package pgutil

// The percent-encoding check and its one-line fix are shared with the
// Redis side (pkg/redisconn): a password in a redis:// URL breaks on the
// same characters, and the operator should read the same advice.

// PercentEncodeFix is the one-line fix for a URL password with reserved
// characters. It names the characters, never the password.
const PercentEncodeFix = percentEncodeFix

// PasswordNeedsPercentEncoding reports whether pw, the raw password text
// of a URL, holds characters a URL parser splits on or cannot decode.
func PasswordNeedsPercentEncoding(pw string) bool { return needsPercentEncoding(pw) }
