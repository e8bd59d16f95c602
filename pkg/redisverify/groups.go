package redisverify

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/redis/go-redis/v9"

	"replicator/pkg/redisconn"
)

// explain describes a failed first command on a connection (see package
// redisconn).
func explain(role string, o *redis.Options, err error) error { return redisconn.Explain(role, o, err) }

// streamGroups describes each consumer group of a stream, by name, as
// XINFO GROUPS and XINFO CONSUMERS show it: last-delivered ID, entries
// read, pending count, and each consumer with its pending count. Idle
// and seen times are left out: they differ on any copy.
func streamGroups(ctx context.Context, c *redis.Client, key string) (map[string]string, error) {
	groups, err := c.XInfoGroups(ctx, key).Result()
	if err != nil {
		return nil, fmt.Errorf("XINFO GROUPS: %w", err)
	}
	out := make(map[string]string, len(groups))
	for _, g := range groups {
		cons, err := c.XInfoConsumers(ctx, key, g.Name).Result()
		if err != nil {
			return nil, fmt.Errorf("XINFO CONSUMERS %q: %w", g.Name, err)
		}
		names := make([]string, 0, len(cons))
		for _, cn := range cons {
			names = append(names, fmt.Sprintf("%s:%d", cn.Name, cn.Pending))
		}
		sort.Strings(names)
		out[g.Name] = fmt.Sprintf("last-delivered %s entries-read %d pending %d consumers [%s]",
			g.LastDeliveredID, g.EntriesRead, g.Pending, strings.Join(names, " "))
	}
	return out, nil
}

// groups reports each consumer group of stream k that differs: missing on
// the target, only on the target, or with other state.
func (v *verifier) groups(ctx context.Context, db int, s, t *redis.Client, k string) error {
	a, err := streamGroups(ctx, s, k)
	if err != nil {
		return fmt.Errorf("source db %d key %q: %w", db, k, err)
	}
	b, err := streamGroups(ctx, t, k)
	if err != nil {
		return fmt.Errorf("target db %d key %q: %w", db, k, err)
	}
	names := unionKeys(a, b)
	for _, n := range names {
		if a[n] != b[n] {
			v.diff(Difference{DB: db, Key: k, Kind: "group " + n, Source: a[n], Target: b[n]})
		}
	}
	return nil
}

// libraries compares the function libraries (FUNCTION LIST WITHCODE):
// one missing on the target, only on the target, or with other code is
// a difference. A server without functions (before Redis 7) has none.
func (v *verifier) libraries(ctx context.Context) error {
	a, err := libraryCodes(ctx, v.src.db(0))
	if err != nil {
		return fmt.Errorf("source Redis %s: %w", v.cfg.Source.Addr, err)
	}
	b, err := libraryCodes(ctx, v.dst.db(0))
	if err != nil {
		return fmt.Errorf("target Redis %s: %w", v.cfg.Target.Addr, err)
	}
	v.rep.Libraries = LibraryCount{Source: len(a), Target: len(b)}
	names := unionKeys(a, b)
	for _, n := range names {
		ca, inA := a[n]
		cb, inB := b[n]
		switch {
		case !inB:
			v.diff(Difference{DB: -1, Key: n, Kind: "function library missing", Source: "present"})
		case !inA:
			v.diff(Difference{DB: -1, Key: n, Kind: "function library extra", Target: "present"})
		case ca != cb:
			v.diff(Difference{DB: -1, Key: n, Kind: "function library code", Source: short(ca), Target: short(cb)})
		}
	}
	return nil
}

func libraryCodes(ctx context.Context, c *redis.Client) (map[string]string, error) {
	libs, err := c.FunctionList(ctx, redis.FunctionListQuery{WithCode: true}).Result()
	if err != nil {
		if strings.Contains(strings.ToLower(err.Error()), "unknown command") {
			return map[string]string{}, nil
		}
		return nil, fmt.Errorf("FUNCTION LIST: %w", err)
	}
	out := make(map[string]string, len(libs))
	for _, l := range libs {
		out[l.Name] = l.Code
	}
	return out, nil
}

// unionKeys is the names in a or b, sorted, each once.
func unionKeys[V any](a, b map[string]V) []string {
	names := make([]string, 0, len(a)+len(b))
	for n := range a {
		names = append(names, n)
	}
	for n := range b {
		if _, ok := a[n]; !ok {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}
