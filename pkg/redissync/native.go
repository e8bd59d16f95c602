package redissync

import (
	"fmt"
	"math"
	"strconv"
	"time"

	"replicator/pkg/redisrdb"
)

// nativeBuilder turns decoded events of one key into ordinary write
// commands: the path for targets that cannot RESTORE the payload (an RDB
// version newer than theirs) and for keys too large to send in one piece.
// Every command is bounded by the decoder's batch size.
type nativeBuilder struct {
	targetVersion int // target's RDB version, for command syntax
	// fieldTTL: the target has HPEXPIREAT; without it policy says what
	// happens to a field's TTL (FieldTTLRefuse or FieldTTLDrop) and
	// dropped records the ones dropped. now is the clock fields expire by.
	fieldTTL bool
	policy   string
	dropped  *droppedTTLs
	now      func() int64
	db       int

	// expiredFields counts hash fields not written because their TTL had
	// passed; fields counts the members written for the current key.
	expiredFields int64
	fields        int64

	typ      redisrdb.Type
	key      []byte
	expireAt int64
	// pending holds the current group's PEL until its consumers arrive:
	// XCLAIM needs the consumer, delivery time and count together. Bounded
	// by the PEL size (about 32 bytes an entry), not by the stream size.
	group    []byte
	pending  map[redisrdb.StreamID]redisrdb.PendingEntry
	consumer []byte
	entries  int64
	meta     redisrdb.StreamMeta
}

type command []any

func (n *nativeBuilder) start(ev *redisrdb.Event) []command {
	n.typ, n.key, n.expireAt, n.db = ev.Type, append([]byte(nil), ev.Key...), ev.ExpireAt, ev.DB
	n.entries, n.pending, n.fields = 0, nil, 0
	cmds := []command{{"DEL", n.key}}
	if ev.Type == redisrdb.TypeString {
		cmds = append(cmds, command{"SET", n.key, ev.Value})
	}
	return cmds
}

func formatScore(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "+inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', 17, 64)
}

// FieldTTLError is the refusal of a hash whose fields have TTLs that the
// target cannot keep (no HPEXPIREAT, policy refuse).
type FieldTTLError struct {
	DB    int
	Key   string
	Field string
}

func (e *FieldTTLError) Error() string {
	return fmt.Sprintf("db %d key %q: field %q has its own TTL, and the target has no HPEXPIREAT (Redis before 7.4): "+
		"the key was not written; use a Redis 7.4+ target, or pass --hash-field-ttl drop to write such fields without their TTL",
		e.DB, e.Key, e.Field)
}

func (n *nativeBuilder) items(items []redisrdb.Item) ([]command, error) {
	if len(items) == 0 {
		return nil, nil
	}
	if n.typ == redisrdb.TypeHash {
		return n.hashItems(items)
	}
	n.fields += int64(len(items))
	var cmds []command
	switch n.typ {
	case redisrdb.TypeList, redisrdb.TypeSet:
		c := command{"RPUSH", n.key}
		if n.typ == redisrdb.TypeSet {
			c[0] = "SADD"
		}
		for _, it := range items {
			c = append(c, it.Member)
		}
		cmds = append(cmds, c)
	case redisrdb.TypeZSet:
		c := command{"ZADD", n.key}
		for _, it := range items {
			c = append(c, formatScore(it.Score), it.Member)
		}
		cmds = append(cmds, c)
	case redisrdb.TypeStream:
		for _, it := range items {
			c := command{"XADD", n.key, it.ID.String()}
			for _, f := range it.Fields {
				c = append(c, f)
			}
			cmds = append(cmds, c)
			n.entries++
		}
	}
	return cmds, nil
}

// hashItems writes hash fields. A field whose TTL has passed is not
// written, as Redis does not load it; one with a TTL the target cannot
// keep follows the policy, decided before anything of the field is sent.
func (n *nativeBuilder) hashItems(items []redisrdb.Item) ([]command, error) {
	now := n.now()
	c := command{"HSET", n.key}
	var ttls []command
	for _, it := range items {
		if it.ExpireAt != 0 {
			if it.ExpireAt <= now {
				n.expiredFields++
				continue
			}
			switch {
			case n.fieldTTL:
				ttls = append(ttls, command{"HPEXPIREAT", n.key, it.ExpireAt, "FIELDS", 1, it.Member})
			case n.policy == FieldTTLDrop:
				n.dropped.add(n.db, n.key, it.Member)
			default:
				return nil, &FieldTTLError{DB: n.db, Key: printable(n.key), Field: printable(it.Member)}
			}
		}
		c = append(c, it.Member, it.Value)
		n.fields++
	}
	if len(c) == 2 {
		return nil, nil
	}
	return append([]command{c}, ttls...), nil
}

