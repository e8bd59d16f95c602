package redisrdb

import (
	"fmt"
)

// valueSource produces the events of one value after KeyStart. fill adds
// at most one event (a batch) to d.ev and reports done when the value has
// been read completely; it is never called again after done.
type valueSource interface {
	fill(d *Decoder) (done bool, err error)
}

func (d *Decoder) newSource(typ byte) (valueSource, error) {
	switch typ {
	case TypeByteString:
		v, err := d.readString()
		if err != nil {
			return nil, err
		}
		d.ev.Value = v
		d.count = 1
		return nil, nil
	case TypeByteList, TypeByteSet, TypeByteZSet, TypeByteZSet2, TypeByteHash:
		n, err := d.readLen()
		if err != nil {
			return nil, err
		}
		return &countedSource{typ: typ, left: n}, nil
	case TypeByteHashMetadata, TypeByteHashMetadataPreGA:
		s := &countedSource{typ: typ}
		if typ == TypeByteHashMetadata {
			min, err := d.readMillis()
			if err != nil {
				return nil, err
			}
			s.minExpire = min
		}
		n, err := d.readLen()
		if err != nil {
			return nil, err
		}
		s.left = n
		return s, nil
	case TypeByteListQuicklist, TypeByteListQuicklist2:
		n, err := d.readLen()
		if err != nil {
			return nil, err
		}
		return &quicklistSource{v2: typ == TypeByteListQuicklist2, nodes: n}, nil
	case TypeByteHashZipmap, TypeByteListZiplist, TypeByteSetIntset, TypeByteZSetZiplist,
		TypeByteHashZiplist, TypeByteHashListpack, TypeByteZSetListpack, TypeByteSetListpack,
		TypeByteHashListpackEx, TypeByteHashListpackExPreGA:
		if typ == TypeByteHashListpackEx {
			if _, err := d.readMillis(); err != nil { // minimum field expiry, derivable
				return nil, err
			}
		}
		blob, err := d.readString()
		if err != nil {
			return nil, err
		}
		it, err := newPacked(typ, blob)
		if err != nil {
			return nil, err
		}
		return &blobSource{typ: typ, it: it}, nil
	case TypeByteStreamListpacks, TypeByteStreamListpacks2, TypeByteStreamListpacks3:
		n, err := d.readLen()
		if err != nil {
			return nil, err
		}
		return &streamSource{typ: typ, nodes: n}, nil
	case TypeByteModule2:
		id, err := d.readLen()
		if err != nil {
			return nil, err
		}
		name, ver := moduleName(id)
		return nil, &ModuleError{Module: name, EncVersion: ver, Key: printable(d.ev.Key)}
	case TypeByteModulePreGA:
		return nil, fmt.Errorf("%w: module value in the pre-release format (RDB type 6)", ErrModule)
	}
	return nil, corrupt("unknown value type %d", typ)
}

func newPacked(typ byte, blob []byte) (packedIter, error) {
	switch typ {
	case TypeByteHashZipmap:
		return newZipmap(blob)
	case TypeByteListZiplist, TypeByteZSetZiplist, TypeByteHashZiplist, TypeByteListQuicklist:
		return newZiplist(blob)
	case TypeByteSetIntset:
		return newIntset(blob)
	}
	return newListpack(blob)
}

// add appends an item to the batch; full reports the batch is complete.
func (d *Decoder) add(it Item) (full bool) {
	d.items = append(d.items, it)
	d.ev.Kind, d.ev.Items = KindItems, d.items
	d.count++
	return len(d.items) >= d.opts.BatchItems
}

// countedSource reads the classic encodings: a count, then that many
// elements, each read straight from the stream.
type countedSource struct {
	typ       byte
	left      uint64
	minExpire int64
}

