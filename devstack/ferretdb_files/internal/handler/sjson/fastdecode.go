package sjson

// Fast paths for decoding the JSON that FerretDB itself wrote: one pass over
// the bytes, without encoding/json's reflection, a decoder per value and a
// second scan of every nested value. Each helper returns ok=false for
// anything it does not decode exactly as encoding/json would (escaped keys,
// duplicate keys, invalid UTF-8, numbers out of range, unknown schema
// fields, ...); the caller then decodes with encoding/json as before.
// Added by the Sandesh local stack (devstack/ferretdb_patches.py, patch 7).

import (
	"bytes"
	"encoding/json"
	"strconv"
	"sync"
	"unicode/utf8"
)

// fastMaxDepth is encoding/json's own nesting limit.
const fastMaxDepth = 10000

// schemaCacheSize bounds schemaCache: it is emptied when full.
const schemaCacheSize = 1024

// schemaCache holds decoded schemas by their JSON text. The documents of a
// collection share a few schemas, and decoding a document's schema cost
// more than decoding its values. A decoded schema is only ever read.
var schemaCache struct {
	sync.Mutex
	byText map[string]*schema
}

// cachedSchema is fastSchema, remembered.
func cachedSchema(data []byte) (*schema, bool) {
	schemaCache.Lock()
	sch, ok := schemaCache.byText[string(data)]
	schemaCache.Unlock()

	if ok {
		return sch, true
	}

	if sch, ok = fastSchema(data); !ok {
		return nil, false
	}

	schemaCache.Lock()
	if len(schemaCache.byText) >= schemaCacheSize || schemaCache.byText == nil {
		schemaCache.byText = make(map[string]*schema)
	}
	schemaCache.byText[string(data)] = sch
	schemaCache.Unlock()

	return sch, true
}

// rawObject splits a JSON object into its members' raw values, as decoding
// into map[string]json.RawMessage does (and, like checkConsumed, takes
// nothing after it). The values share data's bytes.
func rawObject(data []byte) (map[string]json.RawMessage, bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return nil, false
	}

	res := make(map[string]json.RawMessage)

	if i = skipSpace(data, i+1); i < len(data) && data[i] == '}' {
		return res, i+1 == len(data)
	}

	for {
		key, end, ok := plainString(data, i)
		if !ok {
			return nil, false
		}

		if _, dup := res[key]; dup {
			return nil, false
		}

		if i = skipSpace(data, end); i >= len(data) || data[i] != ':' {
			return nil, false
		}

		start := skipSpace(data, i+1)

		if end, ok = skipValue(data, start, 1); !ok {
			return nil, false
		}

		res[key] = data[start:end:end]

		next, closed, ok := nextMember(data, end, '}')
		if !ok {
			return nil, false
		}

		if closed {
			return res, next == len(data) // checkConsumed takes nothing after it
		}

		i = next
	}
}

// rawArray splits a JSON array into its elements' raw values, as decoding
// into []json.RawMessage does. The values share data's bytes.
func rawArray(data []byte) ([]json.RawMessage, bool) {
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '[' {
		return nil, false
	}

	res := []json.RawMessage{}

	if i = skipSpace(data, i+1); i < len(data) && data[i] == ']' {
		return res, i+1 == len(data)
	}

	for {
		end, ok := skipValue(data, i, 1)
		if !ok {
			return nil, false
		}

		res = append(res, data[i:end:end])

		next, closed, ok := nextMember(data, end, ']')
		if !ok {
			return nil, false
		}

		if closed {
			return res, next == len(data)
		}

		i = next
	}
}

// nextMember reads what follows a member of an object or an array that ends
// at data[end]: a comma, and it returns where the next member starts; or the
// closing byte, and it returns the index after it and closed.
func nextMember(data []byte, end int, closing byte) (next int, closed, ok bool) {
	i := skipSpace(data, end)
	if i >= len(data) {
		return 0, false, false
	}

	switch data[i] {
	case closing:
		return i + 1, true, true
	case ',':
		return skipSpace(data, i+1), false, true
	default:
		return 0, false, false
	}
}

// fastSchema decodes a document's schema ($s) when every field is one this
// helper knows ($k, p; and t, $s, i in the elements).
func fastSchema(data []byte) (*schema, bool) {
	members, ok := rawObject(data)
	if !ok {
		return nil, false
	}

	var sch schema

	for key, raw := range members {
		switch key {
		case "$k":
			if sch.Keys, ok = arrayOf(raw, plainValueString); !ok {
				return nil, false
			}
		case "p":
			props, ok := rawObject(raw)
			if !ok {
				return nil, false
			}

			sch.Properties = make(map[string]*elem, len(props))

			for name, rawElem := range props {
				if sch.Properties[name], ok = fastElem(rawElem); !ok {
					return nil, false
				}
			}
		default:
			return nil, false
		}
	}

	return &sch, true
}

func fastElem(data []byte) (*elem, bool) {
	members, ok := rawObject(data)
	if !ok {
		return nil, false
	}

	var e elem

	for key, raw := range members {
		switch key {
		case "t":
			t, ok := plainValueString(raw)
			if !ok {
				return nil, false
			}

			e.Type = elemType(t)
		case "$s":
			if e.Schema, ok = fastSchema(raw); !ok {
				return nil, false
			}
		case "i":
			if e.Items, ok = arrayOf(raw, fastElem); !ok {
				return nil, false
			}
		default:
			return nil, false
		}
	}

	return &e, true
}

