package redisrdb

import "fmt"

// lzfDecompress expands LZF data (liblzf's format, which Redis uses for
// compressed strings) into exactly n bytes.
//
// A control byte below 32 starts a literal run of ctrl+1 bytes; otherwise
// its top 3 bits (7 = "read one more length byte") give a back-reference
// length-2 and its low 5 bits plus the next byte the distance-1.
func lzfDecompress(in []byte, n int) ([]byte, error) {
	out := make([]byte, 0, n)
	for i := 0; i < len(in); {
		ctrl := int(in[i])
		i++
		if ctrl < 32 {
			run := ctrl + 1
			if i+run > len(in) || len(out)+run > n {
				return nil, fmt.Errorf("%w: LZF literal run past the end", ErrCorrupt)
			}
			out = append(out, in[i:i+run]...)
			i += run
			continue
		}
		length := ctrl >> 5
		if length == 7 {
			if i >= len(in) {
				return nil, fmt.Errorf("%w: LZF truncated", ErrCorrupt)
			}
			length += int(in[i])
			i++
		}
		if i >= len(in) {
			return nil, fmt.Errorf("%w: LZF truncated", ErrCorrupt)
		}
		ref := len(out) - ((ctrl & 0x1f) << 8) - int(in[i]) - 1
		i++
		length += 2
		if ref < 0 || len(out)+length > n {
			return nil, fmt.Errorf("%w: LZF back-reference out of range", ErrCorrupt)
		}
		// Byte by byte: the reference may overlap what it produces.
		for k := 0; k < length; k++ {
			out = append(out, out[ref+k])
		}
	}
	if len(out) != n {
		return nil, fmt.Errorf("%w: LZF expanded to %d bytes, header says %d", ErrCorrupt, len(out), n)
	}
	return out, nil
}
