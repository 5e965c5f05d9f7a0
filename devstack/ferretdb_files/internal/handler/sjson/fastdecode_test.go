package sjson

// The fast paths of fastdecode.go must decode whatever they accept exactly as
// encoding/json does. Added by the Sandesh local stack
// (devstack/ferretdb_patches.py, patch 7); `go test -fuzz FuzzFastPaths`
// searches further than the seeds below.

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

var fastSeeds = []string{
	`{}`, `[]`, ` { } `, `{"a":1}`, `{"a":1,"a":2}`, `{"a" : "x" , "b":[1,2,{"c":null}]}`,
	`{"$s":{"$k":["a","b"],"p":{"a":{"t":"string"},"b":{"t":"array","i":[{"t":"int"},{"t":"object","$s":{"$k":[],"p":{}}}]}}},"a":"x","b":[1,{}]}`,
	`{"$k":["a"],"p":{"a":{"t":"double"}}}`, `{"$k":["a"],"p":{"a":{"T":"double"}}}`,
	`{"$k":["a"],"p":{"a":{"t":"regex","o":"i"}}}`, `{"$k":null,"p":{}}`, `{"$k":["a"],"p":{"a":null}}`,
	`{"$k":["a"],"p":{"a":{"t":"array","i":[]}}}`, `{"$k":["a"],"p":{"a":{"t":"array","i":[null]}}}`,
	`{"$k":["a"],"p":{"a":{"t":"string"}},"x":1}`, `{"p":{},"p":{}}`,
	`"plain"`, `"caf\u00e9"`, `"caf` + "\xc3\xa9" + `"`, `"bad` + "\xff" + `"`, `"tab` + "\t" + `"`,
	`"q\"q"`, `"<&>"`, `"\ud800"`, `""`,
	`0`, `-0`, `1`, `-1`, `2147483647`, `2147483648`, `-2147483648`, `-2147483649`,
	`9223372036854775807`, `9223372036854775808`, `01`, `+1`, `1.`, `.5`, `1.5`, `1e3`, `1E+3`,
	`-1.25e-300`, `1e400`, `-`, `0x10`, `1_0`, `Infinity`, `NaN`,
	`true`, `false`, `null`, `tru`, `truex`,
	`{"a":1}x`, `{"a":1} `, ` {"a":1}`, `[1] `, `"s" `, `1 `, `[1,]`, `{"a":1,}`, `{"a"}`, `{"a":}`, `{a:1}`, `[1 2]`, `[`, `{`,
	`{"k\u0041":1}`, `{"k\"":1}`, `{"` + "\xff" + `":1}`, `{"a":"` + "\x01" + `"}`,
	`{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12G4"}`, `[[[[[]]]]]`,
}

func FuzzFastPaths(f *testing.F) {
	for _, seed := range fastSeeds {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		checkFastPaths(t, data)
	})
}

func TestFastPathsOnDocumentsFerretDBWrites(t *testing.T) {
	plain := map[string]any{
		"_id": "0123abcXYZ_-", "n": int32(-7), "l": int64(math.MaxInt64), "f": 1.5e-7,
		"s": "quote \" backslash \\ <html> & caf\u00e9 \u2028", "ok": true, "none": nil,
		"nested": map[string]any{"deep": []any{int32(1), "x", map[string]any{}, []any{}}},
		"":       "empty key",
	}
	data := mustJSON(t, plain)
	checkFastPaths(t, data)

	if _, ok := rawObject(data); !ok {
		t.Fatalf("rawObject refused a document with plain keys: %s", data)
	}

	escapedKey := mustJSON(t, map[string]any{"k\"ey": "v"})
	checkFastPaths(t, escapedKey)

	if _, ok := rawObject(escapedKey); ok {
		t.Fatalf("rawObject took an escaped key, which encoding/json must decode: %s", escapedKey)
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()

	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}

	return b
}

// checkFastPaths: whatever a fast path accepts, the decoding it stands in
// for (a json.Decoder, then checkConsumed) accepts too, with the same result.
func checkFastPaths(t *testing.T, data []byte) {
	t.Helper()

	if got, ok := rawObject(data); ok {
		var want map[string]json.RawMessage
		mustMatch(t, "rawObject", data, decodeAsBefore(data, &want, false), got, want)
	}

	if got, ok := rawArray(data); ok {
		var want []json.RawMessage
		mustMatch(t, "rawArray", data, decodeAsBefore(data, &want, false), got, want)
	}

	if got, ok := fastSchema(data); ok {
		var want schema
		mustMatch(t, "fastSchema", data, decodeAsBefore(data, &want, true), got, &want)
	}

	if got, ok := plainValueString(data); ok {
		var want string
		mustMatch(t, "plainValueString", data, decodeAsBefore(data, &want, false), got, want)
	}

	if got, ok := plainInt(data, 32); ok {
		var want int32
		mustMatch(t, "plainInt(32)", data, decodeAsBefore(data, &want, false), int32(got), want)
	}

	if got, ok := plainInt(data, 64); ok {
		var want int64
		mustMatch(t, "plainInt(64)", data, decodeAsBefore(data, &want, true), got, want)
	}

	if got, ok := plainFloat(data); ok {
		var want float64
		mustMatch(t, "plainFloat", data, decodeAsBefore(data, &want, true),
			math.Float64bits(got), math.Float64bits(want))
	}
}

func mustMatch(t *testing.T, name string, data []byte, err error, got, want any) {
	t.Helper()

	if err != nil {
		t.Fatalf("%s accepted %q, which encoding/json refuses: %v", name, data, err)
	}

	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%s(%q) = %#v, encoding/json: %#v", name, data, got, want)
	}
}
