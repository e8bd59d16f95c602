package trigger

import (
	"fmt"
)

// pair is one column of a recorded row: hstore key and value.
type pair struct {
	name string
	val  Value // ValueText or ValueNull
}

// parseHstore appends the pairs of an hstore's text output to out, as the
// changelog's key and vals read (key::text): `"name"=>"value"` or
// `"name"=>NULL`, separated by ", ", with '"' and '\' escaped by a
// backslash inside the quotes (hstore_out in contrib/hstore/hstore_io.c).
// The empty hstore is the empty string. It is parsed here rather than
// converted on the source, which is the application's server.
func parseHstore(s string, out []pair) ([]pair, error) {
	i := 0
	quoted := func() ([]byte, error) {
		if i >= len(s) || s[i] != '"' {
			return nil, fmt.Errorf("hstore text at byte %d: want '\"'", i)
		}
		i++
		var b []byte
		for start := i; i < len(s); i++ {
			switch s[i] {
			case '\\':
				b = append(b, s[start:i]...)
				i++
				if i >= len(s) {
					return nil, fmt.Errorf("hstore text ends inside an escape")
				}
				start = i
			case '"':
				b = append(b, s[start:i]...)
				i++
				if b == nil {
					b = []byte{}
				}
				return b, nil
			}
		}
		return nil, fmt.Errorf("hstore text ends inside a quoted string")
	}
	for i < len(s) {
		if len(out) > 0 {
			if i+2 > len(s) || s[i:i+2] != ", " {
				return nil, fmt.Errorf("hstore text at byte %d: want \", \"", i)
			}
			i += 2
		}
		name, err := quoted()
		if err != nil {
			return nil, err
		}
		if i+2 > len(s) || s[i:i+2] != "=>" {
			return nil, fmt.Errorf("hstore text at byte %d: want \"=>\"", i)
		}
		i += 2
		p := pair{name: string(name)}
		if i+4 <= len(s) && s[i:i+4] == "NULL" {
			i += 4
			p.val = Value{Kind: ValueNull}
		} else {
			v, err := quoted()
			if err != nil {
				return nil, err
			}
			p.val = Value{Kind: ValueText, Text: v}
		}
		out = append(out, p)
	}
	return out, nil
}
