package redisrdb

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
)

// A canonical text form of a keyspace, built once from decoder events and
// once from what a redis-server serves, so the two can be compared.

type keyModel struct {
	typ      string
	expireAt int64
	members  []string // canonical, sorted unless the order matters (list, stream)
	extra    []string // stream metadata, groups, PEL
}

func (k *keyModel) String() string {
	return fmt.Sprintf("%s exp=%d %v %v", k.typ, k.expireAt, k.members, k.extra)
}

func fmtScore(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// modelOf decodes everything and returns "db/key" → model, plus aux and
// function events as text.
func modelOf(d *Decoder) (map[string]*keyModel, []string, error) {
	keys := map[string]*keyModel{}
	var other []string
	var cur *keyModel
	owner := map[StreamID]string{}
	var pel []PendingEntry
	var consumer string
	flushGroup := func() {
		sort.Slice(pel, func(i, j int) bool { return less(pel[i].ID, pel[j].ID) })
		for _, p := range pel {
			cur.extra = append(cur.extra, fmt.Sprintf("pel %s %s %d", p.ID, owner[p.ID], p.DeliveryCount))
		}
		pel, owner = nil, map[StreamID]string{}
	}
	for d.Next() {
		ev := d.Event()
		switch ev.Kind {
		case KindAux:
			other = append(other, fmt.Sprintf("aux %s=%s", ev.Key, ev.Value))
		case KindFunction:
			other = append(other, "function "+string(ev.Value))
		case KindModuleAux:
			other = append(other, "moduleaux "+ev.Module)
		case KindKeyStart:
			cur = &keyModel{typ: ev.Type.String(), expireAt: ev.ExpireAt}
			if ev.Type == TypeString {
				cur.members = []string{string(ev.Value)}
			}
			keys[fmt.Sprintf("%d/%s", ev.DB, ev.Key)] = cur
		case KindItems:
			for _, it := range ev.Items {
				var s string
				switch ev.Type {
				case TypeList, TypeSet:
					s = string(it.Member)
				case TypeZSet:
					s = string(it.Member) + "=" + fmtScore(it.Score)
				case TypeHash:
					s = string(it.Member) + "=" + string(it.Value)
					if it.ExpireAt != 0 {
						s += "@" + strconv.FormatInt(it.ExpireAt, 10)
					}
				case TypeStream:
					parts := []string{it.ID.String()}
					for _, f := range it.Fields {
						parts = append(parts, string(f))
					}
					s = strings.Join(parts, " ")
				}
				cur.members = append(cur.members, s)
			}
		case KindStreamMeta:
			cur.extra = append(cur.extra, fmt.Sprintf("len=%d last=%s", ev.Stream.Length, ev.Stream.LastID))
		case KindStreamGroup:
			if len(pel) > 0 {
				flushGroup()
			}
			cur.extra = append(cur.extra, fmt.Sprintf("group %s last=%s", ev.Group.Name, ev.Group.LastID))
		case KindStreamPending:
			pel = append(pel, ev.Pending...)
		case KindStreamConsumer:
			consumer = string(ev.Consumer.Name)
			cur.extra = append(cur.extra, "consumer "+consumer)
		case KindStreamConsumerPending:
			for _, id := range ev.IDs {
				owner[id] = consumer
			}
		case KindKeyEnd:
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

func less(a, b StreamID) bool { return a.Ms < b.Ms || a.Ms == b.Ms && a.Seq < b.Seq }

// dropEmpty removes collections without members: Redis refuses to create
// them and drops them when loading an RDB.
func dropEmpty(m map[string]*keyModel) {
	for k, v := range m {
		if v.typ != "string" && v.typ != "stream" && len(v.members) == 0 {
			delete(m, k)
		}
	}
}

func decodeAll(r io.Reader) (map[string]*keyModel, []string, error) {
	return modelOf(NewDecoder(r, Options{BatchItems: 7}))
}
