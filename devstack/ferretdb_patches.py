"""Fixes applied to FerretDB v1.24.2's source before `make install` builds it.

Each patch is (file, text in v1.24.2, replacement); the build stops if a text
is not found exactly once. The first three are about the `_id` index of
FerretDB's SQLite backend, so that the local stack finds and pages documents
through it as MongoDB does, instead of reading whole tables; the fourth is
about what every document costs it; the fifth lets SQLite skip, through
secondary indexes, the documents an account-scoped query cannot match; the
sixth fixes a hang; the seventh to ninth make reading and writing a document
cheaper; the tenth lets a search by prefix read only what it matches; the
eleventh lets a database's writes take turns; the twelfth lets a search for
a nested field's value read through an index on that field:

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
3. Keyset pagination (`find({..., _id: {$gt: after}}).sort({_id: 1})
   .limit(n)`) read and sorted the whole collection in memory before the
   first document came back: FerretDB pushed down neither the sort nor the
   range. Now a find sorted by `_id` alone reads in the `_id` index's order,
   from the range's bound, and stops once the limit is filled.
   The index's key is the `_id`'s JSON text, which sorts as MongoDB sorts
   the `_id`s only when they are all strings of printable ASCII that JSON
   writes as is, with no space or `!` (both sort before the closing quote).
   So each collection records whether that still holds (`orderedIDs` in its
   settings: set when it is created, cleared, before the write, by the first
   insert of any other `_id`), and the order and the range are pushed down
   only while it holds; otherwise FerretDB sorts in memory as before. A
   collection created by an unpatched build never has the setting.

4. FerretDB tracks the lifetime of every iterator, transaction and cursor
   it makes, in release builds too: each one is added to a pprof profile
   (a stack trace taken) and given a finalizer that panics if it is never
   closed. It makes an iterator per document and per nested document, so
   this was a tenth of its CPU reading contacts (pprof). Now tracking is on
   in FerretDB's debug builds only (`ferretdb_debug` or `race` tags), as its
   debug-only stack capture already was. Measured on a scratch server: 20,000
   contacts read at 128-142 us of its CPU each against 157-172.

5. Any other condition was left to the handler, which decoded every
   document of the collection to test it: `count({account_id: a})` took 8.9
   s (10.8 s of CPU) at 100,000 contacts of ten accounts, and a small
   account's campaign waited for the big ones' contacts to be read before
   its first job. Now each top-level `field: "string"` or `field: {$in:
   ["string", ...]}` of a filter also becomes SQL: the field is one of those
   strings, or an array (which may hold one).
   Every document the filter matches meets that, the handler still filters
   what is read, and SQLite reads through an index on the field when there
   is one (`(account_id, ...)` indexes are everywhere here). The same count:
   0.97 s, spent decoding the account's own 10,000. Only plain field names
   and strings of metadata.OrderedID's alphabet are used, whose JSON text
   SQLite gives back as written; anything else stays with the handler. A read
   in `_id` order keeps walking the `_id` index (patch 3): its field terms
   are written so that SQLite cannot pick another index for them.

6. An `update` command closed the read behind each of its statements only
   when the whole command was done (a `defer` inside the loop over them).
   Each open read holds one of the database's 100 SQLite connections, so a
   command of more than 100 statements (a `bulk_write` of `UpdateOne`s, as
   an import of addresses that are already contacts sends) waited forever
   for a 101st, and with it every later request to that database: the whole
   stack hung. Now each statement's read is closed once the statement is
   applied.

7. Every document read was decoded by encoding/json several times over: the
   whole document into raw values, its schema (`$s`, as large as the data)
   by reflection into nested structs, then each nested document again, and
   every string, number and boolean through a json.Decoder of its own. That
   was two thirds of FerretDB's CPU reading contacts. Now one pass splits
   the JSON that FerretDB wrote (ferretdb_files/.../sjson/fastdecode.go),
   each scalar is read directly, and decoded schemas are kept by their text
   (a collection's documents share a few). Whatever the fast paths do not
   decode exactly as encoding/json does (escaped keys, duplicate keys,
   invalid UTF-8, numbers out of range, schema fields they do not know)
   goes through encoding/json as before; fastdecode_test.go checks that
   (`go test -fuzz FuzzFastPaths` searches further). Reading 20,000 contacts
   through the audience query: 64-70 us of FerretDB CPU each, against 179-203.

8. Every document was written with its schema first, and its keys, strings
   and integers through encoding/json's reflection. SQLite parses the stored
   JSON for each index expression of an insert, and first looks for it in a
   small cache, comparing it with the texts of earlier rows of the same
   length: with the schema first, documents of one shape agree for its whole
   length (half the text), and each comparison ran through it byte by byte
   (SQLite's memcmp, translated to Go). The schema now goes last, so two
   texts differ from their first field, and printable ASCII that needs no
   escape is written without reflection (ferretdb_files/.../sjson/
   fastencode.go; anything else through encoding/json, so the bytes are
   those it writes, which fastencode_test.go checks). Documents stored
   before read back as before: the decoder takes members in any order.
9. An insert of up to `--batch-size` (100) documents is one INSERT
   statement, which FerretDB ran inside BEGIN and COMMIT; SQLite then keeps
   a statement journal (a copy of every page the statement changes) so that
   it could undo that statement alone. Run as its own transaction, it is as
   atomic and needs none. Larger inserts keep their transaction.
   Patches 8 and 9 together, on an insert probe (40,000 sender-record-shaped
   documents in batches of 32, the two binaries alternated four times):
   75-83 us of FerretDB CPU a document, against 86-98 before.

10. A search of contacts by prefix (services/contacts/domain.py,
    prefix_range), `find({account_id: a, email_key: {$gte: p, $lt: u}})
    .sort({_id: 1}).limit(51)` with u being p with its last
    character's code point plus one, was left to the handler: SQLite walked
    the `_id` index through the whole account (patch 5's "+") and FerretDB
    decoded every document of it, 10.6 s for a one-match prefix at
    1,000,000 contacts. Now such a top-level `field: {$gte: p, $lt: u}`
    becomes SQL too: the field's JSON text is within `"`+p and `"`+u, or it
    is an array. A string starting with p is stored as `"`, p's bytes and the
    rest when JSON writes every character of p as is (checked with the
    encoder: a `"`, a backslash, a control character, `<`, `>`, `&`, U+2028 or U+2029
    leaves the condition to the handler), and SQLite compares texts as
    bytes, in code point order for UTF-8, as FerretDB compares strings. A
    read in `_id` order first counts, up to 2,000, the documents meeting the
    pushed-down terms (through the `(account_id, email_key)` index): if
    fewer, it reads them through that index and sorts them (its terms
    without "+", ORDER BY "+"<_id>, the `_id` range left to the handler);
    otherwise it walks the `_id` index as before, now skipping in SQL what
    the range excludes. At 1,000,000 contacts (900,000 in the account): one
    match 0.8 ms (was 10.6 s), 256 matches 5 ms (2.1 s), 1,800 matches 30
    ms (250 ms), 3,666 matches 91 ms (112 ms); a prefix that 40% of the
    account matches pays for the count, 17 ms (3.6 ms). Pages without such
    a term send the same SQL as before (measured by a helper on a scratch
    server, the stack beside it: about 30% noise).
    ferretdb_files/internal/backends/sqlite/prefix_range_test.go checks that
    a prefix is pushed down exactly when the encoder writes it as is, and
    that every string in the range has its stored text within the bounds
    (tests/integration/test_ferretdb_decoding.py runs it).

11. SQLite lets one connection write to a database at a time, and FerretDB
    wrote on whichever of the pool's 100 connections was free. Two writes
    at once (the import keeps two inserts in flight, the sender's threads
    write claims and records) met SQLITE_BUSY: the loser slept in SQLite's
    busy handler (1, 2, 5, 10... ms) and tried again, and a connection that
    wrote after another one had committed found its page cache stale and
    read the pages again. Now a database's writes (every ExecContext and
    InTransaction of internal/util/fsql) take turns in Go, on one
    connection (ferretdb_files/internal/util/fsql/writer.go); reads keep the
    pool. Measured on two scratch servers: two threads inserting batches of
    1,000 cost 0.067-0.069 ms of FerretDB CPU a document before, as much as
    one thread after (0.057-0.058); bench/import (200,000 rows, both search
    indexes) 8,538-8,735 rows/s before, 8,544-9,249 after, and with three
    inserts in flight instead of two 9,911-10,509 (7,135-9,054 before the
    patch). A transaction is rolled back in its turn: not ended by its
    context, which database/sql did on a goroutine of its own, after the
    turn could be given back (the next write ran inside it and was rolled
    back with it, once acknowledged); and one that did not commit is rolled
    back on the connection, since SQLite keeps a transaction whose COMMIT
    failed open. writer_test.go checks that concurrent writes never meet
    SQLite's lock (with no busy timeout, they failed at once before), that a
    failed transaction or a cancelled wait gives the turn back, that a pool
    of one connection (an in-memory database) stays free for reads, and
    those two cases and writes after Close (found by a review).

12. A search of contacts by a custom field's value, `find({account_id: a,
    "fields.city": "Solapur"}).sort({_id: 1}).limit(51)`, reached the
    backend without its nested condition (the handler removes every dotted
    key of a find, explain or aggregate unless started with
    --test-enable-nested-pushdown; count, update and delete always pass
    them, and the terms below apply there too), so SQLite walked
    the account and FerretDB decoded every contact of it: 2.1 s for a
    one-match value at 200,000 contacts. Now a nested field (plain names
    joined by dots, metadata.NestedFieldPath) equal to a string JSON writes
    as is becomes SQL too: its value's JSON text is the string's, or the
    path meets an array (which may hold a match): metadata.NestedFieldColumn,
    `CASE WHEN <a value on the way is an array> THEN '[' ELSE <the value's
    text> END`, equal to the text, or within '[' and '\\'. A non-unique
    index on a nested field now keeps that very expression (in a unique one,
    the '[' of every document with an array on the way would clash), so
    SQLite reads it for the term; the equality is written as a closed range
    (`>= ? AND <= ?`), since with `=` or IN SQLite used the index for the
    account alone. A read in `_id` order counts, then reads and sorts, the
    matches as patch 10 does for a prefix (searchTerm, fewSearchMatches).
    The documents of a top-level `$and` give their terms too, as a
    segment's filter is `{$and: [{account_id: a}, <condition>]}` (an AND of
    conditions each document meets is one it meets).
    The local stack starts FerretDB with --test-enable-nested-pushdown (the
    handler then passes dotted keys on; this backend pushes down only the
    terms above); the handler filters every document read again.
    Patch 10's count changes with it: it counted, up to 2,000, through the
    terms with their "or an array", for which SQLite fetched and parsed
    every document counted; without them it counts in the index alone (an
    estimate that leaves out documents holding arrays), and its bound is
    where reading the matches first costs what the walk does, the square
    root of 50 times the table's size (searchFirstBound; 2,000 at least):
    7,400 at 1,100,000 contacts. bench/contacts_paging at 1,000,000
    contacts (medians of 3, first page / at 90%): a city one contact holds
    0.6 / 0.5 ms; a city 0.2% hold (2,000) 317 / 349 ms with the old count
    (walking), 34 / 49 ms now; a name prefix 11% match 21 / 22 ms, 8.7 /
    7.2 ms now (the count reads the index alone).
    ferretdb_files/.../sqlite/nested_field_test.go checks which paths and
    values are pushed down, the expressions, the bound, and, on a real
    database, that a query reads exactly the account's documents with that
    value or an array on the way (every one FerretDB's own filter matches
    among them) through both of the index's fields
    (tests/integration/test_ferretdb_decoding.py runs it).

Nothing else in FerretDB changes: no other condition or sort is pushed down.
"""
from __future__ import annotations

