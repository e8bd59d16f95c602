package redisrdb

import (
	"encoding/binary"
)

// Streams (src/t_stream.c, rdb.c): a count of radix-tree nodes, each a
// 16-byte big-endian master ID and a listpack of entries delta-encoded
// against it; then length and IDs; then consumer groups, each with its
// pending entries list (PEL) and consumers with their own PEL (IDs only).
//
// A node's listpack starts with a master entry
//
//	count, deleted, num-fields, field-1 ... field-N, 0
//
// followed by entries
//
//	flags, ms-delta, seq-delta, [num-fields, field-1, value-1 ... | value-1 ...], lp-count
//
// where flag 1 marks a deleted entry and flag 2 (SAMEFIELDS) an entry that
// uses the master's fields and stores only values.

const (
	streamFlagDeleted    = 1
	streamFlagSameFields = 2
)

type streamPhase uint8

const (
	phNodes streamPhase = iota
	phMeta
	phGroup
	phGroupPEL
	phConsumer
	phConsumerPEL
	phDone
)

type streamSource struct {
	typ   byte
	phase streamPhase
	nodes uint64

	// current node
	lp      *listpackIter
	master  StreamID
	mfields [][]byte

	groups    uint64
	left      uint64 // PEL entries left in the current list
	consumers uint64
}

func (s *streamSource) fill(d *Decoder) (bool, error) {
	for {
		switch s.phase {
		case phNodes:
			full, err := s.nodeEntries(d)
			if err != nil || full {
				return false, err
			}
			if s.lp == nil && s.nodes == 0 {
				s.phase = phMeta
				if len(d.items) > 0 {
					return false, nil
				}
			}
		case phMeta:
			if err := s.readMeta(d); err != nil {
				return false, err
			}
			return false, nil
		case phGroup:
			if s.groups == 0 {
				s.phase = phDone
				continue
			}
			s.groups--
			if err := s.readGroup(d); err != nil {
				return false, err
			}
			return false, nil
		case phGroupPEL:
			if s.left == 0 {
				n, err := d.readLen()
				if err != nil {
					return false, err
				}
				s.consumers = n
				s.phase = phConsumer
				continue
			}
			for s.left > 0 && len(d.ev.Pending) < d.opts.BatchItems {
				s.left--
				id, err := readRawID(d)
				if err != nil {
					return false, err
				}
				t, err := d.readMillis()
				if err != nil {
					return false, err
				}
				c, err := d.readLen()
				if err != nil {
					return false, err
				}
				d.ev.Pending = append(d.ev.Pending, PendingEntry{ID: id, DeliveryTime: t, DeliveryCount: c})
			}
			d.ev.Kind = KindStreamPending
			return false, nil
		case phConsumer:
			if s.consumers == 0 {
				s.phase = phGroup
				continue
			}
			s.consumers--
			name, err := d.readString()
			if err != nil {
				return false, err
			}
			seen, err := d.readMillis()
			if err != nil {
				return false, err
			}
			active := seen
			if s.typ >= TypeByteStreamListpacks3 {
				if active, err = d.readMillis(); err != nil {
					return false, err
				}
			}
			n, err := d.readLen()
			if err != nil {
				return false, err
			}
			s.left = n
			d.ev.Kind = KindStreamConsumer
			d.ev.Consumer = StreamConsumer{Name: name, SeenTime: seen, ActiveTime: active}
			s.phase = phConsumerPEL
			return false, nil
		case phConsumerPEL:
			if s.left == 0 {
				s.phase = phConsumer
				continue
			}
			for s.left > 0 && len(d.ev.IDs) < d.opts.BatchItems {
				s.left--
				id, err := readRawID(d)
				if err != nil {
					return false, err
				}
				d.ev.IDs = append(d.ev.IDs, id)
			}
			d.ev.Kind = KindStreamConsumerPending
			return false, nil
		case phDone:
			return true, nil
		}
	}
}

func readRawID(d *Decoder) (StreamID, error) {
	var b [16]byte
	if err := d.readFixed(b[:]); err != nil {
		return StreamID{}, err
	}
	return StreamID{binary.BigEndian.Uint64(b[:8]), binary.BigEndian.Uint64(b[8:])}, nil
}

func (d *Decoder) readID() (StreamID, error) {
	ms, err := d.readLen()
	if err != nil {
		return StreamID{}, err
	}
	seq, err := d.readLen()
	return StreamID{ms, seq}, err
}

func (s *streamSource) readMeta(d *Decoder) error {
	var m StreamMeta
	var err error
	if m.Length, err = d.readLen(); err != nil {
		return err
	}
	if m.LastID, err = d.readID(); err != nil {
		return err
	}
	if s.typ >= TypeByteStreamListpacks2 {
		m.HasV2 = true
		if m.FirstID, err = d.readID(); err != nil {
			return err
		}
		if m.MaxDeletedID, err = d.readID(); err != nil {
			return err
		}
		if m.EntriesAdded, err = d.readLen(); err != nil {
			return err
		}
	} else {
		m.EntriesAdded = m.Length
	}
	if s.groups, err = d.readLen(); err != nil {
		return err
	}
	d.ev.Kind, d.ev.Stream = KindStreamMeta, m
	s.phase = phGroup
	return nil
}

