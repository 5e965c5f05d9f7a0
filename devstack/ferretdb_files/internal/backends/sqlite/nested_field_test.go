// Added for patch 12 (a nested field's equality pushed down, through an index).

package sqlite

import (
	"database/sql"
	"fmt"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/FerretDB/FerretDB/internal/backends"
	"github.com/FerretDB/FerretDB/internal/backends/sqlite/metadata"
	"github.com/FerretDB/FerretDB/internal/handler/common"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/fsql"
	"github.com/FerretDB/FerretDB/internal/util/iterator"
	"github.com/FerretDB/FerretDB/internal/util/must"
	"github.com/FerretDB/FerretDB/internal/util/state"
	"github.com/FerretDB/FerretDB/internal/util/testutil"
)

func arr(values ...any) *types.Array { return must.NotFail(types.NewArray(values...)) }

func TestNestedFieldColumns(t *testing.T) {
	for path, nested := range map[string]bool{
		"fields.city": true, "a.b.c": true, "a_1.B2": true,
		"fields": false, "fields.": false, ".city": false, "fields.1x": false, "fields.ci-ty": false,
		"fields.$x": false, "fields.c'ty": false, "": false,
	} {
		if got := metadata.NestedFieldPath(path); got != nested {
			t.Errorf("NestedFieldPath(%q) = %v", path, got)
		}
	}

	want := `CASE WHEN json_type(_ferretdb_sjson, '$.a') = 'array' OR json_type(_ferretdb_sjson, '$.a.b') = 'array'` +
		` THEN '[' ELSE _ferretdb_sjson->'a'->'b'->'c' END`
	if got := metadata.NestedFieldColumn("a.b.c"); got != want {
		t.Fatalf("NestedFieldColumn: %s", got)
	}

	if got := metadata.IndexColumn("a.b.c", false); got != want {
		t.Fatalf("non-unique: %s", got)
	}

	for field, column := range map[string]string{
		"a.b.c": `_ferretdb_sjson->"a"->"b"->"c"`, "email": `_ferretdb_sjson->"email"`,
	} {
		if got := metadata.IndexColumn(field, true); got != column {
			t.Errorf("unique %s: %s", field, got)
		}
	}

	if got := metadata.IndexColumn("email", false); got != `_ferretdb_sjson->"email"` {
		t.Errorf("top-level: %s", got)
	}
}

func TestFieldTermsNestedEquality(t *testing.T) {
	column := metadata.NestedFieldColumn("fields.city")
	terms, args := fieldTerms(cond("account_id", "acct", "fields.city", "New York"), false)
	want := fmt.Sprintf(`((%[1]s >= ? AND %[1]s <= ?) OR (%[1]s >= '[' AND %[1]s < '\'))`, column)

	require.Len(t, terms, 2)
	require.Equal(t, want, terms[1])
	require.Equal(t, []any{`"acct"`, `"New York"`, `"New York"`}, args)

	terms, _ = fieldTerms(cond("fields.city", "Pune"), true)
	require.True(t, strings.HasPrefix(terms[0], "((+CASE WHEN"), terms[0])

	// a top-level $and's documents give their terms too (a segment's filter),
	// a nested one's as well; anything but documents in it, none
	flat, flatArgs := fieldTerms(cond("account_id", "acct", "fields.city", "New York"), false)
	for _, f := range []*types.Document{
		cond("$and", arr(cond("account_id", "acct"), cond("fields.city", "New York"))),
		cond("account_id", "acct", "$and", arr(cond("$and", arr(cond("fields.city", "New York"))))),
	} {
		terms, args = fieldTerms(f, false)
		require.Equal(t, flat, terms, "%v", f)
		require.Equal(t, flatArgs, args, "%v", f)
	}

	terms, _ = fieldTerms(cond("$and", arr(cond("account_id", "acct"), "x")), false)
	require.Empty(t, terms)

	// the count's terms (fewSearchMatches): no "or an array"
	terms, _ = fieldTermsOf(cond("account_id", "acct", "fields.city", "Pune"), false, false)
	require.Equal(t, []string{`_ferretdb_sjson->'account_id' IN (?)`,
		fmt.Sprintf(`(%[1]s >= ? AND %[1]s <= ?)`, column)}, terms)

	// what JSON does not write as is, other types and operators, and paths
	// that are not plain: left to the handler
	for _, c := range []any{"a&b", "x\u2028", `q"`, "a\\b", "\x01", int32(3), cond("$ne", "x"), cond("$in", arr("x"))} {
		if terms, _ := fieldTerms(cond("fields.city", c), false); len(terms) != 0 {
			t.Errorf("%v: %v", c, terms)
		}
	}

	for _, key := range []string{"fields.ci-ty", "fields.0", "fields.$", "a..b"} {
		if terms, _ := fieldTerms(cond(key, "x"), false); len(terms) != 0 {
			t.Errorf("%s: %v", key, terms)
		}
	}
}