from pathlib import Path

SQLITE = "internal/backends/sqlite"
SJSON = "internal/handler/sjson"
# New files, at the same paths in FerretDB's source tree (none may exist there).
ADDED_FILES_DIR = Path(__file__).resolve().parent / "ferretdb_files"


def added_files() -> dict[str, str]:
    """{path in FerretDB's tree: text} of the files the patches add."""
    return {path.relative_to(ADDED_FILES_DIR).as_posix(): path.read_text()
            for path in sorted(ADDED_FILES_DIR.rglob("*.go"))}

# -- patch 2 (and 3's range): the WHERE a top-level _id condition allows ------

_QUERY_BLOCK = """\
	if params.Filter.Len() == 1 {
		v, _ := params.Filter.Get("_id")
		switch v.(type) {
		case string, types.ObjectID:
			whereClause = fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn)
			args = []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
		}
	}

	q += whereClause
	q += prepareOrderByClause(params.Sort)
"""

_QUERY_BLOCK_PATCHED = """\
	orderedByID := idOrderPushedDown(params.OrderByID, params.Sort, meta)
	whereClause, args = pushedDownWhere(params.Filter, meta.Settings.OrderedIDs, orderedByID)

	q += whereClause
	if orderedByID {
		q += idOrderByClause(params.OrderByID)
	} else {
		q += prepareOrderByClause(params.Sort)
	}
"""

_QUERY_RETURN = """\
	return &backends.QueryResult{
		Iter: newQueryIterator(ctx, rows, params.OnlyRecordIDs),
	}, nil
}

// InsertAll implements backends.Collection interface.
"""

_QUERY_RETURN_PATCHED = """\
	// An insert clears OrderedIDs before it writes, and the statement has
	// begun reading (its snapshot is taken) once QueryContext returns: if the
	// setting still holds now, it holds for every document the query reads.
	if orderedByID {
		now := c.r.CollectionGet(ctx, c.dbName, c.name)
		orderedByID = now != nil && now.Settings.OrderedIDs
	}

	return &backends.QueryResult{
		Iter:        newQueryIterator(ctx, rows, params.OnlyRecordIDs),
		OrderedByID: orderedByID,
	}, nil
}

// InsertAll implements backends.Collection interface.
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

	orderByClause := prepareOrderByClause(params.Sort)
"""

_EXPLAIN_BLOCK_PATCHED = """\
	orderedByID := idOrderPushedDown(params.OrderByID, params.Sort, meta)
	whereClause, args = pushedDownWhere(params.Filter, meta.Settings.OrderedIDs, orderedByID)
	filterPushdown = whereClause != ""

	orderByClause := prepareOrderByClause(params.Sort)
	if orderedByID {
		orderByClause = idOrderByClause(params.OrderByID)
	}
"""

_INSERT_START = """\
	db := c.r.DatabaseGetExisting(ctx, c.dbName)
	meta := c.r.CollectionGet(ctx, c.dbName, c.name)

	err := db.InTransaction(ctx, func(tx *fsql.Tx) error {
"""

