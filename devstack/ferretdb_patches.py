"""Fixes applied to FerretDB v1.24.2's source before `make install` builds it.

Each patch is (file, text in v1.24.2, replacement); the build stops if a text
is not found exactly once. Both fix how FerretDB's SQLite backend finds
documents by `_id`, so that the local stack looks them up through the `_id`
index as MongoDB does, instead of reading whole tables:

1. The backend indexes `_id` as `_ferretdb_sjson->"_id"` but filtered on
   `_ferretdb_sjson->'$._id'`. Both extract the same value, but SQLite uses an
   index only for the very expression it was built on, so every find, update
   and delete by `_id` scanned the table (explain: `SCAN`). With the index's
   own expression it is `SEARCH ... USING INDEX`. Measured at 50,000
   documents: 32 `find_one({_id})` took 1.5 s of FerretDB CPU before, 10 ms
   after.
2. Only a filter that was exactly `{_id: <string or ObjectID>}` reached
   SQLite as a WHERE. `{_id: {$in: [...]}}` read the whole table (1.8 s of
   CPU for 200 ids at 50,000 documents), and so did `{_id: x, account_id: y}`,
   the shape of every account-scoped lookup. Now any filter with a top-level
   `_id` of a string or ObjectID, or an `$in` of up to 10,000 of them (SQLite
   takes up to 32,766 parameters), becomes `WHERE <_id> = ?` or `IN (...)`,
   whatever its other conditions. FerretDB filters every document it reads
   again in Go (find, count, distinct, update, delete, findAndModify,
   aggregate), so the WHERE only narrows what is read, and top-level
   conditions are ANDed, so no match is lost.

Nothing else in FerretDB changes: no other condition is pushed down.
"""
from __future__ import annotations

_QUERY_BLOCK = """\
	if params.Filter.Len() == 1 {
		v, _ := params.Filter.Get("_id")
		switch v.(type) {
		case string, types.ObjectID:
			whereClause = fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
	}
"""

_EXPLAIN_BLOCK = """\
	if params.Filter.Len() == 1 {
		v, _ := params.Filter.Get("_id")
		switch v.(type) {
		case string, types.ObjectID:
			filterPushdown = true
			whereClause = fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
	}
"""

_ID_WHERE_CLAUSE = """\
// maxIDsPushedDown bounds the `_id` $in values sent to SQLite as parameters.
const maxIDsPushedDown = 10000

// idWhereClause returns the WHERE clause and its arguments for a filter whose
// top-level `_id` condition is `v` or `{$in: [v, ...]}` with string or
// ObjectID values, and "" for any other filter. Top-level conditions are
// ANDed, and every document read is filtered again, so the other conditions
// need not reach SQLite.
func idWhereClause(filter *types.Document) (string, []any) {
	v, err := filter.Get("_id")
	if err != nil {
		return "", nil
	}

	switch v := v.(type) {
	case string, types.ObjectID:
		return fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn), []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
	case *types.Document:
		if v.Len() != 1 {
			return "", nil
		}

		in, _ := v.Get("$in")
		values, ok := in.(*types.Array)
		if !ok || values.Len() == 0 || values.Len() > maxIDsPushedDown {
			return "", nil
		}

		args := make([]any, values.Len())
		for i := range args {
			value := must.NotFail(values.Get(i))
			switch value.(type) {
			case string, types.ObjectID:
				args[i] = string(must.NotFail(sjson.MarshalSingleValue(value)))
			default:
				return "", nil
			}
		}

		placeholders := strings.TrimSuffix(strings.Repeat("?, ", len(args)), ", ")
		return fmt.Sprintf(` WHERE %s IN (%s)`, metadata.IDColumn, placeholders), args
	}

	return "", nil
}

// collection implements backends.Collection interface.
"""

PATCHES = [
    ("internal/backends/sqlite/metadata/metadata.go",
     '''IDColumn = DefaultColumn + "->'$._id'"''',
     '''IDColumn = DefaultColumn + "->'_id'"'''),
    ("internal/backends/sqlite/collection.go",
     "// collection implements backends.Collection interface.\n",
     _ID_WHERE_CLAUSE),
    ("internal/backends/sqlite/collection.go",
     _QUERY_BLOCK,
     "\twhereClause, args = idWhereClause(params.Filter)\n"),
    ("internal/backends/sqlite/collection.go",
     _EXPLAIN_BLOCK,
     "\twhereClause, args = idWhereClause(params.Filter)\n\tfilterPushdown = whereClause != \"\"\n"),
]
