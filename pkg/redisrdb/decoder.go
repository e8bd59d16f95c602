package redisrdb

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"strconv"
)

// Options bound what a Decoder may hold in memory.
type Options struct {
	// MaxStringBytes is the largest single string (value, member, or
	// compact-encoded blob such as a listpack) accepted; larger declared
	// lengths are an error. Default 512 MiB (Redis' proto-max-bulk-len).
	MaxStringBytes int64
	// BatchItems is how many members one Items event carries at most.
	// Default 512.
	BatchItems int
	// CaptureRaw, when positive, keeps the raw bytes (type byte + body) of
	// every value up to this many bytes and hands them over in KeyEnd.Raw,
	// so a writer can pass them to RESTORE unchanged. Zero disables it.
	CaptureRaw int64
}

func (o *Options) withDefaults() Options {
	c := *o
	if c.MaxStringBytes <= 0 {
		c.MaxStringBytes = 512 << 20
	}
	if c.BatchItems <= 0 {
		c.BatchItems = 512
	}
	return c
}

// Validate reports options that make no sense.
func (o *Options) Validate() error {
	if o.MaxStringBytes < 0 || o.BatchItems < 0 || o.CaptureRaw < 0 {
		return fmt.Errorf("redisrdb options: limits must not be negative")
	}
	return nil
}

type state uint8

const (
	stHeader state = iota
	stTop
	stValue  // a value source is producing events
	stKeyEnd // emit KeyEnd next
	stDone
)

// Decoder reads an RDB stream one event at a time:
//
//	d := redisrdb.NewDecoder(r, redisrdb.Options{})
//	for d.Next() {
//		ev := d.Event()
//		...
//	}
//	if err := d.Err(); err != nil { ... }
//
// Next returns false at the end of the RDB (after the checksum was checked)
// or on the first error. Memory held is bounded by Options: one string or
// compact blob and one batch of members, whatever the key's size. Bytes
// after the EOF opcode (e.g. an AOF tail) are not read past the buffer.
type Decoder struct {
	r      *bufio.Reader
	opts   Options
	st     state
	err    error
	offset int64

	version int
	crcOn   bool
	crc     uint64

	capturing bool
	capture   []byte
	// noStringCapture: CaptureStrings(false).
	noStringCapture bool

	db       int
	expireAt int64
	idle     int64
	freq     int

	ev    Event
	src   valueSource
	count int64
	items []Item

	one     [1]byte
	scratch [256]byte

	dumpType byte // DUMP mode: the value type to decode, then stop
	dump     bool
	checksum uint64
}

// NewDecoder returns a decoder of the RDB file (or replication transfer)
// read from r, starting at its "REDIS" magic.
func NewDecoder(r io.Reader, opts Options) *Decoder {
	return &Decoder{r: bufio.NewReaderSize(r, 64<<10), opts: opts.withDefaults(), crcOn: true, idle: -1, freq: -1}
}

// Version is the RDB version from the header (0 before the first Next).
func (d *Decoder) Version() int { return d.version }

// Offset is how many bytes of the input were consumed.
func (d *Decoder) Offset() int64 { return d.offset }

// Capturing reports whether the current value's raw bytes are still being
// kept (Options.CaptureRaw); false once the value outgrew the limit.
func (d *Decoder) Capturing() bool { return d.capturing }

// CaptureStrings says whether string values are captured too
// (Options.CaptureRaw), as they are by default. A writer that writes every
// string with SET rather than RESTORE turns it off: their raw bytes would
// be copied for nothing. It applies from the next key on.
func (d *Decoder) CaptureStrings(on bool) { d.noStringCapture = !on }

// Event is the current event; valid until the next call to Next.
func (d *Decoder) Event() *Event { return &d.ev }

// Err is the error that stopped Next, or nil at a clean end.
func (d *Decoder) Err() error { return d.err }

// Next advances to the next event.
func (d *Decoder) Next() bool {
	if d.err != nil || d.st == stDone {
		return false
	}
	if err := d.step(); err != nil {
		d.err = d.where(err)
		return false
	}
	return d.st != stDone || d.ev.Kind != 0
}

func (d *Decoder) where(err error) error {
	if d.st == stValue || d.st == stKeyEnd {
		return fmt.Errorf("rdb db %d key %q at offset %d: %w", d.ev.DB, printable(d.ev.Key), d.offset, err)
	}
	return fmt.Errorf("rdb at offset %d: %w", d.offset, err)
}