_INSERT_START_PATCHED = """\
	db := c.r.DatabaseGetExisting(ctx, c.dbName)
	meta := c.r.CollectionGet(ctx, c.dbName, c.name)

	if meta.Settings.OrderedIDs && !allOrderedIDs(params.Docs) {
		if err := c.r.CollectionIDsUnordered(ctx, c.dbName, c.name); err != nil {
			return nil, lazyerrors.Error(err)
		}
	}

	err := db.InTransaction(ctx, func(tx *fsql.Tx) error {
"""

_ID_CLAUSES = """\
// maxIDsPushedDown bounds the `_id` $in values sent to SQLite as parameters.
const maxIDsPushedDown = 10000

// idWhereClause returns the WHERE clause and its arguments for a filter whose
// top-level `_id` condition is `v` or `{$in: [v, ...]}` with string or
// ObjectID values, or, in a collection whose `_id`s sort like their JSON
// text (orderedIDs), string bounds such as `{$gt: a, $lte: b}`; and "" for
// any other filter. Top-level conditions are ANDed, and every document read
// is filtered again, so the other conditions need not reach SQLite.
func idWhereClause(filter *types.Document, orderedIDs bool) (string, []any) {
	v, err := filter.Get("_id")
	if err != nil {
		return "", nil
	}

	switch v := v.(type) {
	case string, types.ObjectID:
		return fmt.Sprintf(` WHERE %s = ?`, metadata.IDColumn), []any{string(must.NotFail(sjson.MarshalSingleValue(v)))}
	case *types.Document:
		if in, err := v.Get("$in"); err == nil && v.Len() == 1 {
			return idInClause(in)
		}

		if orderedIDs {
			return idRangeClause(v)
		}
	}

	return "", nil
}

// idInClause returns the WHERE clause for `_id: {$in: values}`.
func idInClause(in any) (string, []any) {
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

	return fmt.Sprintf(` WHERE %s IN (%s)`, metadata.IDColumn, sqlPlaceholders(len(args))), args
}

// sqlPlaceholders returns "?, ?, ..." for n parameters.
func sqlPlaceholders(n int) string {
	return strings.TrimSuffix(strings.Repeat("?, ", n), ", ")
}

// idRangeOperators are the `_id` operators whose string bounds become SQL.
var idRangeOperators = map[string]string{"$gt": ">", "$gte": ">=", "$lt": "<", "$lte": "<="}

// idRangeClause returns the WHERE clause for the bounds among an `_id`
// condition's operators, for a collection whose `_id`s all sort like their
// JSON text. A bound that does not sort that way, and any other operator,
// is left to the handler's filter.
func idRangeClause(condition *types.Document) (string, []any) {
	var terms []string
	var args []any

	for _, operator := range condition.Keys() {
		if !strings.HasPrefix(operator, "$") {
			return "", nil // a document to compare with, not operators
		}

		sqlOperator, ok := idRangeOperators[operator]
		bound := must.NotFail(condition.Get(operator))
		if !ok || !metadata.OrderedID(bound) {
			continue
		}

		terms = append(terms, fmt.Sprintf(`%s %s ?`, metadata.IDColumn, sqlOperator))
		args = append(args, string(must.NotFail(sjson.MarshalSingleValue(bound))))
	}

	if len(terms) == 0 {
		return "", nil
	}

	return " WHERE " + strings.Join(terms, " AND "), args
}

// pushedDownWhere returns the WHERE clause for a filter: its `_id` condition
// (idWhereClause) ANDed with its top-level string equalities and $ins
// (fieldTerms).
func pushedDownWhere(filter *types.Document, orderedIDs, keepIDOrder bool) (string, []any) {
	where, args := idWhereClause(filter, orderedIDs)
	terms, termArgs := fieldTerms(filter, keepIDOrder)

	return andTerms(where, args, terms, termArgs)
}

// andTerms returns a WHERE clause, or "", ANDed with terms.
func andTerms(where string, args []any, terms []string, termArgs []any) (string, []any) {
	if len(terms) == 0 {
		return where, args
	}

	if where == "" {
		return " WHERE " + strings.Join(terms, " AND "), termArgs
	}

	return where + " AND " + strings.Join(terms, " AND "), append(args, termArgs...)
}

// fieldTerms returns one SQL condition for each top-level `field: "string"`
// and `field: {$in: ["string", ...]}` of the filter, which every document
// the filter matches meets: the field holds one of those strings, or an
// array (which may hold one; JSON text of an array starts with "["). The
// handler filters what is read again, so this only narrows the read,
// through an index on the field if there is one.
//
// Only plain field names, and strings whose JSON text SQLite gives back as
// written (metadata.OrderedID's alphabet), are used, up to maxIDsPushedDown
// values in all; anything else is left to the handler. With keepIDOrder
// (a read in `_id` order) the terms are written so that SQLite cannot use an
// index for them ("+"): it walks the `_id` index and skips what cannot match.
func fieldTerms(filter *types.Document, keepIDOrder bool) ([]string, []any) {
	return fieldTermsOf(filter, keepIDOrder, true)
}

// fieldTermsOf returns fieldTerms, or with orArray false the same terms
// without their "or an array" (which may miss matches).
func fieldTermsOf(filter *types.Document, keepIDOrder, orArray bool) ([]string, []any) {
	seen := keyCounts(filter)

	var terms []string
	var args []any

	for _, key := range filter.Keys() {
		if key == "$and" && seen[key] == 1 {
			// each of its documents matches too: their terms narrow the read
			for _, element := range andElements(must.NotFail(filter.Get(key))) {
				elementTerms, elementArgs := fieldTermsOf(element, keepIDOrder, orArray)
				if len(args)+len(elementArgs) > maxIDsPushedDown {
					break
				}

				terms = append(terms, elementTerms...)
				args = append(args, elementArgs...)
			}

			continue
		}

		if key == "_id" || seen[key] != 1 || !(metadata.PlainFieldName(key) || metadata.NestedFieldPath(key)) {
			continue
		}

		values := fieldValues(must.NotFail(filter.Get(key)))
		if values == nil || len(args)+len(values) > maxIDsPushedDown {
			continue // with an `_id` $in, well within SQLite's 32,766 parameters
		}

		column := fmt.Sprintf(`%s->'%s'`, metadata.DefaultColumn, key)
		if keepIDOrder {
			column = "+" + column
		}

		terms = append(terms, fmt.Sprintf(`(%[1]s IN (%[2]s) OR (%[1]s >= '[' AND %[1]s < '\\'))`,
			column, sqlPlaceholders(len(values))))
		args = append(args, values...)
	}

	return terms, args
}

// keyCounts returns how many times each key is in a filter: a repeated one
// is left to the handler.
func keyCounts(filter *types.Document) map[string]int {
	seen := map[string]int{}
	for _, key := range filter.Keys() {
		seen[key]++
	}

	return seen
}

// andElements returns the documents of a top-level `$and`, or nil when it
// is anything else (the handler then answers what is wrong with it).
func andElements(condition any) []*types.Document {
	array, ok := condition.(*types.Array)
	if !ok {
		return nil
	}

	elements := make([]*types.Document, array.Len())
	for i := range elements {
		if elements[i], ok = must.NotFail(array.Get(i)).(*types.Document); !ok {
			return nil
		}
	}

	return elements
}

// fieldValues returns the JSON texts a field's condition allows, for a
// string or an $in of strings that fieldTerms can push down; nil otherwise.
func fieldValues(condition any) []any {
	if metadata.OrderedID(condition) {
		return []any{string(must.NotFail(sjson.MarshalSingleValue(condition)))}
	}

	operators, ok := condition.(*types.Document)
	if !ok || operators.Len() != 1 {
		return nil
	}

	in, err := operators.Get("$in")
	if err != nil {
		return nil
	}

	strs, ok := in.(*types.Array)
	if !ok || strs.Len() == 0 || strs.Len() > maxIDsPushedDown {
		return nil
	}

	values := make([]any, strs.Len())
	for i := range values {
		value := must.NotFail(strs.Get(i))
		if !metadata.OrderedID(value) {
			return nil
		}

		values[i] = string(must.NotFail(sjson.MarshalSingleValue(value)))
	}

	return values
}

// idOrderPushedDown reports whether the backend gives the `_id` order
// asked for (orderByID 1 or -1): only when no other sort is asked for, and
// only while the collection's `_id`s sort like their JSON text.
func idOrderPushedDown(orderByID int64, sort *types.Document, meta *metadata.Collection) bool {
	return orderByID != 0 && sort.Len() == 0 && meta.Settings.OrderedIDs
}

// idOrderByClause returns the ORDER BY clause that reads in the `_id`
// index's order: ascending for 1, descending for -1.
func idOrderByClause(order int64) string {
	if order < 0 {
		return fmt.Sprintf(` ORDER BY %s DESC`, metadata.IDColumn)
	}

	return fmt.Sprintf(` ORDER BY %s`, metadata.IDColumn)
}

// allOrderedIDs reports whether every document's `_id` sorts like its JSON text.
func allOrderedIDs(docs []*types.Document) bool {
	for _, doc := range docs {
		id, _ := doc.Get("_id")
		if !metadata.OrderedID(id) {
			return false
		}
	}

	return true
}

// collection implements backends.Collection interface.
"""

