package redistest

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"

	"replicator/pkg/redisrdb"
)

// A canonical text form of a keyspace, built once from decoder events and
// once from what a redis-server serves, so the two can be compared.

// KeyModel is one key in canonical text form: type, expiry, members and
// (for streams) metadata, groups and pending entries.
type KeyModel struct {
	typ      string
	expireAt int64
	members  []string // canonical, sorted unless the order matters (list, stream)
	extra    []string // stream metadata, groups, PEL
}

func (k *KeyModel) String() string {
	return fmt.Sprintf("%s exp=%d %v %v", k.typ, k.expireAt, k.members, k.extra)
}

// Short is String cut to a length that fits a test failure message.
func (k *KeyModel) Short() string {
	s := k.String()
	if len(s) > 600 {
		s = s[:600] + "..."
	}
	return s
}

// SameValue reports whether a and b are both there and hold the same type
// and value (the expiry is not compared).
func SameValue(a, b *KeyModel) bool {
	return a != nil && b != nil && a.typ == b.typ && strings.Join(a.members, "\x00") == strings.Join(b.members, "\x00") &&
		strings.Join(a.extra, "|") == strings.Join(b.extra, "|")
}

func fmtScore(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// ModelOf decodes everything and returns "db/key" → model, plus aux and
// function events as text.
func ModelOf(d *redisrdb.Decoder) (map[string]*KeyModel, []string, error) {
	keys := map[string]*KeyModel{}
	var other []string
	var cur *KeyModel
	owner := map[redisrdb.StreamID]string{}
	var pel []redisrdb.PendingEntry
	var consumer string
	flushGroup := func() {
		sort.Slice(pel, func(i, j int) bool { return less(pel[i].ID, pel[j].ID) })
		for _, p := range pel {
			cur.extra = append(cur.extra, fmt.Sprintf("pel %s %s %d", p.ID, owner[p.ID], p.DeliveryCount))
		}
		pel, owner = nil, map[redisrdb.StreamID]string{}
	}
	for d.Next() {
		ev := d.Event()
		switch ev.Kind {
		case redisrdb.KindAux:
			other = append(other, fmt.Sprintf("aux %s=%s", ev.Key, ev.Value))
		case redisrdb.KindFunction:
			other = append(other, "function "+string(ev.Value))
		case redisrdb.KindModuleAux:
			other = append(other, "moduleaux "+ev.Module)
		case redisrdb.KindKeyStart:
			cur = &KeyModel{typ: ev.Type.String(), expireAt: ev.ExpireAt}
			if ev.Type == redisrdb.TypeString {
				cur.members = []string{string(ev.Value)}
			}
			keys[fmt.Sprintf("%d/%s", ev.DB, ev.Key)] = cur
		case redisrdb.KindItems:
			for _, it := range ev.Items {
				var s string
				switch ev.Type {
				case redisrdb.TypeList, redisrdb.TypeSet:
					s = string(it.Member)
				case redisrdb.TypeZSet:
					s = string(it.Member) + "=" + fmtScore(it.Score)
				case redisrdb.TypeHash:
					s = string(it.Member) + "=" + string(it.Value)
					if it.ExpireAt != 0 {
						s += "@" + strconv.FormatInt(it.ExpireAt, 10)
					}
				case redisrdb.TypeStream:
					parts := []string{it.ID.String()}
					for _, f := range it.Fields {
						parts = append(parts, string(f))
					}
					s = strings.Join(parts, " ")
				}
				cur.members = append(cur.members, s)
			}
		case redisrdb.KindStreamMeta:
			cur.extra = append(cur.extra, fmt.Sprintf("len=%d last=%s", ev.Stream.Length, ev.Stream.LastID))
		case redisrdb.KindStreamGroup:
			if len(pel) > 0 {
				flushGroup()
			}
			cur.extra = append(cur.extra, fmt.Sprintf("group %s last=%s", ev.Group.Name, ev.Group.LastID))
		case redisrdb.KindStreamPending:
			pel = append(pel, ev.Pending...)
		case redisrdb.KindStreamConsumer:
			consumer = string(ev.Consumer.Name)
			cur.extra = append(cur.extra, "consumer "+consumer)
		case redisrdb.KindStreamConsumerPending:
			for _, id := range ev.IDs {
				owner[id] = consumer
			}
		case redisrdb.KindKeyEnd:
			if len(pel) > 0 {
				flushGroup()
			}
			if cur.typ == "set" || cur.typ == "zset" || cur.typ == "hash" {
				sort.Strings(cur.members)
			}
		}
	}
	return keys, other, d.Err()
}

func less(a, b redisrdb.StreamID) bool { return a.Ms < b.Ms || a.Ms == b.Ms && a.Seq < b.Seq }

// DropEmpty removes collections without members: Redis refuses to create
// them and drops them when loading an RDB.
func DropEmpty(m map[string]*KeyModel) {
	for k, v := range m {
		if v.typ != "string" && v.typ != "stream" && len(v.members) == 0 {
			delete(m, k)
		}
	}
}

// DecodeAll is ModelOf a decoder of r with small batches (7 members), so
// that collections span several Items events.
func DecodeAll(r io.Reader) (map[string]*KeyModel, []string, error) {
	return ModelOf(redisrdb.NewDecoder(r, redisrdb.Options{BatchItems: 7}))
}
