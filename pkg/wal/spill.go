package wal

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	"replicator/pkg/position"
)

// Huge transactions: this package keeps protocol v1 (text, no streaming of
// in-progress transactions) and spills instead. A transaction's changes are
// held in memory until they pass memLimit bytes; then that in-memory
// segment is appended to a temporary file and memory starts over. Apply
// reads the file back sequentially (one change in memory at a time), then
// the in-memory tail. The file is deleted when the transaction is closed,
// after the target committed it. Compared with v2 streaming, a transaction
// reaches apply only once committed on the source, so apply never sees an
// aborted change and exactly-once stays a matter of one position.

// changeBuffer holds one transaction's changes.
type changeBuffer struct {
	dir      string
	memLimit int64

	mem     []Change
	memSize int64
	file    *os.File
	w       *bufio.Writer
	spilled int // changes in the file
	rels    []*Relation
	relIdx  map[*Relation]int
}

func newChangeBuffer(dir string, memLimit int64) *changeBuffer {
	return &changeBuffer{dir: dir, memLimit: memLimit}
}

func (b *changeBuffer) add(c Change) error {
	b.mem = append(b.mem, c)
	b.memSize += c.size()
	if b.memSize > b.memLimit {
		return b.spill()
	}
	return nil
}

// spill appends the in-memory segment to the file.
func (b *changeBuffer) spill() error {
	if b.file == nil {
		f, err := os.CreateTemp(b.dir, "replicator-txn-*.spill")
		if err != nil {
			return fmt.Errorf("spill a large transaction to disk: %w", err)
		}
		b.file = f
		b.w = bufio.NewWriterSize(f, 256<<10)
		b.relIdx = map[*Relation]int{}
	}
	var scratch []byte
	for i := range b.mem {
		scratch = b.encode(scratch[:0], &b.mem[i])
		if _, err := b.w.Write(scratch); err != nil {
			return fmt.Errorf("spill a large transaction to %s: %w", b.file.Name(), err)
		}
		b.spilled++
	}
	if err := b.w.Flush(); err != nil {
		return fmt.Errorf("spill a large transaction to %s: %w", b.file.Name(), err)
	}
	clear(b.mem)
	b.mem = b.mem[:0]
	b.memSize = 0
	return nil
}

// inMemory is the size of what the buffer holds in memory.
func (b *changeBuffer) inMemory() int64 { return b.memSize }

func (b *changeBuffer) each(fn func(*Change) error) error {
	if b.file != nil && b.spilled > 0 {
		if _, err := b.file.Seek(0, io.SeekStart); err != nil {
			return fmt.Errorf("read spilled transaction %s: %w", b.file.Name(), err)
		}
		r := bufio.NewReaderSize(b.file, 256<<10)
		var c Change
		for i := 0; i < b.spilled; i++ {
			if err := b.decode(r, &c); err != nil {
				return fmt.Errorf("read spilled transaction %s (change %d): %w", b.file.Name(), i, err)
			}
			if err := fn(&c); err != nil {
				return err
			}
		}
		// The file is appended to only before the transaction is complete;
		// reading moved the offset, so a later spill would need Seek(End).
		if _, err := b.file.Seek(0, io.SeekEnd); err != nil {
			return err
		}
	}
	for i := range b.mem {
		if err := fn(&b.mem[i]); err != nil {
			return err
		}
	}
	return nil
}

func (b *changeBuffer) close() error {
	b.mem = nil
	if b.file == nil {
		return nil
	}
	name := b.file.Name()
	b.file.Close()
	b.file = nil
	if err := os.Remove(name); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("delete spill file %s: %w", name, err)
	}
	return nil
}

func (b *changeBuffer) rel(r *Relation) uint64 {
	if r == nil {
		return 0
	}
	i, ok := b.relIdx[r]
	if !ok {
		b.rels = append(b.rels, r)
		i = len(b.rels)
		b.relIdx[r] = i
	}
	return uint64(i)
}

func (b *changeBuffer) relAt(i uint64) (*Relation, error) {
	if i == 0 {
		return nil, nil
	}
	if i > uint64(len(b.rels)) {
		return nil, fmt.Errorf("relation index %d out of range", i)
	}
	return b.rels[i-1], nil
}

// Spill record: kind, rel, position (kind, value), old image, new image, truncate list, flags, xid.
// An image is a count (0 = absent, n+1 = n columns) then per column its
// kind and, for text, length and bytes.
func (b *changeBuffer) encode(dst []byte, c *Change) []byte {
	dst = append(dst, byte(c.Kind))
	dst = binary.AppendUvarint(dst, b.rel(c.Rel))
	dst = append(dst, byte(c.Pos.Kind()))
	dst = binary.AppendUvarint(dst, c.Pos.Uint64())
	dst = appendImage(dst, c.Old)
	dst = appendImage(dst, c.New)
	dst = binary.AppendUvarint(dst, uint64(len(c.Truncated)))
	for _, r := range c.Truncated {
		dst = binary.AppendUvarint(dst, b.rel(r))
	}
	var flags byte
	if c.Cascade {
		flags |= 1
	}
	if c.RestartIdentity {
		flags |= 2
	}
	dst = append(dst, flags)
	return binary.AppendUvarint(dst, c.XID)
}

func appendImage(dst []byte, img []Value) []byte {
	if img == nil {
		return binary.AppendUvarint(dst, 0)
	}
	dst = binary.AppendUvarint(dst, uint64(len(img))+1)
	for _, v := range img {
		dst = append(dst, v.Kind)
		if v.Kind == ValueText {
			dst = binary.AppendUvarint(dst, uint64(len(v.Text)))
			dst = append(dst, v.Text...)
		}
	}
	return dst
}

func (b *changeBuffer) decode(r *bufio.Reader, c *Change) error {
	*c = Change{}
	k, err := r.ReadByte()
	if err != nil {
		return err
	}
	c.Kind = Kind(k)
	ri, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	if c.Rel, err = b.relAt(ri); err != nil {
		return err
	}
	pk, err := r.ReadByte()
	if err != nil {
		return err
	}
	pv, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	if c.Pos, err = position.New(position.Kind(pk), pv); err != nil {
		return err
	}
	if c.Old, err = readImage(r); err != nil {
		return err
	}
	if c.New, err = readImage(r); err != nil {
		return err
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return err
	}
	for ; n > 0; n-- {
		ri, err := binary.ReadUvarint(r)
		if err != nil {
			return err
		}
		rel, err := b.relAt(ri)
		if err != nil {
			return err
		}
		c.Truncated = append(c.Truncated, rel)
	}
	flags, err := r.ReadByte()
	if err != nil {
		return err
	}
	c.Cascade, c.RestartIdentity = flags&1 != 0, flags&2 != 0
	c.XID, err = binary.ReadUvarint(r)
	return err
}

func readImage(r *bufio.Reader) ([]Value, error) {
	n, err := binary.ReadUvarint(r)
	if err != nil || n == 0 {
		return nil, err
	}
	img := make([]Value, n-1)
	for i := range img {
		k, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		img[i].Kind = k
		if k != ValueText {
			continue
		}
		l, err := binary.ReadUvarint(r)
		if err != nil {
			return nil, err
		}
		img[i].Text = make([]byte, l)
		if _, err := io.ReadFull(r, img[i].Text); err != nil {
			return nil, err
		}
	}
	return img, nil
}