# -- patch 3: what the metadata records, and what backends are asked --------

_ORDERED_ID = """\
// Collection represents collection metadata.
"""

_ORDERED_ID_PATCHED = """\
// OrderedID reports whether v is an `_id` whose JSON text, the `_id` index's
// key, sorts among other such `_id`s exactly as MongoDB sorts them: a string
// of printable ASCII that JSON writes as is, without the space and `!` that
// sort before the closing quote.
func OrderedID(v any) bool {
	s, ok := v.(string)
	if !ok {
		return false
	}

	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < '#', c > '~', c == '\\\\', c == '<', c == '>', c == '&':
			return false
		}
	}

	return true
}

// Collection represents collection metadata.
"""

_SETTINGS_FIELDS = """\
	CappedDocuments int64       `json:"cappedDocuments"`
}
"""

_SETTINGS_FIELDS_PATCHED = """\
	CappedDocuments int64       `json:"cappedDocuments"`

	// OrderedIDs is true while every `_id` in the collection is an OrderedID,
	// so that the `_id` index's order is MongoDB's. Set when the collection
	// is created; cleared for good before any other `_id` is inserted.
	OrderedIDs bool `json:"orderedIDs,omitempty"`
}
"""

_SETTINGS_COPY = """\
		CappedDocuments: s.CappedDocuments,
	}
"""

_SETTINGS_COPY_PATCHED = """\
		CappedDocuments: s.CappedDocuments,
		OrderedIDs:      s.OrderedIDs,
	}
"""

_CREATED_SETTINGS = """\
			CappedDocuments: params.CappedDocuments,
		},
"""

_CREATED_SETTINGS_PATCHED = """\
			CappedDocuments: params.CappedDocuments,
			OrderedIDs:      true,
		},
"""

# -- patch 12: the expression an index keeps for a nested field -------------

_INDEX_COLUMN = """\
			fields := strings.Split(key.Field, ".")
			for j, f := range fields {
				fields[j] = fmt.Sprintf("%q", f)
			}

			columns[i] = fmt.Sprintf("%s->%s", DefaultColumn, strings.Join(fields, "->"))
"""

_INDEX_COLUMN_PATCHED = """\
			columns[i] = IndexColumn(key.Field, index.Unique)
"""

_NESTED_INDEX_TEST = """\
			`CREATE INDEX "%s" ON "%s" (_ferretdb_sjson->"foo"->"bar"->"baz")`,
"""

_NESTED_INDEX_TEST_PATCHED = """\
			`CREATE INDEX "%s" ON "%s" (`+NestedFieldColumn("foo.bar.baz")+`)`,
"""

_REGISTRY_INDEXES_CREATE = """\
// IndexesCreate creates indexes in the collection.
"""

_REGISTRY_INDEXES_CREATE_PATCHED = """\
// CollectionIDsUnordered clears the collection's OrderedIDs setting, for
// good; it is called before an `_id` that is not an OrderedID is inserted.
func (r *Registry) CollectionIDsUnordered(ctx context.Context, dbName, collectionName string) error {
	db := r.DatabaseGetExisting(ctx, dbName)
	if db == nil {
		return nil
	}

	r.rw.Lock()
	defer r.rw.Unlock()

	c := r.collectionGet(dbName, collectionName)
	if c == nil || !c.Settings.OrderedIDs {
		return nil
	}

	// a copy, which replaces the registry's; cleared in memory even if the
	// write fails (the insert then fails too)
	c.Settings.OrderedIDs = false
	r.colls[dbName][collectionName] = c

	q := fmt.Sprintf("UPDATE %q SET settings = ? WHERE table_name = ?", metadataTableName)
	if _, err := db.ExecContext(ctx, q, c.Settings, c.TableName); err != nil {
		return lazyerrors.Error(err)
	}

	return nil
}

// IndexesCreate creates indexes in the collection.
"""

_BACKEND_QUERY_PARAMS = """\
	Sort   *types.Document
	Limit  int64

	OnlyRecordIDs bool
	Comment       string
}

// QueryResult represents the results of Collection.Query method.
type QueryResult struct {
	Iter types.DocumentsIterator
}
"""

_BACKEND_QUERY_PARAMS_PATCHED = """\
	Sort   *types.Document
	Limit  int64

	// OrderByID, if 1 or -1, asks for ascending or descending `_id` order,
	// which a backend gives only where it is exact; see QueryResult.
	OrderByID int64

	OnlyRecordIDs bool
	Comment       string
}

// QueryResult represents the results of Collection.Query method.
type QueryResult struct {
	Iter types.DocumentsIterator

	// OrderedByID is true if Iter returns the documents in the order
	// QueryParams.OrderByID asked for.
	OrderedByID bool
}
"""

_BACKEND_EXPLAIN_PARAMS = """\
type ExplainParams struct {
	Filter *types.Document
	Sort   *types.Document
	Limit  int64
}
"""

_BACKEND_EXPLAIN_PARAMS_PATCHED = """\
type ExplainParams struct {
	Filter    *types.Document
	Sort      *types.Document
	Limit     int64
	OrderByID int64 // as in QueryParams
}
"""

_HANDLER_LIMIT_COMMENT = """\
	// Limit pushdown is not applied if:
"""

_HANDLER_ASK_ID_ORDER = """\
	// A sort by `_id` alone is asked of the backend, which gives it where exact.
	if !h.DisablePushdown && params.Sort.Len() == 1 && params.Sort.Keys()[0] == "_id" {
		qp.OrderByID = must.NotFail(params.Sort.Get("_id")).(int64)
	}

	// Limit pushdown is not applied if:
"""