func printable(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

func (d *Decoder) step() error {
	switch d.st {
	case stHeader:
		if d.dump {
			return d.startDump()
		}
		if err := d.readHeader(); err != nil {
			return err
		}
		d.st = stTop
	case stValue:
		for {
			d.resetBatch()
			done, err := d.src.fill(d)
			if err != nil {
				return err
			}
			if done {
				d.src = nil
				d.st = stKeyEnd
			}
			if d.ev.Kind != 0 {
				return nil
			}
			if done {
				break
			}
		}
		fallthrough
	case stKeyEnd:
		d.ev.Kind = KindKeyEnd
		d.ev.Items, d.ev.Pending, d.ev.IDs = nil, nil, nil
		d.ev.Count = d.count
		if d.capturing {
			d.ev.Raw = d.capture
		}
		d.capturing, d.capture = false, nil
		if d.dump {
			d.st = stDone
			return nil
		}
		d.st = stTop
		return nil
	}
	return d.top()
}

func (d *Decoder) resetBatch() {
	key, db, typ, enc := d.ev.Key, d.ev.DB, d.ev.Type, d.ev.Encoding
	d.ev = Event{Key: key, DB: db, Type: typ, Encoding: enc, Idle: -1, Freq: -1}
	d.items = d.items[:0]
}

func (d *Decoder) readHeader() error {
	var h [9]byte
	if err := d.readFixed(h[:]); err != nil {
		return fmt.Errorf("%w: not an RDB file (header: %v)", ErrCorrupt, err)
	}
	if string(h[:5]) != "REDIS" {
		return fmt.Errorf("%w: not an RDB file (no REDIS magic)", ErrCorrupt)
	}
	v, err := strconv.Atoi(string(h[5:]))
	if err != nil || v < 1 {
		return fmt.Errorf("%w: bad RDB version %q", ErrCorrupt, h[5:])
	}
	if v > MaxVersion {
		return fmt.Errorf("%w: RDB version %d is newer than %d (Redis 7.4); the source server is newer than this replicator supports", ErrVersion, v, MaxVersion)
	}
	d.version = v
	return nil
}

// top reads opcodes until one yields an event.
func (d *Decoder) top() error {
	for {
		d.ev = Event{DB: d.db, Idle: -1, Freq: -1}
		op, err := d.readByte()
		if err != nil {
			return err
		}
		switch op {
		case opEOF:
			return d.finish()
		case opSelectDB:
			n, err := d.readLen()
			if err != nil {
				return err
			}
			if n > 1<<31 {
				return corrupt("database number %d", n)
			}
			d.db = int(n)
			d.ev = Event{Kind: KindSelectDB, DB: d.db, Idle: -1, Freq: -1}
			return nil
		case opResizeDB:
			if _, err := d.readLen(); err != nil {
				return err
			}
			if _, err := d.readLen(); err != nil {
				return err
			}
		case opSlotInfo:
			for range 3 {
				if _, err := d.readLen(); err != nil {
					return err
				}
			}
		case opExpireTime:
			if err := d.readFixed(d.scratch[:4]); err != nil {
				return err
			}
			d.expireAt = int64(int32(binary.LittleEndian.Uint32(d.scratch[:4]))) * 1000
		case opExpireTimeMs:
			ms, err := d.readMillis()
			if err != nil {
				return err
			}
			d.expireAt = ms
		case opIdle:
			n, err := d.readLen()
			if err != nil {
				return err
			}
			d.idle = int64(n & (1<<62 - 1))
		case opFreq:
			b, err := d.readByte()
			if err != nil {
				return err
			}
			d.freq = int(b)
		case opAux:
			k, err := d.readString()
			if err != nil {
				return err
			}
			v, err := d.readString()
			if err != nil {
				return err
			}
			d.ev.Kind, d.ev.Key, d.ev.Value = KindAux, k, v
			return nil
		case opFunction2:
			code, err := d.readString()
			if err != nil {
				return err
			}
			d.ev.Kind, d.ev.Value = KindFunction, code
			return nil
		case opFunctionPreGA:
			code, err := d.readFunctionPreGA()
			if err != nil {
				return fmt.Errorf("function library in the 7.0 release-candidate format: %w", err)
			}
			d.ev.Kind, d.ev.Value = KindFunction, code
			return nil
		case opModuleAux:
			id, err := d.readLen()
			if err != nil {
				return err
			}
			name, _ := moduleName(id)
			if _, err := d.readLen(); err != nil { // when_opcode
				return err
			}
			if _, err := d.readLen(); err != nil { // when
				return err
			}
			if err := d.skipModuleData(); err != nil {
				return fmt.Errorf("module %q aux data: %w", name, err)
			}
			d.ev.Kind, d.ev.Module = KindModuleAux, name
			return nil
		default:
			return d.startKey(op)
		}
	}
}

func (d *Decoder) finish() error {
	if d.version >= 5 {
		d.crcOn = false
		var sum [8]byte
		if err := d.readFixed(sum[:]); err != nil {
			return fmt.Errorf("checksum after EOF: %w", err)
		}
		stored := binary.LittleEndian.Uint64(sum[:])
		if stored != 0 && stored != d.crc {
			return fmt.Errorf("%w: file says %016x, content hashes to %016x: the file is damaged or truncated", ErrChecksum, stored, d.crc)
		}
	}
	d.st = stDone
	d.ev = Event{}
	return nil
}

// skipModuleData skips module data written with the typed opcodes of
// src/rdb.h (RDB_MODULE_OPCODE_*), up to their EOF marker.
func (d *Decoder) skipModuleData() error {
	for {
		op, err := d.readLen()
		if err != nil {
			return err
		}
		switch op {
		case 0:
			return nil
		case 1, 2:
			_, err = d.readLen()
		case 3:
			err = d.readFixed(d.scratch[:4])
		case 4:
			err = d.readFixed(d.scratch[:8])
		case 5:
			_, err = d.readString()
		default:
			err = corrupt("module data opcode %d", op)
		}
		if err != nil {
			return err
		}
	}
}

// startKey reads a key of value type typ and emits KeyStart.
func (d *Decoder) startKey(typ byte) error {
	t, ok := TypeOf(typ)
	if !ok && typ != TypeByteModule2 && typ != TypeByteModulePreGA {
		return corrupt("unknown opcode or value type %d", typ)
	}
	key, err := d.readString()
	if err != nil {
		return fmt.Errorf("key name: %w", err)
	}
	d.ev = Event{Kind: KindKeyStart, DB: d.db, Key: key, Type: t, Encoding: typ,
		ExpireAt: d.expireAt, Idle: d.idle, Freq: d.freq}
	d.expireAt, d.idle, d.freq = 0, -1, -1
	return d.startValue(typ)
}

// startValue begins decoding a value of type typ (the key is already in
// d.ev) and completes the KeyStart event.
func (d *Decoder) startValue(typ byte) error {
	d.count = 0
	d.st = stValue
	if d.opts.CaptureRaw > 0 && !(typ == TypeByteString && d.noStringCapture) {
		d.capturing, d.capture = true, append(make([]byte, 0, 64), typ)
	}
	src, err := d.newSource(typ)
	if err != nil {
		return err
	}
	if src == nil { // a string: its value is in the KeyStart event
		d.st = stKeyEnd
		return nil
	}
	d.src = src
	return nil
}

// readFunctionPreGA reads a library saved by a Redis 7.0 release candidate
// (name, engine, a flag and an optional description, code) and returns it
// as the source FUNCTION LOAD takes, the way Redis 7.0 GA translates it on
// load: "#!<engine> name=<name>" then the code. The description is dropped,
// as Redis drops it (GA libraries have none).
func (d *Decoder) readFunctionPreGA() ([]byte, error) {
	name, err := d.readString()
	if err != nil {
		return nil, err
	}
	name = append([]byte(nil), name...) // readString's buffer is reused
	engine, err := d.readString()
	if err != nil {
		return nil, err
	}
	engine = append([]byte(nil), engine...)
	hasDesc, err := d.readLen()
	if err != nil {
		return nil, err
	}
	if hasDesc != 0 {
		if _, err := d.readString(); err != nil {
			return nil, err
		}
	}
	code, err := d.readString()
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, len(engine)+len(name)+len(code)+10)
	out = append(append(append(out, "#!"...), engine...), " name="...)
	out = append(append(append(out, name...), '\n'), code...)
	return out, nil
}
