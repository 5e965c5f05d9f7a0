// Added for patch 12 (a nested field's equality pushed down, through an index).

package metadata

import (
	"fmt"
	"strings"
)

// PlainFieldName reports whether a field name is letters, digits and "_",
// not starting with a digit: safe inside SQL quotes and as a JSON path label.
func PlainFieldName(name string) bool {
	for i, r := range name {
		letter := r == '_' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z')
		if !letter && (i == 0 || r < '0' || r > '9') {
			return false
		}
	}

	return name != ""
}

// NestedFieldPath reports whether path is two or more plain field names
// joined by dots, such as "fields.city".
func NestedFieldPath(path string) bool {
	names := strings.Split(path, ".")
	if len(names) < 2 {
		return false
	}

	for _, name := range names {
		if !PlainFieldName(name) {
			return false
		}
	}

	return true
}

// NestedFieldColumn returns, for a NestedFieldPath, the SQL expression that a
// non-unique index on it keeps and that a pushed-down condition on it tests:
// the JSON text of the value at the path, or '[' when a value on the way to
// it is an array. MongoDB looks into every element of such an array, so
// those documents must be read and left to the handler; with the '[' they
// fall in the same "is an array" range as an array at the path itself:
//
//	CASE WHEN json_type(_ferretdb_sjson, '$.fields') = 'array' THEN '['
//	ELSE _ferretdb_sjson->'fields'->'city' END
//
// SQLite uses an index for a condition only on the very expression the index
// was built on, so both are written by this function.
func NestedFieldColumn(path string) string {
	names := strings.Split(path, ".")

	arrays := make([]string, len(names)-1)
	for i := range arrays {
		arrays[i] = fmt.Sprintf(`json_type(%s, '$.%s') = 'array'`, DefaultColumn, strings.Join(names[:i+1], "."))
	}

	return fmt.Sprintf(`CASE WHEN %s THEN '[' ELSE %s->'%s' END`,
		strings.Join(arrays, " OR "), DefaultColumn, strings.Join(names, "'->'"))
}

// IndexColumn returns the expression an index keeps for one of its fields.
// A nested field of a non-unique index gets NestedFieldColumn; anything else
// the expression FerretDB has always used (in a unique index, the '[' of
// NestedFieldColumn would make every document with an array on the way clash).
func IndexColumn(field string, unique bool) string {
	if !unique && NestedFieldPath(field) {
		return NestedFieldColumn(field)
	}

	names := strings.Split(field, ".")
	for i, name := range names {
		names[i] = fmt.Sprintf("%q", name)
	}

	return fmt.Sprintf("%s->%s", DefaultColumn, strings.Join(names, "->"))
}
