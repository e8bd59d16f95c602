package redisrdb

import (
	"errors"
	"fmt"
	"strconv"
)

// RDB value type bytes (src/rdb.h). The type byte both names the Redis type
// and the on-disk encoding of its value.
const (
	TypeByteString              = 0
	TypeByteList                = 1
	TypeByteSet                 = 2
	TypeByteZSet                = 3
	TypeByteHash                = 4
	TypeByteZSet2               = 5
	TypeByteModulePreGA         = 6
	TypeByteModule2             = 7
	TypeByteHashZipmap          = 9
	TypeByteListZiplist         = 10
	TypeByteSetIntset           = 11
	TypeByteZSetZiplist         = 12
	TypeByteHashZiplist         = 13
	TypeByteListQuicklist       = 14
	TypeByteStreamListpacks     = 15
	TypeByteHashListpack        = 16
	TypeByteZSetListpack        = 17
	TypeByteListQuicklist2      = 18
	TypeByteStreamListpacks2    = 19
	TypeByteSetListpack         = 20
	TypeByteStreamListpacks3    = 21
	TypeByteHashMetadataPreGA   = 22
	TypeByteHashListpackExPreGA = 23
	TypeByteHashMetadata        = 24
	TypeByteHashListpackEx      = 25
)

// Opcodes that are not value types.
const (
	opSlotInfo      = 244
	opFunction2     = 245
	opFunctionPreGA = 246
	opModuleAux     = 247
	opIdle          = 248
	opFreq          = 249
	opAux           = 250
	opResizeDB      = 251
	opExpireTimeMs  = 252
	opExpireTime    = 253
	opSelectDB      = 254
	opEOF           = 255
)

// MaxVersion is the newest RDB format version this package reads (Redis 7.4).
const MaxVersion = 12

// Type is the Redis data type of a key, as the TYPE command names it.
type Type uint8

// Redis data types.
const (
	TypeString Type = iota + 1
	TypeList
	TypeSet
	TypeZSet
	TypeHash
	TypeStream
)

func (t Type) String() string {
	switch t {
	case TypeString:
		return "string"
	case TypeList:
		return "list"
	case TypeSet:
		return "set"
	case TypeZSet:
		return "zset"
	case TypeHash:
		return "hash"
	case TypeStream:
		return "stream"
	}
	return "type(" + strconv.Itoa(int(t)) + ")"
}

// TypeOf maps an RDB value type byte to its Redis type; ok is false for
// module values and unknown bytes.
func TypeOf(b byte) (Type, bool) {
	switch b {
	case TypeByteString:
		return TypeString, true
	case TypeByteList, TypeByteListZiplist, TypeByteListQuicklist, TypeByteListQuicklist2:
		return TypeList, true
	case TypeByteSet, TypeByteSetIntset, TypeByteSetListpack:
		return TypeSet, true
	case TypeByteZSet, TypeByteZSet2, TypeByteZSetZiplist, TypeByteZSetListpack:
		return TypeZSet, true
	case TypeByteHash, TypeByteHashZipmap, TypeByteHashZiplist, TypeByteHashListpack,
		TypeByteHashMetadataPreGA, TypeByteHashListpackExPreGA, TypeByteHashMetadata, TypeByteHashListpackEx:
		return TypeHash, true
	case TypeByteStreamListpacks, TypeByteStreamListpacks2, TypeByteStreamListpacks3:
		return TypeStream, true
	}
	return 0, false
}

// MinVersion is the first RDB version whose loader understands the value
// type byte b: a DUMP payload carrying b can be restored only by a server
// whose RDB version is at least this.
func MinVersion(b byte) int {
	switch {
	case b <= TypeByteZSet2:
		return 1
	case b == TypeByteModule2:
		return 8
	case b >= TypeByteHashZipmap && b <= TypeByteHashZiplist:
		return 2
	case b == TypeByteListQuicklist:
		return 7
	case b == TypeByteStreamListpacks:
		return 9
	case b >= TypeByteHashListpack && b <= TypeByteStreamListpacks2:
		return 10
	case b == TypeByteSetListpack || b == TypeByteStreamListpacks3:
		return 11
	case b >= TypeByteHashMetadataPreGA && b <= TypeByteHashListpackEx:
		return 12
	}
	return MaxVersion + 1
}

// Kind says what an Event carries.
type Kind uint8