func (s *streamSource) readGroup(d *Decoder) error {
	var g StreamGroup
	var err error
	if g.Name, err = d.readString(); err != nil {
		return err
	}
	if g.LastID, err = d.readID(); err != nil {
		return err
	}
	if s.typ >= TypeByteStreamListpacks2 {
		g.HasV2 = true
		if g.EntriesRead, err = d.readLen(); err != nil {
			return err
		}
	}
	if s.left, err = d.readLen(); err != nil {
		return err
	}
	d.ev.Kind, d.ev.Group = KindStreamGroup, g
	s.phase = phGroupPEL
	return nil
}

// nodeEntries adds entries of the current node (loading the next node when
// needed) until the batch is full or the nodes are exhausted.
func (s *streamSource) nodeEntries(d *Decoder) (full bool, err error) {
	for {
		if s.lp == nil {
			if s.nodes == 0 {
				return false, nil
			}
			s.nodes--
			if err := s.loadNode(d); err != nil {
				return false, err
			}
		}
		item, ok, err := s.nextEntry()
		if err != nil {
			return false, err
		}
		if !ok {
			s.lp = nil
			continue
		}
		if item == nil { // deleted entry
			continue
		}
		if d.add(*item) {
			return true, nil
		}
	}
}

func (s *streamSource) loadNode(d *Decoder) error {
	key, err := d.readString()
	if err != nil {
		return err
	}
	if len(key) != 16 {
		return corrupt("stream node key of %d bytes, want 16", len(key))
	}
	s.master = StreamID{binary.BigEndian.Uint64(key[:8]), binary.BigEndian.Uint64(key[8:])}
	blob, err := d.readString()
	if err != nil {
		return err
	}
	lp, err := newListpack(blob)
	if err != nil {
		return err
	}
	ints := make([]int64, 3)
	for i := range ints {
		if ints[i], err = lpInt(lp, "stream master entry"); err != nil {
			return err
		}
	}
	nf := ints[2]
	if nf < 0 || nf > int64(len(blob)) {
		return corrupt("stream master entry with %d fields", nf)
	}
	s.mfields = make([][]byte, 0, min(nf, 64))
	for range nf {
		e, err := pairNext(lp, "stream master field")
		if err != nil {
			return err
		}
		s.mfields = append(s.mfields, e.bytes())
	}
	if _, err := lpInt(lp, "stream master terminator"); err != nil {
		return err
	}
	s.lp = lp
	return nil
}

func lpInt(lp *listpackIter, what string) (int64, error) {
	e, ok, err := lp.next()
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, corrupt("%s truncated", what)
	}
	v, isInt := e.int()
	if !isInt {
		return 0, corrupt("%s: %q is not an integer", what, e.bytes())
	}
	return v, nil
}

// nextEntry returns the next entry of the node, nil for a deleted one, and
// ok=false at the end of the node.
func (s *streamSource) nextEntry() (*Item, bool, error) {
	e, ok, err := s.lp.next()
	if err != nil || !ok {
		return nil, false, err
	}
	flags, isInt := e.int()
	if !isInt {
		return nil, false, corrupt("stream entry flags %q", e.bytes())
	}
	msd, err := lpInt(s.lp, "stream entry id")
	if err != nil {
		return nil, false, err
	}
	seqd, err := lpInt(s.lp, "stream entry id")
	if err != nil {
		return nil, false, err
	}
	item := &Item{ID: StreamID{s.master.Ms + uint64(msd), s.master.Seq + uint64(seqd)}}
	if flags&streamFlagSameFields != 0 {
		item.Fields = make([][]byte, 0, 2*len(s.mfields))
		for _, f := range s.mfields {
			v, err := pairNext(s.lp, "stream entry value")
			if err != nil {
				return nil, false, err
			}
			item.Fields = append(item.Fields, f, v.bytes())
		}
	} else {
		nf, err := lpInt(s.lp, "stream entry field count")
		if err != nil {
			return nil, false, err
		}
		if nf < 0 || nf > int64(len(s.lp.b)) {
			return nil, false, corrupt("stream entry with %d fields", nf)
		}
		item.Fields = make([][]byte, 0, 2*min(nf, 64))
		for range 2 * nf {
			v, err := pairNext(s.lp, "stream entry field")
			if err != nil {
				return nil, false, err
			}
			item.Fields = append(item.Fields, v.bytes())
		}
	}
	if _, err := lpInt(s.lp, "stream entry lp-count"); err != nil {
		return nil, false, err
	}
	if flags&streamFlagDeleted != 0 {
		return nil, true, nil
	}
	return item, true, nil
}
