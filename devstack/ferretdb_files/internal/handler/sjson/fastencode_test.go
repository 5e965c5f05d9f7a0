package sjson

// fastencode.go must write exactly the bytes encoding/json writes: SQLite
// compares the stored JSON text of values when it filters and indexes them.
// Added by the Sandesh local stack (devstack/ferretdb_patches.py, patch 8);
// `go test -fuzz FuzzMarshalString` searches further than the seeds below.

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"

	"github.com/stretchr/testify/assert"

	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

var encodeSeeds = []string{
	"", "plain", "_id", "0123abcXYZ_-", "a b!~", "q\"q", `back\slash`, "<&>", "tab\t", "nl\n",
	"\x00", "\x1f", "\x7f", "caf\u00e9", "\u2028\u2029", "bad\xff", "\xc3", "\xed\xa0\x80", "emoji \U0001F600",
}

func FuzzMarshalString(f *testing.F) {
	for _, seed := range encodeSeeds {
		f.Add(seed)
	}

	f.Fuzz(func(t *testing.T, s string) {
		checkMarshalString(t, s)
	})
}

func TestMarshalStringAsEncodingJSON(t *testing.T) {
	for _, s := range encodeSeeds {
		checkMarshalString(t, s)
	}

	for _, ss := range [][]string{nil, {}, {"a"}, encodeSeeds} {
		got, err := marshalStrings(ss)
		want, wantErr := json.Marshal(ss)
		if err != nil || wantErr != nil || !bytes.Equal(got, want) {
			t.Errorf("marshalStrings(%q) = %s, %v; json.Marshal: %s, %v", ss, got, err, want, wantErr)
		}
	}

	for _, n := range []int64{0, -1, 1, math.MaxInt32, math.MinInt32, math.MaxInt64, math.MinInt64} {
		got, _ := marshalInt(n)
		want, _ := json.Marshal(n)
		if !bytes.Equal(got, want) {
			t.Errorf("marshalInt(%d) = %s; json.Marshal: %s", n, got, want)
		}
	}
}

func checkMarshalString(t *testing.T, s string) {
	t.Helper()

	got, err := marshalString(s)
	want, wantErr := json.Marshal(s)

	if err != nil || wantErr != nil || !bytes.Equal(got, want) {
		t.Fatalf("marshalString(%q) = %s, %v; json.Marshal: %s, %v", s, got, err, want, wantErr)
	}
}

// A document is stored with its schema last (patch 8) and reads back as it was,
// nested documents and arrays included.
func TestMarshalPutsTheSchemaLast(t *testing.T) {
	doc := must.NotFail(types.NewDocument(
		"_id", "job-1",
		"n", int32(7),
		"l", int64(-9),
		"s", "caf\u00e9 <b> \"q\"",
		"nested", must.NotFail(types.NewDocument("k\"ey", "v", "arr", must.NotFail(types.NewArray("x", int32(1))))),
	))

	data, err := Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}

	if !bytes.HasPrefix(data, []byte(`{"_id":"job-1",`)) || !bytes.Contains(data, []byte(`,"$s":{"p":`)) {
		t.Fatalf("the schema is not after the fields: %s", data)
	}

	back, err := Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}

	assert.Equal(t, doc, back)
}
