package redisverify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
	"strconv"

	"github.com/redis/go-redis/v9"
)

const page = 1000

// digester accumulates a digest: ordered (a running SHA-256) or unordered
// (XOR of per-member SHA-256), so that member order never matters for
// sets, hashes and sorted sets.
type digester struct {
	ordered hash.Hash
	xor     [32]byte
	n       int64
}

func newDigester() *digester { return &digester{ordered: sha256.New()} }

func (d *digester) add(parts ...string) {
	for _, p := range parts {
		fmt.Fprintf(d.ordered, "%d:", len(p))
		d.ordered.Write([]byte(p))
	}
	d.n++
}

func (d *digester) addUnordered(parts ...string) {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write([]byte(p))
	}
	var s [32]byte
	h.Sum(s[:0])
	for i := range d.xor {
		d.xor[i] ^= s[i]
	}
	d.n++
}

func (d *digester) sum() string {
	d.ordered.Write(d.xor[:])
	return fmt.Sprintf("%d/%s", d.n, hex.EncodeToString(d.ordered.Sum(nil))[:32])
}

func canonScore(s string) string {
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return s
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// valueDigest digests the value of key of type typ. With exact, members
// SCAN returns more than once (possible while the server rehashes) are
// counted once; that costs 32 bytes a member, so it is used only to
// confirm a difference.
func valueDigest(ctx context.Context, c *redis.Client, key, typ string, exact bool) (string, error) {
	d := newDigester()
	var seen map[[32]byte]bool
	if exact {
		seen = map[[32]byte]bool{}
	}
	first := func(id string) bool {
		if seen == nil {
			return true
		}
		h := sha256.Sum256([]byte(id))
		if seen[h] {
			return false
		}
		seen[h] = true
		return true
	}
	switch typ {
	case "string":
		v, err := c.Get(ctx, key).Result()
		if err != nil {
			return "", err
		}
		d.add(v)
	case "list":
		for start := int64(0); ; start += page {
			vs, err := c.LRange(ctx, key, start, start+page-1).Result()
			if err != nil {
				return "", err
			}
			for _, v := range vs {
				d.add(v)
			}
			if len(vs) < page {
				break
			}
		}
	case "set", "hash", "zset":
		var cursor uint64
		for {
			var vs []string
			var err error
			switch typ {
			case "set":
				vs, cursor, err = c.SScan(ctx, key, cursor, "", page).Result()
			case "hash":
				vs, cursor, err = c.HScan(ctx, key, cursor, "", page).Result()
			default:
				vs, cursor, err = c.ZScan(ctx, key, cursor, "", page).Result()
			}
			if err != nil {
				return "", err
			}
			switch typ {
			case "set":
				for _, v := range vs {
					if first(v) {
						d.addUnordered(v)
					}
				}
			case "hash":
				for i := 0; i+1 < len(vs); i += 2 {
					if first(vs[i]) {
						d.addUnordered(vs[i], vs[i+1])
					}
				}
			default:
				for i := 0; i+1 < len(vs); i += 2 {
					if first(vs[i]) {
						d.addUnordered(vs[i], canonScore(vs[i+1]))
					}
				}
			}
			if cursor == 0 {
				break
			}
		}
		// The count comes from the server, not from SCAN's pages.
		n, err := cardinality(ctx, c, key, typ)
		if err != nil {
			return "", err
		}
		d.n = n
	case "stream":
		// Raw XRANGE keeps each entry's fields in order, duplicates included.
		start := "-"
		for {
			reply, err := c.Do(ctx, "XRANGE", key, start, "+", "COUNT", page).Slice()
			if err != nil {
				return "", err
			}
			last := ""
			for _, e := range reply {
				entry, ok := e.([]any)
				if !ok || len(entry) != 2 {
					return "", fmt.Errorf("key %q: unexpected XRANGE reply", key)
				}
				last = fmt.Sprint(entry[0])
				parts := []string{last}
				fields, _ := entry[1].([]any)
				for _, f := range fields {
					parts = append(parts, fmt.Sprint(f))
				}
				d.add(parts...)
			}
			if len(reply) < page {
				break
			}
			start = "(" + last
		}
		info, err := c.XInfoStream(ctx, key).Result()
		if err != nil {
			return "", err
		}
		d.add("meta", strconv.FormatInt(info.Length, 10), info.LastGeneratedID)
		// Consumer groups are compared one by one (groups.go), so that a
		// difference names the group.
	default:
		return "", fmt.Errorf("key %q: type %q cannot be digested", key, typ)
	}
	return d.sum(), nil
}

func cardinality(ctx context.Context, c *redis.Client, key, typ string) (int64, error) {
	switch typ {
	case "set":
		return c.SCard(ctx, key).Result()
	case "hash":
		return c.HLen(ctx, key).Result()
	}
	return c.ZCard(ctx, key).Result()
}