_HANDLER_FIND_ITER = """\
	iter, err := h.makeFindIter(queryRes.Iter, closer, params)
"""

_HANDLER_FIND_ITER_PATCHED = """\
	iterParams := params
	if queryRes.OrderedByID {
		// already in order: no sort in memory, so a limit ends the read early
		unsorted := *params
		unsorted.Sort = nil
		iterParams = &unsorted
	}

	iter, err := h.makeFindIter(queryRes.Iter, closer, iterParams)
"""

# -- patch 4: lifetime tracking in debug builds only --------------------------

def _tracking_in_debug_builds_only(signature: str) -> tuple[str, str]:
    """(text in v1.24.2, replacement) for resource.Track or Untrack: both
    start with checkArgs, and now return first unless it is a debug build."""
    return (f"{signature} {{\n\tcheckArgs(obj, token)\n",
            f"{signature} {{\n\tif !debugbuild.Enabled {{\n\t\treturn\n\t}}\n\n"
            "\tcheckArgs(obj, token)\n")


# -- patch 6: an update statement's read closed when the statement is done ----

_UPDATE_CLOSE = """\
		closer := iterator.NewMultiCloser()
		defer closer.Close()

		closer.Add(res.Iter)

		iter := common.FilterIterator(res.Iter, closer, u.Filter)

		if !u.Multi {
			iter = common.LimitIterator(iter, closer, 1)
		}

		result, err := common.UpdateDocument(ctx, c, "update", iter, &u)
		if err != nil {
"""

_UPDATE_CLOSE_PATCHED = """\
		closer := iterator.NewMultiCloser()

		closer.Add(res.Iter)

		iter := common.FilterIterator(res.Iter, closer, u.Filter)

		if !u.Multi {
			iter = common.LimitIterator(iter, closer, 1)
		}

		// Closed here, not deferred to the end of the command: each open
		// read holds one of the pool's 100 connections, and a command of
		// more statements than that waited forever for one more.
		result, err := common.UpdateDocument(ctx, c, "update", iter, &u)
		closer.Close()

		if err != nil {
"""

# -- patch 7: one pass over the JSON FerretDB wrote ---------------------------

_UNMARSHAL_DOC = '''	var v map[string]json.RawMessage
	r := bytes.NewReader(data)
	dec := json.NewDecoder(r)

	err := dec.Decode(&v)
	if err != nil {
		return nil, lazyerrors.Error(err)
	}

	if err = checkConsumed(dec, r); err != nil {
		return nil, lazyerrors.Error(err)
	}
'''

_UNMARSHAL_DOC_PATCHED = '''	v, fast := rawObject(data)
	if !fast {
		if err := decodeAsBefore(data, &v, false); err != nil {
			return nil, lazyerrors.Error(err)
		}
	}
'''

_UNMARSHAL_SCHEMA = '''	var sch schema
	r = bytes.NewReader(jsch)
	dec = json.NewDecoder(r)
	dec.DisallowUnknownFields()

	if err := dec.Decode(&sch); err != nil {
		return nil, lazyerrors.Error(err)
	}

	if err := checkConsumed(dec, r); err != nil {
		return nil, lazyerrors.Error(err)
	}
'''

_UNMARSHAL_SCHEMA_PATCHED = '''	var sch schema
	if s, fast := cachedSchema(jsch); fast {
		sch = *s
	} else if err := decodeAsBefore(jsch, &sch, true); err != nil {
		return nil, lazyerrors.Error(err)
	}
'''


def _raw_split(kind: str, helper: str) -> tuple[str, str]:
    """(text in v1.24.2, replacement): a document's or an array's members split
    by `helper`, or by encoding/json when it declines."""
    old = f'''	r := bytes.NewReader(data)
	dec := json.NewDecoder(r)

	var rawMessages {kind}
	if err := dec.Decode(&rawMessages); err != nil {{
		return lazyerrors.Error(err)
	}}

	if err := checkConsumed(dec, r); err != nil {{
		return lazyerrors.Error(err)
	}}
'''
    new = f'''	var rawMessages {kind}
	if raw, fast := {helper}(data); fast {{
		rawMessages = raw
	}} else if err := decodeAsBefore(data, &rawMessages, false); err != nil {{
		return lazyerrors.Error(err)
	}}
'''
    return old, new


def _scalar(go_type: str, fast: str, *, disallow: bool = False, var: str = "o") -> tuple[str, str]:
    """(text in v1.24.2, replacement): a scalar's decoder, with `fast` put first."""
    old = ("\tr := bytes.NewReader(data)\n\tdec := json.NewDecoder(r)\n"
           + ("\tdec.DisallowUnknownFields()\n" if disallow else "")
           + f"\n\tvar {var} {go_type}\n")
    return old, fast + "\n" + old


def _fast(value: str, call: str, target: str, converted: str) -> str:
    """`if value, ok := call; ok { *target = converted; return nil }`"""
    return (f"\tif {value}, ok := {call}; ok {{\n\t\t*{target} = {converted}\n\n"
            "\t\treturn nil\n\t}\n")


# -- patch 8: documents written with their schema last, strings without reflection

_MARSHAL_FIELDS = '''	buf.WriteString(`{"$s":`)
	buf.Write(schema)

	keys := d.Keys()
	values := d.Values()

	for i, key := range keys {
		buf.WriteByte(',')
		buf.WriteString(`"`)
'''

_MARSHAL_FIELDS_PATCHED = '''	buf.WriteByte('{')

	keys := d.Keys()
	values := d.Values()

	for i, key := range keys {
		buf.WriteString(`"`)
'''

_MARSHAL_END = '''		buf.Write(b)
	}

	buf.WriteByte('}')

	return buf.Bytes(), nil
}

// MarshalSingleValue'''

_MARSHAL_END_PATCHED = '''		buf.Write(b)
		buf.WriteByte(',')
	}

	buf.WriteString(`"$s":`)
	buf.Write(schema)
	buf.WriteByte('}')

	return buf.Bytes(), nil
}

// MarshalSingleValue'''

_MARSHAL_TEST_FILLED = '''			json: `{
			"$s": {
				"p": {"foo": {"t": "string"}},
				"$k": ["foo"]
			},
			"foo": "bar"
		}`,
'''

_MARSHAL_TEST_FILLED_PATCHED = '''			json: `{
			"foo": "bar",
			"$s": {
				"p": {"foo": {"t": "string"}},
				"$k": ["foo"]
			}
		}`,
'''


# -- patch 9: an insert of one statement is its own transaction --------------

_INSERT_TRANSACTION = '''	err := db.InTransaction(ctx, func(tx *fsql.Tx) error {
		batchSize := c.r.BatchSize
'''

_INSERT_TRANSACTION_PATCHED = '''	if len(params.Docs) <= c.r.BatchSize {
		// One statement: atomic without BEGIN, and SQLite keeps no statement
		// journal for a statement that is its own transaction.
		q, args, err := prepareInsertStatement(meta.TableName, meta.Capped(), params.Docs)
		if err != nil {
			return nil, lazyerrors.Error(err)
		}

		if _, err = db.ExecContext(ctx, q, args...); err != nil {
			var se *sqlite3.Error
			if errors.As(err, &se) && se.Code() == sqlite3lib.SQLITE_CONSTRAINT_UNIQUE {
				return nil, backends.NewError(backends.ErrorCodeInsertDuplicateID, err)
			}

			return nil, lazyerrors.Error(err)
		}

		return new(backends.InsertAllResult), nil
	}

''' + _INSERT_TRANSACTION


