package redisrdb

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
)

// A DUMP payload (src/cluster.c createDumpPayload) is
//
//	value type byte, value body, RDB version (2 bytes LE), CRC-64 (8 bytes LE)
//
// with the CRC over everything before it.

// DumpVersion checks a DUMP payload's trailer and returns its RDB version.
func DumpVersion(payload []byte) (int, error) {
	if len(payload) < 11 {
		return 0, fmt.Errorf("%w: DUMP payload of %d bytes is too short", ErrCorrupt, len(payload))
	}
	n := len(payload)
	ver := int(binary.LittleEndian.Uint16(payload[n-10:]))
	if sum := binary.LittleEndian.Uint64(payload[n-8:]); sum != CRC64(0, payload[:n-8]) {
		return ver, fmt.Errorf("%w: DUMP payload checksum does not match", ErrChecksum)
	}
	return ver, nil
}

// NewDumpDecoder decodes the value in a DUMP payload as if it were key in
// database db of an RDB stream: the events are KeyStart, Items..., KeyEnd.
// The trailer's checksum and version are checked first.
func NewDumpDecoder(key []byte, payload []byte, opts Options) (*Decoder, error) {
	ver, err := DumpVersion(payload)
	if err != nil {
		return nil, fmt.Errorf("key %q: %w", printable(key), err)
	}
	if ver > MaxVersion {
		return nil, fmt.Errorf("key %q: %w: DUMP payload of RDB version %d (newest supported %d)", printable(key), ErrVersion, ver, MaxVersion)
	}
	body := payload[:len(payload)-10]
	d := &Decoder{
		r:       bufio.NewReaderSize(bytes.NewReader(body[1:]), 4096),
		opts:    opts.withDefaults(),
		version: ver,
		dump:    true,
		idle:    -1, freq: -1,
	}
	typ := body[0]
	t, _ := TypeOf(typ)
	d.ev = Event{Kind: KindKeyStart, Key: key, Type: t, Encoding: typ, Idle: -1, Freq: -1}
	d.dumpType = typ
	d.st = stHeader // the first Next starts the value
	return d, nil
}

// nextDump starts the value of a DUMP decoder.
func (d *Decoder) startDump() error {
	if _, ok := TypeOf(d.dumpType); !ok && d.dumpType != TypeByteModule2 && d.dumpType != TypeByteModulePreGA {
		return corrupt("unknown value type %d in DUMP payload", d.dumpType)
	}
	d.consume([]byte{d.dumpType})
	return d.startValue(d.dumpType)
}

// AppendDump is EncodeDump in place: it appends the trailer to raw
// (reusing its spare capacity when there is room), so raw must not be
// used afterwards. A captured KeyEnd.Raw, which the decoder hands over,
// becomes its DUMP payload without being copied again.
func AppendDump(raw []byte, ver int) []byte {
	out := binary.LittleEndian.AppendUint16(raw, uint16(ver))
	return binary.LittleEndian.AppendUint64(out, CRC64(0, out))
}

// EncodeDump builds a DUMP payload from raw value bytes (type byte + body,
// as Event.Raw holds them), stamped with RDB version ver.
func EncodeDump(raw []byte, ver int) []byte {
	out := make([]byte, 0, len(raw)+10)
	out = append(out, raw...)
	out = binary.LittleEndian.AppendUint16(out, uint16(ver))
	return binary.LittleEndian.AppendUint64(out, CRC64(0, out))
}