// The property the pushdown rests on: through the index, a query reads
// every document MongoDB's filter matches, whatever the shapes on the way
// (arrays, missing fields, other types), and not the others of the account.
func TestNestedEqualityReadsEveryMatchThroughTheIndex(t *testing.T) {
	ctx := testutil.Ctx(t)

	sp, err := state.NewProvider("")
	require.NoError(t, err)

	b, err := NewBackend(&NewBackendParams{URI: testutil.TestSQLiteURI(t, ""), L: testutil.Logger(t), P: sp, BatchSize: 100})
	require.NoError(t, err)
	t.Cleanup(b.Close)

	db, err := b.Database(testutil.DatabaseName(t))
	require.NoError(t, err)

	cName := testutil.CollectionName(t)
	require.NoError(t, db.CreateCollection(ctx, &backends.CreateCollectionParams{Name: cName}))

	c, err := db.Collection(cName)
	require.NoError(t, err)

	_, err = c.CreateIndexes(ctx, &backends.CreateIndexesParams{Indexes: []backends.IndexInfo{{
		Name: "account_id_1_fields.city_1",
		Key:  []backends.IndexKeyPair{{Field: "account_id"}, {Field: "fields.city"}},
	}}})
	require.NoError(t, err)

	shapes := []any{
		cond("city", "Pune"), cond("city", "Pune", "zip", "411001"), cond("city", "pune"),
		cond("city", "Mumbai"), cond("city", arr("Mumbai", "Pune")), cond("city", arr(arr("Pune"))),
		arr(cond("city", "Pune")), arr(cond("city", "Delhi"), cond("city", arr("Pune"))), arr("Pune"),
		cond("city", cond("name", "Pune")), cond("town", "Pune"), cond(), "Pune", int32(7), types.Null,
		cond("city", int32(5)), cond("city", types.Null), cond("city", "Pune "), cond("city", "New York"),
		cond("city", "München"), cond("city", "東京"),
	}

	var docs []*types.Document
	for i := 0; i < 3000; i++ {
		// every shape (and no "fields") in both accounts
		doc := cond("_id", fmt.Sprintf("c%05d", i), "account_id", []string{"a1", "a2"}[i/(len(shapes)+1)%2])
		if shape := i % (len(shapes) + 1); shape < len(shapes) {
			doc.Set("fields", shapes[shape])
		}
		docs = append(docs, doc)
	}

	_, err = c.InsertAll(ctx, &backends.InsertAllParams{Docs: docs})
	require.NoError(t, err)

	for _, city := range []string{"Pune", "New York", "Delhi", "München", "東京", "Nowhere"} {
		filter := cond("account_id", "a1", "fields.city", city)

		res, err := c.Query(ctx, &backends.QueryParams{Filter: filter, OrderByID: 1})
		require.NoError(t, err)

		read, err := iterator.ConsumeValues[struct{}, *types.Document](res.Iter)
		require.NoError(t, err)

		readIDs := map[any]bool{}
		for _, doc := range read {
			readIDs[must.NotFail(doc.Get("_id"))] = true
		}

		// as a segment writes it: the same read, the same plan
		segment := cond("$and", arr(cond("account_id", "a1"), cond("fields.city", city)))
		res, err = c.Query(ctx, &backends.QueryParams{Filter: segment, OrderByID: 1})
		require.NoError(t, err)

		segmentRead, err := iterator.ConsumeValues[struct{}, *types.Document](res.Iter)
		require.NoError(t, err)
		require.Equal(t, read, segmentRead, city)

		var matches int
		for _, doc := range docs {
			match, err := common.FilterDocument(doc, filter)
			require.NoError(t, err)

			if match {
				matches++
			}

			// read: the account's documents with that city, or an array on the way
			fields, _ := doc.Get("fields")
			var value any // the city, if "fields" is a document that has one
			if fieldsDoc, ok := fields.(*types.Document); ok {
				value, _ = fieldsDoc.Get("city")
			}
			_, arrayOnTheWay := fields.(*types.Array)
			_, arrayAtCity := value.(*types.Array)
			shouldRead := must.NotFail(doc.Get("account_id")) == "a1" && (arrayOnTheWay || arrayAtCity || value == city)

			id := must.NotFail(doc.Get("_id"))
			require.Equal(t, shouldRead, readIDs[id], "%s: %v", city, doc)
			require.False(t, match && !readIDs[id], "%s: a match not read: %v", city, doc)
		}

		require.Equal(t, city != "Nowhere", matches > 0, city) // Delhi: in an array of documents

		for _, f := range []*types.Document{filter, segment} {
			explain, err := c.Explain(ctx, &backends.ExplainParams{Filter: f, OrderByID: 1})
			require.NoError(t, err)

			plan := fmt.Sprint(must.NotFail(explain.QueryPlanner.Get("Plan")))
			// both of the index's fields are searched: the account, and the city
			require.Contains(t, plan, "fields.city_1 (<expr>=? AND <expr>>? AND <expr><?)", city)
			require.NotContains(t, plan, "detail=SCAN", city)
		}
	}
}

// Reading the matches first pays up to the square root of 50 times the
// table's size, and at least 2,000.
func TestSearchFirstBound(t *testing.T) {
	ctx := testutil.Ctx(t)

	sqlDB, err := sql.Open("sqlite", "file:"+t.TempDir()+"/bound.sqlite")
	require.NoError(t, err)

	db := fsql.WrapDB(sqlDB, "bound", testutil.Logger(t))
	t.Cleanup(func() { db.Close() })

	_, err = db.ExecContext(ctx, `CREATE TABLE t (_ferretdb_sjson TEXT)`)
	require.NoError(t, err)

	require.EqualValues(t, 2000, searchFirstBound(ctx, db, "t")) // empty
	require.EqualValues(t, 2000, searchFirstBound(ctx, db, "missing"))

	for _, c := range []struct{ rowid, bound int64 }{{30000, 2000}, {500000, 5000}, {2000000, 10000}, {8000000, 20000}} {
		_, err = db.ExecContext(ctx, `INSERT INTO t (rowid, _ferretdb_sjson) VALUES (?, '{}')`, c.rowid)
		require.NoError(t, err)
		require.EqualValues(t, c.bound, searchFirstBound(ctx, db, "t"), c.rowid)
	}
}