# -- patch 10: `field: {$gte: p, $lt: u}`, the strings starting with p ---------
# Most of what it changes is code patches 2, 3 and 5 wrote: those texts are
# taken from their replacements, not written out a second time.


def _written_by(replacement: str, first_line: str, last_lines: str) -> str:
    """The lines of an earlier patch's replacement from `first_line` (there
    once) to the next `last_lines`, inclusive."""
    assert replacement.count(first_line) == 1, first_line
    start = replacement.index(first_line)
    end = replacement.index(last_lines, start) + len(last_lines) + 1
    return replacement[start:end]


_IMPORTS = """\
	"strings"

	sqlite3 "modernc.org/sqlite"
"""

_IMPORTS_PATCHED = """\
	"strings"
	"unicode/utf8"

	sqlite3 "modernc.org/sqlite"
"""

_QUERY_WHERE = _written_by(_QUERY_BLOCK_PATCHED, '\torderedByID := idOrderPushedDown(params.OrderByID, params.Sort, meta)',
                           '\t} else {')

# Both the query and its explain: the order pushed down, and whether the
# search term's matches are read first.
_SEARCH_FIRST_WHERE = """\
	orderedByID := idOrderPushedDown(params.OrderByID, params.Sort, meta)
	searchFirst := orderedByID && fewSearchMatches(ctx, db, meta.TableName, meta.Settings.Indexes, params.Filter)
	whereClause, args = pushedDownWhere(params.Filter, meta.Settings.OrderedIDs && !searchFirst, orderedByID && !searchFirst)
"""

_QUERY_WHERE_PATCHED = _SEARCH_FIRST_WHERE + """\

	q += whereClause
	if orderedByID {
		q += idOrderByClause(params.OrderByID, searchFirst)
	} else {
"""

_EXPLAIN_WHERE = _written_by(_EXPLAIN_BLOCK_PATCHED, '\torderedByID := idOrderPushedDown(params.OrderByID, params.Sort, meta)',
                             '\t}')

_EXPLAIN_WHERE_PATCHED = _SEARCH_FIRST_WHERE + """\
	filterPushdown = whereClause != ""

	orderByClause := prepareOrderByClause(params.Sort)
	if orderedByID {
		orderByClause = idOrderByClause(params.OrderByID, searchFirst)
	}
"""

_FIELD_TERMS_DOC = _written_by(_ID_CLAUSES, '// Only plain field names, and strings whose JSON text SQLite gives back as',
                               '// values in all; anything else is left to the handler. With keepIDOrder')

_FIELD_TERMS_DOC_PATCHED = """\
// A top-level `field: {$gte: p, $lt: u}` that is a prefix search (see
// prefixRange) becomes the same kind of term, with the bounds of the texts
// of the strings that start with p instead of the IN.
//
// A nested field's (metadata.NestedFieldPath) string equality or prefix
// search becomes such a term on metadata.NestedFieldColumn, which is '[' for
// a document with an array on the way to the field; its other conditions
// stay with the handler. The documents of a top-level `$and` give their
// terms too (a segment's filter is `{$and: [{account_id: a}, ...]}`).
//
// Only plain field names, and strings whose JSON text SQLite gives back as
// written (metadata.OrderedID's alphabet), are used, up to maxIDsPushedDown
// values in all; anything else is left to the handler. With keepIDOrder
"""

_FIELD_TERMS_BODY = _written_by(_ID_CLAUSES, '\t\tvalues := fieldValues(must.NotFail(filter.Get(key)))',
                                '\treturn terms, args\n}')

