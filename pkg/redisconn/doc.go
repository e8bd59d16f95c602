// Package redisconn turns the errors of opening a Redis connection into
// messages that name what went wrong and the fix, as the Postgres side
// does: a plain redis:// URL against a TLS port, a TLS URL against a plain
// port, a refused password (and Heroku's legacy "h:" user, which Redis 6+
// takes for an ACL username), a refused TCP connection, an untrusted
// certificate. Messages never carry the password or any part of it.
//
// Usage, wherever a connection is first used:
//
//	if _, err := c.Ping(ctx).Result(); err != nil {
//		return redisconn.Explain("target", opts, err)
//	}
package redisconn
