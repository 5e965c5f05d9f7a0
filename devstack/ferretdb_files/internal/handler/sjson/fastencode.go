// Added by Sandesh's devstack (patch 8, see devstack/ferretdb_patches.py).

package sjson

import (
	"encoding/json"
	"strconv"
)

// marshalString encodes s exactly as json.Marshal does. Strings of printable
// ASCII that need no escape (json.Marshal also escapes <, > and &) are
// written without reflection; any other goes through json.Marshal.
func marshalString(s string) ([]byte, error) {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return json.Marshal(s)
		}
	}

	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	b = append(b, s...)

	return append(b, '"'), nil
}

// marshalStrings encodes ss exactly as json.Marshal does.
func marshalStrings(ss []string) ([]byte, error) {
	if ss == nil {
		return []byte("null"), nil
	}

	b := []byte{'['}

	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}

		e, err := marshalString(s)
		if err != nil {
			return nil, err
		}

		b = append(b, e...)
	}

	return append(b, ']'), nil
}

// marshalInt encodes n exactly as json.Marshal does.
func marshalInt(n int64) ([]byte, error) {
	return strconv.AppendInt(nil, n, 10), nil
}