_FIELD_TERMS_BODY_PATCHED = """\
		column := fmt.Sprintf(`%s->'%s'`, metadata.DefaultColumn, key)
		nested := metadata.NestedFieldPath(key)
		if nested {
			column = metadata.NestedFieldColumn(key)
		}

		if keepIDOrder {
			column = "+" + column
		}

		term := func(match string) string {
			if !orArray {
				return match
			}

			return fmt.Sprintf(`(%[1]s OR (%[2]s >= '[' AND %[2]s < '\\'))`, match, column)
		}

		condition := must.NotFail(filter.Get(key))
		if low, high, ok := prefixRange(condition); ok && len(args)+2 <= maxIDsPushedDown {
			terms = append(terms, term(fmt.Sprintf(`(%[1]s >= ? AND %[1]s < ?)`, column)))
			args = append(args, low, high)

			continue
		}

		if nested {
			// An equality written as a closed range: SQLite then reads the
			// (account_id, nested field) index for both terms (an IN or =
			// here, it read the whole account and tested the field).
			if value, ok := nestedFieldValue(condition); ok && len(args)+2 <= maxIDsPushedDown {
				terms = append(terms, term(fmt.Sprintf(`(%[1]s >= ? AND %[1]s <= ?)`, column)))
				args = append(args, value, value)
			}

			continue
		}

		values := fieldValues(condition)
		if values == nil || len(args)+len(values) > maxIDsPushedDown {
			continue // with an `_id` $in, well within SQLite's 32,766 parameters
		}

		terms = append(terms, term(fmt.Sprintf(`%s IN (%s)`, column, sqlPlaceholders(len(values)))))
		args = append(args, values...)
	}

	return terms, args
}

// prefixRange returns, for a field's condition `{$gte: p, $lt: u}` where u is
// p with its last code point incremented (the strings that start with p),
// `"`+p and `"`+u: the bounds of the JSON texts of those strings. A string
// that starts with p is stored as `"`, p's bytes as they are, and its other
// characters (escaped or not; json escapes character by character) when
// JSON writes p as it is, which is checked with the encoder itself; and
// SQLite compares texts as bytes, where UTF-8 sorts by code point. ok is
// false for any other condition, which stays with the handler.
func prefixRange(condition any) (low, high string, ok bool) {
	operators, isDocument := condition.(*types.Document)
	if !isDocument || operators.Len() != 2 {
		return "", "", false
	}

	if keys := operators.Keys(); keys[0] == keys[1] {
		return "", "", false // Get panics on a repeated key
	}

	gte, _ := operators.Get("$gte")
	lt, _ := operators.Get("$lt")
	p, pString := gte.(string)
	u, uString := lt.(string)

	if !pString || !uString || !utf8.ValidString(p) {
		return "", "", false
	}

	last, size := utf8.DecodeLastRuneInString(p)
	if size == 0 || !utf8.ValidRune(last+1) || u != p[:len(p)-size]+string(last+1) {
		return "", "", false
	}

	if _, asIs := writtenAsIs(p); !asIs {
		return "", "", false // a character of p is escaped
	}

	return `"` + p, `"` + u, true
}

// nestedFieldValue returns the JSON text of a nested field's condition that
// is a string JSON writes as is (writtenAsIs): SQLite gives such a text back
// exactly as it was stored.
func nestedFieldValue(condition any) (string, bool) {
	s, ok := condition.(string)
	if !ok {
		return "", false
	}

	return writtenAsIs(s)
}

// writtenAsIs returns a string's JSON text and whether it is the string as
// it is between quotes, no character escaped: asked of the encoder itself.
func writtenAsIs(s string) (string, bool) {
	text := string(must.NotFail(sjson.MarshalSingleValue(s)))

	return text, text == `"`+s+`"`
}

// minSortedSearchMatches is the least of searchFirstBound.
const minSortedSearchMatches = 2000

// searchFirstBound returns the most documents that a read in `_id` order
// with a search term (searchTerm) reads through the field's index and sorts
// (searchFirst) rather than walk the `_id` index: about where the two cost
// the same. When m of a table's T documents match, a page of n read by the
// walk passes about n*T/m documents (those of every account: `_id`s
// interleave) and reading the matches first reads m, each of which costs
// about twice as much (fetched, parsed, sorted; measured at 1,000,000
// contacts), so the bound is the square root of n*T/2, with n = 100 (a page
// of contacts is 50, an audience batch 1,000). T is the table's largest
// rowid, its size (more after deletes), which SQLite reads from the end of
// the table.
func searchFirstBound(ctx context.Context, db *fsql.DB, table string) int64 {
	var rows int64
	if err := db.QueryRowContext(ctx, fmt.Sprintf(`SELECT coalesce(max(rowid), 0) FROM %q`, table)).Scan(&rows); err != nil {
		return minSortedSearchMatches
	}

	return max(int64(math.Sqrt(50*float64(rows))), minSortedSearchMatches)
}

// searchTerm reports whether a filter's condition on key is a search that
// fieldTerms pushes down: a prefix range (prefixRange), or a nested field's
// equality (nestedFieldValue).
func searchTerm(key string, condition any) bool {
	nested := metadata.NestedFieldPath(key)
	if !nested && !metadata.PlainFieldName(key) {
		return false
	}

	if _, _, ok := prefixRange(condition); ok {
		return true
	}

	_, ok := nestedFieldValue(condition)

	return nested && ok
}

// hasSearchTerm reports whether a filter, or a document of its top-level
// `$and` (whose terms fieldTermsOf takes too), has a search term on an
// indexed field.
func hasSearchTerm(filter *types.Document, indexed map[string]bool) bool {
	seen := keyCounts(filter)

	for _, key := range filter.Keys() {
		switch {
		case key == "$and" && seen[key] == 1:
			for _, element := range andElements(must.NotFail(filter.Get(key))) {
				if hasSearchTerm(element, indexed) {
					return true
				}
			}
		case key != "_id" && seen[key] == 1 && indexed[key] && searchTerm(key, must.NotFail(filter.Get(key))):
			return true
		}
	}

	return false
}

// fewSearchMatches reports whether a filter with a search term (searchTerm)
// on an indexed field has fewer than searchFirstBound documents meeting its
// pushed-down terms without their "or an array", which SQLite counts in the
// index alone (with them, it fetched and parsed every document counted,
// which made the count of a broad prefix cost as much as reading it).
// A read in `_id` order then reads those through the field's index and sorts
// them (searchFirst: the terms without "+", the `_id` range left to the
// handler, ORDER BY "+"<_id>), rather than walk the `_id` index and skip
// every other document, as it does when there are more (the walk then finds
// a page's matches soon), or when no index has the field (the count would
// read the table, then the read again).
func fewSearchMatches(ctx context.Context, db *fsql.DB, table string, indexes []metadata.IndexInfo, filter *types.Document) bool {
	indexed := map[string]bool{}

	for _, index := range indexes {
		for _, pair := range index.Key {
			// a unique index keeps another expression for a nested field
			// than the pushed-down term tests (metadata.IndexColumn)
			if !index.Unique || !metadata.NestedFieldPath(pair.Field) {
				indexed[pair.Field] = true
			}
		}
	}

	if !hasSearchTerm(filter, indexed) {
		return false
	}

	where, args := idWhereClause(filter, false)
	terms, termArgs := fieldTermsOf(filter, false, false)
	where, args = andTerms(where, args, terms, termArgs)

	bound := searchFirstBound(ctx, db, table)
	q := fmt.Sprintf(`SELECT count(*) FROM (SELECT 1 FROM %q%s LIMIT %d)`, table, where, bound)

	var n int64
	if err := db.QueryRowContext(ctx, q, args...).Scan(&n); err != nil {
		return false // the read walks the `_id` index
	}

	return n < bound
}
"""

_ID_ORDER_BY = _written_by(_ID_CLAUSES, 'func idOrderByClause(order int64) string {',
                           '\treturn fmt.Sprintf(` ORDER BY %s`, metadata.IDColumn)\n}')

_ID_ORDER_BY_PATCHED = """\
//
// With sorted, the same order is written so that no index can give it
// ("+"): SQLite reads through the index it picks for the WHERE and sorts.
func idOrderByClause(order int64, sorted bool) string {
	column := metadata.IDColumn
	if sorted {
		column = "+" + column
	}

	if order < 0 {
		return fmt.Sprintf(` ORDER BY %s DESC`, column)
	}

	return fmt.Sprintf(` ORDER BY %s`, column)
}
"""


# -- patch 11: a database's writes take turns on one connection -------------
FSQL = "internal/util/fsql"

_DB_FIELDS = """\
	token     *resource.Token
	BatchSize int
}
"""

_DB_FIELDS_PATCHED = """\
	token     *resource.Token
	BatchSize int

	writer *writer // Sandesh patch 11: writes take turns (writer.go)
}
"""

_DB_WRAP = """\
		sqlDB:            db,
		l:                logging.WithName(l, name),
		token:            resource.NewToken(),
"""

_DB_WRAP_PATCHED = _DB_WRAP + """\
		writer:           newWriter(db),
"""

_DB_CLOSE = """\
	resource.Untrack(db, db.token)
	return db.sqlDB.Close()
"""

_DB_CLOSE_PATCHED = """\
	resource.Untrack(db, db.token)
	db.writer.close()
	return db.sqlDB.Close()
"""

_DB_EXEC = "	res, err := db.sqlDB.ExecContext(ctx, query, args...)\n"
_DB_EXEC_PATCHED = "	res, err := db.writer.exec(ctx, query, args...)\n"

_DB_BEGIN = """\
	if sqlTx, err = db.sqlDB.BeginTx(ctx, nil); err != nil {
		err = lazyerrors.Error(err)
		return
	}

	tx := wrapTx(sqlTx, db.l)

	var done bool
"""

_DB_BEGIN_PATCHED = """\
	var endTurn func(committed bool)

	if sqlTx, endTurn, err = db.writer.begin(ctx); err != nil {
		err = lazyerrors.Error(err)
		return
	}

	var done bool

	// Registered before the rollback below, so it runs after it.
	defer func() { endTurn(done) }()

	tx := wrapTx(sqlTx, db.l)
"""

# The transaction no longer ends with ctx (writer.go): a context cancelled
# once f is done still rolls it back, as before.
_DB_COMMIT = """\
	if err = tx.Commit(); err != nil {
"""

_DB_COMMIT_PATCHED = """\
	if err = ctx.Err(); err != nil {
		return
	}

	if err = tx.Commit(); err != nil {
"""