func (s *countedSource) fill(d *Decoder) (bool, error) {
	for s.left > 0 {
		s.left--
		var it Item
		var err error
		switch s.typ {
		case TypeByteHashMetadata, TypeByteHashMetadataPreGA:
			var ttl uint64
			if ttl, err = d.readLen(); err != nil {
				return false, err
			}
			if ttl != 0 {
				if s.typ == TypeByteHashMetadata {
					// Stored relative to the minimum, plus one so 0 means none.
					it.ExpireAt = int64(ttl) + s.minExpire - 1
				} else {
					it.ExpireAt = int64(ttl)
				}
				if it.ExpireAt <= 0 || it.ExpireAt > 1<<48-1 {
					return false, corrupt("hash field expiry %d out of range", it.ExpireAt)
				}
			}
			if it.Member, err = d.readString(); err != nil {
				return false, err
			}
			it.Value, err = d.readString()
		default:
			if it.Member, err = d.readString(); err != nil {
				return false, err
			}
			switch s.typ {
			case TypeByteZSet:
				it.Score, err = d.readDoubleV1()
			case TypeByteZSet2:
				it.Score, err = d.readDoubleV2()
			case TypeByteHash:
				it.Value, err = d.readString()
			}
		}
		if err != nil {
			return false, err
		}
		if d.add(it) {
			return s.left == 0, nil
		}
	}
	return true, nil
}

// blobSource walks one compact-encoded blob.
type blobSource struct {
	typ byte
	it  packedIter
}

func (s *blobSource) fill(d *Decoder) (bool, error) {
	for {
		done, full, err := packedItem(d, s.typ, s.it)
		if err != nil || done {
			return done, err
		}
		if full {
			return false, nil
		}
	}
}

// packedItem reads one member (one, two or three elements depending on
// the type) from it and adds it to the batch.
func packedItem(d *Decoder, typ byte, it packedIter) (done, full bool, err error) {
	e, ok, err := it.next()
	if err != nil || !ok {
		return true, false, err
	}
	item := Item{Member: e.bytes()}
	switch typ {
	case TypeByteZSetZiplist, TypeByteZSetListpack:
		sc, err := pairNext(it, "zset score")
		if err != nil {
			return true, false, err
		}
		if item.Score, err = sc.float(); err != nil {
			return true, false, err
		}
	case TypeByteHashZipmap, TypeByteHashZiplist, TypeByteHashListpack, TypeByteHashListpackEx, TypeByteHashListpackExPreGA:
		v, err := pairNext(it, "hash value")
		if err != nil {
			return true, false, err
		}
		item.Value = v.bytes()
		if typ == TypeByteHashListpackEx || typ == TypeByteHashListpackExPreGA {
			t, err := pairNext(it, "hash field expiry")
			if err != nil {
				return true, false, err
			}
			ttl, ok := t.int()
			if !ok || ttl < 0 || ttl > 1<<48-1 {
				return true, false, corrupt("hash field expiry %q", t.bytes())
			}
			item.ExpireAt = ttl
		}
	}
	return false, d.add(item), nil
}

func pairNext(it packedIter, what string) (packedEntry, error) {
	e, ok, err := it.next()
	if err == nil && !ok {
		err = corrupt("%s missing: odd number of elements", what)
	}
	return e, err
}

// quicklistSource reads a list stored as a count of nodes, each a ziplist
// (type 14) or a listpack or a plain element (type 18).
type quicklistSource struct {
	v2    bool
	nodes uint64
	cur   packedIter
}

func (s *quicklistSource) fill(d *Decoder) (bool, error) {
	for {
		if s.cur != nil {
			e, ok, err := s.cur.next()
			if err != nil {
				return false, err
			}
			if ok {
				if d.add(Item{Member: e.bytes()}) {
					return false, nil
				}
				continue
			}
			s.cur = nil
		}
		if s.nodes == 0 {
			return true, nil
		}
		s.nodes--
		container := uint64(2)
		if s.v2 {
			var err error
			if container, err = d.readLen(); err != nil {
				return false, err
			}
			if container != 1 && container != 2 {
				return false, corrupt("quicklist node container %d", container)
			}
		}
		blob, err := d.readString()
		if err != nil {
			return false, err
		}
		if len(blob) == 0 {
			return false, corrupt("empty quicklist node")
		}
		if container == 1 { // a plain node holds one large element
			if d.add(Item{Member: blob}) {
				return false, nil
			}
			continue
		}
		if s.v2 {
			s.cur, err = newListpack(blob)
		} else {
			s.cur, err = newZiplist(blob)
		}
		if err != nil {
			return false, err
		}
	}
}