// arrayOf decodes a JSON array whose every element `decode` takes.
func arrayOf[T any](data []byte, decode func([]byte) (T, bool)) ([]T, bool) {
	items, ok := rawArray(data)
	if !ok {
		return nil, false
	}

	res := make([]T, len(items))

	for n, item := range items {
		if res[n], ok = decode(item); !ok {
			return nil, false
		}
	}

	return res, true
}

// decodeAsBefore decodes data into v as this package did before patch 7:
// a json.Decoder, then checkConsumed. The fallback of every fast path.
func decodeAsBefore(data []byte, v any, disallowUnknownFields bool) error {
	r := bytes.NewReader(data)
	dec := json.NewDecoder(r)

	if disallowUnknownFields {
		dec.DisallowUnknownFields()
	}

	if err := dec.Decode(v); err != nil {
		return err
	}

	return checkConsumed(dec, r)
}

// plainValueString decodes a JSON string without escapes that is all of data.
func plainValueString(data []byte) (string, bool) {
	s, end, ok := plainString(data, 0)
	if !ok || end != len(data) {
		return "", false
	}

	return s, true
}

// plainString decodes the JSON string at data[i], if it has no escapes and
// is valid UTF-8 (encoding/json replaces invalid bytes), and returns the
// index after it.
func plainString(data []byte, i int) (string, int, bool) {
	if i >= len(data) || data[i] != '"' {
		return "", 0, false
	}

	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			s := data[i+1 : j]
			if !utf8.Valid(s) {
				return "", 0, false
			}

			return string(s), j + 1, true
		case c == '\\' || c < 0x20:
			return "", 0, false
		}
	}

	return "", 0, false
}

// plainInt decodes a JSON integer (no fraction or exponent) that is all of data.
func plainInt(data []byte, bits int) (int64, bool) {
	end, ok := skipNumber(data, 0)
	if !ok || end != len(data) {
		return 0, false
	}

	for _, c := range data {
		if c == '.' || c == 'e' || c == 'E' {
			return 0, false
		}
	}

	n, err := strconv.ParseInt(string(data), 10, bits)

	return n, err == nil
}

// plainFloat decodes a JSON number that is all of data, as encoding/json does.
func plainFloat(data []byte) (float64, bool) {
	end, ok := skipNumber(data, 0)
	if !ok || end != len(data) {
		return 0, false
	}

	f, err := strconv.ParseFloat(string(data), 64)

	return f, err == nil
}

// skipValue returns the index after the valid JSON value at data[i].
func skipValue(data []byte, i, depth int) (int, bool) {
	if i >= len(data) {
		return 0, false
	}

	switch data[i] {
	case '"':
		return skipString(data, i)
	case '{':
		return skipComposite(data, i, depth, '}', true)
	case '[':
		return skipComposite(data, i, depth, ']', false)
	case 't':
		return skipLiteral(data, i, "true")
	case 'f':
		return skipLiteral(data, i, "false")
	case 'n':
		return skipLiteral(data, i, "null")
	default:
		return skipNumber(data, i)
	}
}

// skipComposite skips an object (keyed) or an array starting at data[i].
func skipComposite(data []byte, i, depth int, closing byte, keyed bool) (int, bool) {
	if depth >= fastMaxDepth {
		return 0, false
	}

	if i = skipSpace(data, i+1); i < len(data) && data[i] == closing {
		return i + 1, true
	}

	for {
		var end int
		var ok bool

		if keyed {
			if end, ok = skipString(data, i); !ok {
				return 0, false
			}

			if i = skipSpace(data, end); i >= len(data) || data[i] != ':' {
				return 0, false
			}

			i = skipSpace(data, i+1)
		}

		if end, ok = skipValue(data, i, depth+1); !ok {
			return 0, false
		}

		next, closed, ok := nextMember(data, end, closing)
		if !ok || closed {
			return next, ok
		}

		i = next
	}
}

// skipString returns the index after the valid JSON string at data[i].
func skipString(data []byte, i int) (int, bool) {
	if i >= len(data) || data[i] != '"' {
		return 0, false
	}

	for j := i + 1; j < len(data); j++ {
		switch c := data[j]; {
		case c == '"':
			return j + 1, true
		case c < 0x20:
			return 0, false
		case c == '\\':
			if j+1 >= len(data) {
				return 0, false
			}

			switch data[j+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				j++
			case 'u':
				if j+5 >= len(data) {
					return 0, false
				}

				for _, h := range data[j+2 : j+6] {
					if !isHex(h) {
						return 0, false
					}
				}

				j += 5
			default:
				return 0, false
			}
		}
	}

	return 0, false
}

// skipNumber returns the index after the valid JSON number at data[i].
func skipNumber(data []byte, i int) (int, bool) {
	if i < len(data) && data[i] == '-' {
		i++
	}

	switch {
	case i < len(data) && data[i] == '0':
		i++
	case i < len(data) && data[i] >= '1' && data[i] <= '9':
		i = skipDigits(data, i)
	default:
		return 0, false
	}

	if i < len(data) && data[i] == '.' {
		start := i + 1
		if i = skipDigits(data, start); i == start {
			return 0, false
		}
	}

	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}

		start := i
		if i = skipDigits(data, start); i == start {
			return 0, false
		}
	}

	return i, true
}

func skipDigits(data []byte, i int) int {
	for i < len(data) && data[i] >= '0' && data[i] <= '9' {
		i++
	}

	return i
}

func skipLiteral(data []byte, i int, literal string) (int, bool) {
	if len(data)-i < len(literal) || string(data[i:i+len(literal)]) != literal {
		return 0, false
	}

	return i + len(literal), true
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}

	return i
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}