PATCHES = [
    # 1
    (f"{SQLITE}/metadata/metadata.go",
     '''IDColumn = DefaultColumn + "->'$._id'"''',
     '''IDColumn = DefaultColumn + "->'_id'"'''),
    # 2 and 3: the SQL the backend sends
    (f"{SQLITE}/collection.go", "// collection implements backends.Collection interface.\n", _ID_CLAUSES),
    (f"{SQLITE}/collection.go", _QUERY_BLOCK, _QUERY_BLOCK_PATCHED),
    (f"{SQLITE}/collection.go", _QUERY_RETURN, _QUERY_RETURN_PATCHED),
    (f"{SQLITE}/collection.go", _EXPLAIN_BLOCK, _EXPLAIN_BLOCK_PATCHED),
    # 3: which collections keep `_id`s in MongoDB's order
    (f"{SQLITE}/collection.go", _INSERT_START, _INSERT_START_PATCHED),
    (f"{SQLITE}/metadata/metadata.go", _ORDERED_ID, _ORDERED_ID_PATCHED),
    (f"{SQLITE}/metadata/settings.go", _SETTINGS_FIELDS, _SETTINGS_FIELDS_PATCHED),
    (f"{SQLITE}/metadata/settings.go", _SETTINGS_COPY, _SETTINGS_COPY_PATCHED),
    (f"{SQLITE}/metadata/registry.go", _CREATED_SETTINGS, _CREATED_SETTINGS_PATCHED),
    (f"{SQLITE}/metadata/registry.go", _REGISTRY_INDEXES_CREATE, _REGISTRY_INDEXES_CREATE_PATCHED),
    # 3: the handler asks for `_id` order and skips its sort when given it
    ("internal/backends/collection.go", _BACKEND_QUERY_PARAMS, _BACKEND_QUERY_PARAMS_PATCHED),
    ("internal/backends/collection.go", _BACKEND_EXPLAIN_PARAMS, _BACKEND_EXPLAIN_PARAMS_PATCHED),
    ("internal/handler/msg_find.go", _HANDLER_LIMIT_COMMENT, _HANDLER_ASK_ID_ORDER),
    ("internal/handler/msg_find.go", _HANDLER_FIND_ITER, _HANDLER_FIND_ITER_PATCHED),
    ("internal/handler/msg_explain.go", _HANDLER_LIMIT_COMMENT, _HANDLER_ASK_ID_ORDER),
    # 4
    ("internal/util/resource/resource.go",
     *_tracking_in_debug_builds_only("func Track(obj any, token *Token)")),
    ("internal/util/resource/resource.go",
     *_tracking_in_debug_builds_only("func Untrack(obj any, token *Token)")),
    # 6
    ("internal/handler/msg_update.go", _UPDATE_CLOSE, _UPDATE_CLOSE_PATCHED),
    # 7 (with the files in ferretdb_files/)
    (f"{SJSON}/sjson.go", _UNMARSHAL_DOC, _UNMARSHAL_DOC_PATCHED),
    (f"{SJSON}/sjson.go", _UNMARSHAL_SCHEMA, _UNMARSHAL_SCHEMA_PATCHED),
    (f"{SJSON}/document.go", *_raw_split("map[string]json.RawMessage", "rawObject")),
    (f"{SJSON}/array.go", *_raw_split("[]json.RawMessage", "rawArray")),
    (f"{SJSON}/string.go",
     *_scalar("string", _fast("s", "plainValueString(data)", "str", "stringType(s)"))),
    (f"{SJSON}/int32.go",
     *_scalar("int32", _fast("n", "plainInt(data, 32)", "i", "int32Type(n)"))),
    (f"{SJSON}/int64.go",
     *_scalar("int64", _fast("n", "plainInt(data, 64)", "i", "int64Type(n)"), disallow=True)),
    (f"{SJSON}/datetime.go",
     *_scalar("int64", _fast("n", "plainInt(data, 64)", "dt", "dateTimeType(time.UnixMilli(n))"),
              disallow=True)),
    (f"{SJSON}/double.go",
     *_scalar("float64", _fast("f", "plainFloat(data)", "d", "doubleType(f)"), disallow=True,
              var="f")),
    (f"{SJSON}/bool.go",
     *_scalar("bool", '\tif s := string(data); s == "true" || s == "false" {\n'
                      '\t\t*b = boolType(s == "true")\n\n\t\treturn nil\n\t}\n')),
    # 8 (with ferretdb_files/.../sjson/fastencode.go)
    (f"{SJSON}/sjson.go", _MARSHAL_FIELDS, _MARSHAL_FIELDS_PATCHED),
    (f"{SJSON}/sjson.go", _MARSHAL_END, _MARSHAL_END_PATCHED),
    (f"{SJSON}/sjson_marshal_unmarshal_test.go", _MARSHAL_TEST_FILLED, _MARSHAL_TEST_FILLED_PATCHED),
    (f"{SJSON}/schema.go", "if b, err = json.Marshal(key); err != nil {",
     "if b, err = marshalString(key); err != nil {"),
    (f"{SJSON}/schema.go", "b, err := json.Marshal(keys)", "b, err := marshalStrings(keys)"),
    (f"{SJSON}/document.go", "if b, err = json.Marshal(key); err != nil {",
     "if b, err = marshalString(key); err != nil {"),
    (f"{SJSON}/string.go", "res, err := json.Marshal(string(*str))",
     "res, err := marshalString(string(*str))"),
    (f"{SJSON}/int32.go", "res, err := json.Marshal(int32(*i))", "res, err := marshalInt(int64(*i))"),
    (f"{SJSON}/int64.go", "res, err := json.Marshal(int64(*i))", "res, err := marshalInt(int64(*i))"),
    (f"{SJSON}/datetime.go", "res, err := json.Marshal(time.Time(*dt).UnixMilli())",
     "res, err := marshalInt(time.Time(*dt).UnixMilli())"),
    # 9
    (f"{SQLITE}/collection.go", _INSERT_TRANSACTION, _INSERT_TRANSACTION_PATCHED),
    # 10
    (f"{SQLITE}/collection.go", _IMPORTS, _IMPORTS_PATCHED),
    (f"{SQLITE}/collection.go", _QUERY_WHERE, _QUERY_WHERE_PATCHED),
    (f"{SQLITE}/collection.go", _EXPLAIN_WHERE, _EXPLAIN_WHERE_PATCHED),
    (f"{SQLITE}/collection.go", _FIELD_TERMS_DOC, _FIELD_TERMS_DOC_PATCHED),
    (f"{SQLITE}/collection.go", _FIELD_TERMS_BODY, _FIELD_TERMS_BODY_PATCHED),
    (f"{SQLITE}/collection.go", _ID_ORDER_BY, _ID_ORDER_BY_PATCHED),
    # 11 (with ferretdb_files/internal/util/fsql/writer.go)
    (f"{FSQL}/db.go", _DB_FIELDS, _DB_FIELDS_PATCHED),
    (f"{FSQL}/db.go", _DB_WRAP, _DB_WRAP_PATCHED),
    (f"{FSQL}/db.go", _DB_CLOSE, _DB_CLOSE_PATCHED),
    (f"{FSQL}/db.go", _DB_EXEC, _DB_EXEC_PATCHED),
    (f"{FSQL}/db.go", _DB_BEGIN, _DB_BEGIN_PATCHED),
    (f"{FSQL}/db.go", _DB_COMMIT, _DB_COMMIT_PATCHED),
    # 12 (with ferretdb_files/internal/backends/sqlite/metadata/field_column.go;
    # the terms are in patch 10's fieldTerms and fewSearchMatches)
    (f"{SQLITE}/metadata/registry.go", _INDEX_COLUMN, _INDEX_COLUMN_PATCHED),
    (f"{SQLITE}/metadata/registry_test.go", _NESTED_INDEX_TEST, _NESTED_INDEX_TEST_PATCHED),
    (f"{SQLITE}/collection.go", '\t"fmt"\n\t"sort"\n', '\t"fmt"\n\t"math"\n\t"sort"\n'),  # searchFirstBound
]