func (n *nativeBuilder) stream(ev *redisrdb.Event) []command {
	var cmds []command
	switch ev.Kind {
	case redisrdb.KindStreamMeta:
		n.meta = ev.Stream
		if n.entries == 0 && (ev.Stream.LastID != redisrdb.StreamID{}) {
			// An empty stream (every entry deleted) still exists in Redis:
			// add one entry with the last ID and trim it away at once.
			cmds = append(cmds, command{"XADD", n.key, "MAXLEN", "0", ev.Stream.LastID.String(), "x", "x"})
		}
		c := command{"XSETID", n.key, ev.Stream.LastID.String()}
		if n.targetVersion >= 10 && ev.Stream.HasV2 {
			c = append(c, "ENTRIESADDED", ev.Stream.EntriesAdded, "MAXDELETEDID", ev.Stream.MaxDeletedID.String())
		}
		if n.entries > 0 || (ev.Stream.LastID != redisrdb.StreamID{}) {
			cmds = append(cmds, c)
		}
	case redisrdb.KindStreamGroup:
		n.group = append([]byte(nil), ev.Group.Name...)
		n.pending = map[redisrdb.StreamID]redisrdb.PendingEntry{}
		c := command{"XGROUP", "CREATE", n.key, n.group, ev.Group.LastID.String(), "MKSTREAM"}
		// An entries-read of -1 (stored as the largest uint64) means unknown.
		if n.targetVersion >= 10 && ev.Group.HasV2 && ev.Group.EntriesRead <= math.MaxInt64 {
			c = append(c, "ENTRIESREAD", ev.Group.EntriesRead)
		}
		cmds = append(cmds, c)
	case redisrdb.KindStreamPending:
		for _, p := range ev.Pending {
			n.pending[p.ID] = p
		}
	case redisrdb.KindStreamConsumer:
		n.consumer = append([]byte(nil), ev.Consumer.Name...)
		cmds = append(cmds, command{"XGROUP", "CREATECONSUMER", n.key, n.group, n.consumer})
	case redisrdb.KindStreamConsumerPending:
		for _, id := range ev.IDs {
			p := n.pending[id]
			cmds = append(cmds, command{"XCLAIM", n.key, n.group, n.consumer, "0", id.String(),
				"TIME", p.DeliveryTime, "RETRYCOUNT", p.DeliveryCount, "FORCE", "JUSTID"})
		}
	}
	return cmds
}

func (n *nativeBuilder) end() []command {
	n.pending = nil
	if n.expireAt != 0 {
		return []command{{"PEXPIREAT", n.key, n.expireAt}}
	}
	return nil
}

// nativeFromDump decodes a DUMP payload and returns the native commands
// that recreate it (used when the target refuses a RESTORE).
func nativeFromDump(key []byte, expireAt int64, payload []byte, n *nativeBuilder) ([]command, error) {
	d, err := redisrdb.NewDumpDecoder(key, payload, redisrdb.Options{})
	if err != nil {
		return nil, err
	}
	var cmds []command
	for d.Next() {
		ev := d.Event()
		switch ev.Kind {
		case redisrdb.KindKeyStart:
			ev.ExpireAt = expireAt
			cmds = append(cmds, n.start(ev)...)
		case redisrdb.KindItems:
			c, err := n.items(ev.Items)
			if err != nil {
				return nil, err
			}
			cmds = append(cmds, c...)
		case redisrdb.KindKeyEnd:
			cmds = append(cmds, n.end()...)
		default:
			cmds = append(cmds, n.stream(ev)...)
		}
	}
	return cmds, d.Err()
}

// builder is a nativeBuilder for this writer's target and policy, for
// keys of database db.
func (w *Writer) builder(db int) *nativeBuilder {
	return &nativeBuilder{targetVersion: w.version, fieldTTL: w.fieldTTL, policy: w.cfg.HashFieldTTL,
		dropped: &w.dropped, now: func() int64 { return time.Now().UnixMilli() }, db: db}
}