// Event kinds, in the order they can appear for one key: KeyStart, then
// any number of Items (or, for streams, Items, StreamMeta, and per group
// StreamGroup, StreamPending..., per consumer StreamConsumer,
// StreamConsumerPending...), then KeyEnd.
const (
	KindAux                   Kind = iota + 1 // Key=aux field name, Value=its value
	KindFunction                              // Value=function library source (FUNCTION LOAD)
	KindModuleAux                             // Module=module type name; the data was skipped
	KindSelectDB                              // DB=the database the following keys belong to
	KindKeyStart                              // DB, Key, Type, Encoding, ExpireAt, Idle, Freq; Value for strings
	KindItems                                 // Items: a batch of members
	KindStreamMeta                            // Stream
	KindStreamGroup                           // Group
	KindStreamPending                         // Pending: a batch of the group's PEL
	KindStreamConsumer                        // Consumer
	KindStreamConsumerPending                 // IDs: a batch of the consumer's PEL
	KindKeyEnd                                // Count items were emitted; Raw holds the value bytes when captured
)

// StreamID is a stream entry ID, ms-seq.
type StreamID struct{ Ms, Seq uint64 }

func (id StreamID) String() string { return fmt.Sprintf("%d-%d", id.Ms, id.Seq) }

// Item is one member of a collection. Which fields are set depends on the
// key's type: list and set use Member; zset Member and Score; hash Member
// (the field), Value and ExpireAt (field TTL, Unix ms, 0 = none); stream
// ID and Fields (field, value, field, value...).
type Item struct {
	Member   []byte
	Value    []byte
	Score    float64
	ExpireAt int64
	ID       StreamID
	Fields   [][]byte
}

// StreamMeta is a stream's bookkeeping, emitted after its entries.
// FirstID, MaxDeletedID and EntriesAdded are exact only when HasV2 (RDB
// type 19 and later); for older encodings EntriesAdded is Length.
type StreamMeta struct {
	Length       uint64
	LastID       StreamID
	FirstID      StreamID
	MaxDeletedID StreamID
	EntriesAdded uint64
	HasV2        bool
}

// StreamGroup is a consumer group. EntriesRead is exact only when HasV2.
type StreamGroup struct {
	Name        []byte
	LastID      StreamID
	EntriesRead uint64
	HasV2       bool
}

// StreamConsumer is a consumer of the current group. ActiveTime equals
// SeenTime for encodings before RDB type 21.
type StreamConsumer struct {
	Name       []byte
	SeenTime   int64
	ActiveTime int64
}

// PendingEntry is one entry of a group's pending entries list.
type PendingEntry struct {
	ID            StreamID
	DeliveryTime  int64
	DeliveryCount uint64
}

// Event is one step of a decoded RDB stream. Its slices are valid until the
// next call to Next; copy what must outlive it.
type Event struct {
	Kind     Kind
	DB       int
	Key      []byte
	Type     Type
	Encoding byte  // the RDB value type byte
	ExpireAt int64 // Unix ms; 0 = no expiry
	Idle     int64 // LRU idle seconds; -1 when absent
	Freq     int   // LFU counter; -1 when absent
	Value    []byte
	Module   string

	Items    []Item
	Stream   StreamMeta
	Group    StreamGroup
	Consumer StreamConsumer
	Pending  []PendingEntry
	IDs      []StreamID

	Count int64  // KeyEnd: members emitted (1 for a string)
	Raw   []byte // KeyEnd: type byte + value body, when captured (Options.CaptureRaw); handed over: the decoder keeps no reference to it
}

// Errors callers branch on. Decoding errors wrap one of these (or an I/O
// error) with the key and offset.
var (
	ErrCorrupt     = errors.New("corrupt RDB data")
	ErrVersion     = errors.New("unsupported RDB version")
	ErrChecksum    = errors.New("RDB checksum mismatch")
	ErrModule      = errors.New("RDB holds a Redis module value")
	ErrTooLarge    = errors.New("RDB declares a string larger than the configured limit")
	ErrUnsupported = errors.New("unsupported RDB content")
)

// ModuleError names the module whose value cannot be carried.
type ModuleError struct {
	Module     string
	EncVersion int
	Key        string
}

func (e *ModuleError) Error() string {
	return fmt.Sprintf("key %q holds a value of Redis module type %q (encoding version %d): module data cannot be copied to a server without that module; remove the key or load the module on both sides and copy it with the module's own tools", e.Key, e.Module, e.EncVersion)
}

func (e *ModuleError) Unwrap() error { return ErrModule }

// moduleName decodes the 9-character module type name packed into the
// upper 54 bits of a module id (6 bits per character).
func moduleName(id uint64) (string, int) {
	const charset = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	var name [9]byte
	for i := range name {
		name[i] = charset[(id>>(64-6*(uint(i)+1)))&63]
	}
	return string(name[:]), int(id & 1023)
}
