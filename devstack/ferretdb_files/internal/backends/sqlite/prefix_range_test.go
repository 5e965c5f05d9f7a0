// Added for patch 10 (tests of prefixRange and fieldTerms).

package sqlite

import (
	"math/rand"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/FerretDB/FerretDB/internal/handler/sjson"
	"github.com/FerretDB/FerretDB/internal/types"
	"github.com/FerretDB/FerretDB/internal/util/must"
)

func cond(pairs ...any) *types.Document { return must.NotFail(types.NewDocument(pairs...)) }

func next(p string) string {
	r, size := utf8.DecodeLastRuneInString(p)
	return p[:len(p)-size] + string(r+1)
}

func text(s string) string { return string(must.NotFail(sjson.MarshalSingleValue(s))) }

// runes worth trying: escaped ones, boundaries of UTF-8 lengths, and others.
var sample = []rune{0, 1, 0x1f, ' ', '!', '"', '#', '&', '<', '>', '\\', '[', ']', 'a', 'z', '~', 0x7f, 0x80,
	0xe9, 0xfc, 0x7ff, 0x800, 0x2027, 0x2028, 0x2029, 0x202a, 0x674e, 0xd7ff, 0xe000, 0xfffd, 0xffff,
	0x10000, 0x1f600, 0x10fffe, 0x10ffff}

func randomString(r *rand.Rand, n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if r.Intn(2) == 0 {
			b.WriteRune(sample[r.Intn(len(sample))])
		} else {
			b.WriteRune(rune(r.Intn(0x110000)))
		}
	}
	return strings.ToValidUTF8(b.String(), "")
}

func TestPrefixRangeAccepts(t *testing.T) {
	for _, p := range []string{"a", "user12", "user123456@", "anna m", "jürgen", "李", "x~", "a\u007f", "\U0010fffe"} {
		low, high, ok := prefixRange(cond("$gte", p, "$lt", next(p)))
		if !ok || low != `"`+p || high != `"`+next(p) {
			t.Errorf("%q: %q %q %v", p, low, high, ok)
		}
	}
}

func TestPrefixRangeRejects(t *testing.T) {
	for _, c := range []any{
		"a", int32(1), cond("$gte", "a"), cond("$lt", "b"), cond("$gt", "a", "$lt", "b"),
		cond("$gte", "a", "$lte", "b"), cond("$gte", "a", "$lt", "c"), cond("$gte", "ab", "$lt", "b"),
		cond("$gte", "a", "$lt", "b", "$ne", "x"), cond("$gte", "", "$lt", "\x01"),
		cond("$gte", int32(1), "$lt", int32(2)), cond("$gte", "a&", "$lt", "a'"), cond("$gte", "<", "$lt", "="),
		cond("$gte", "a>", "$lt", "a?"), cond("$gte", `a"`, "$lt", "a#"), cond("$gte", `\`, "$lt", "]"),
		cond("$gte", "\n", "$lt", "\x0b"), cond("$gte", "x\u2028", "$lt", "x\u2029"), cond("$gte", "\u2029", "$lt", "\u202a"),
		cond("$gte", "\U0010ffff", "$lt", "\U0010ffff"), cond("$gte", "a\xff", "$lt", "a\u0100"),
		cond("$gte", "\ud7ff", "$lt", "\ufffd"), cond("$lt", "b", "$gte", "a"[:0]+"z"),
		cond("$gte", "a", "$gte", "b"), // a repeated key: Get would panic
	} {
		if low, high, ok := prefixRange(c); ok {
			t.Errorf("%v: accepted %q %q", c, low, high)
		}
	}
}

// Every rune JSON writes as is is accepted as a one-rune prefix; no other is.
func TestPrefixRangeAllRunes(t *testing.T) {
	for r := rune(0); r < 0x10ffff; r++ {
		if !utf8.ValidRune(r) || !utf8.ValidRune(r+1) {
			continue
		}
		p := string(r)
		_, _, ok := prefixRange(cond("$gte", p, "$lt", string(r+1)))
		if asIs := text(p) == `"`+p+`"`; ok != asIs {
			t.Fatalf("%U: accepted %v, written as is %v", r, ok, asIs)
		}
	}
}

// The property the pushdown rests on: every string s with p <= s < u (as the
// handler compares them) has a JSON text within [low, high) as bytes.
func TestPrefixRangeNoMiss(t *testing.T) {
	r := rand.New(rand.NewSource(1))
	checked := 0
	for i := 0; i < 200000; i++ {
		p := randomString(r, 1+r.Intn(4))
		if p == "" {
			continue
		}
		u := next(p)
		low, high, ok := prefixRange(cond("$gte", p, "$lt", u))
		if !ok {
			continue
		}
		for j := 0; j < 5; j++ {
			var s string
			switch j {
			case 0:
				s = p
			case 1, 2:
				s = p + randomString(r, r.Intn(5))
			case 3:
				s = strings.ToValidUTF8(p[:len(p)-r.Intn(len(p)+1)], "") + randomString(r, r.Intn(5)) // stored strings are valid UTF-8
			default:
				s = randomString(r, r.Intn(6))
			}
			inRange := s >= p && s < u
			if inRange != strings.HasPrefix(s, p) {
				t.Fatalf("%q in [%q, %q) is %v, has prefix %v", s, p, u, inRange, !inRange)
			}
			if tx := text(s); inRange && !(tx >= low && tx < high) {
				t.Fatalf("%q matches [%q, %q) but its text %q is not within [%q, %q)", s, p, u, tx, low, high)
			}
			checked++
		}
	}
	if checked < 100000 {
		t.Fatalf("only %d checked", checked)
	}
}

func TestFieldTermsPrefixRange(t *testing.T) {
	f := cond("account_id", "acct", "email_key", cond("$gte", "jo", "$lt", "jp"), "_id", cond("$gt", "abc"))
	terms, args := fieldTerms(f, false)
	want := []string{
		`(_ferretdb_sjson->'account_id' IN (?) OR (_ferretdb_sjson->'account_id' >= '[' AND _ferretdb_sjson->'account_id' < '\'))`,
		`((_ferretdb_sjson->'email_key' >= ? AND _ferretdb_sjson->'email_key' < ?) OR (_ferretdb_sjson->'email_key' >= '[' AND _ferretdb_sjson->'email_key' < '\'))`,
	}
	if strings.Join(terms, "\n") != strings.Join(want, "\n") {
		t.Fatalf("terms:\n%s", strings.Join(terms, "\n"))
	}
	if len(args) != 3 || args[0] != `"acct"` || args[1] != `"jo` || args[2] != `"jp` {
		t.Fatalf("args %q", args)
	}
	terms, _ = fieldTerms(f, true)
	if !strings.HasPrefix(terms[1], "((+_ferretdb_sjson->'email_key' >= ?") {
		t.Fatalf("keepIDOrder: %s", terms[1])
	}
	// an escaped character, and other operators: left to the handler
	for _, c := range []any{cond("$gte", "a&", "$lt", "a'"), cond("$gte", "jo", "$lt", "jp", "$exists", true)} {
		if terms, _ := fieldTerms(cond("email_key", c), false); len(terms) != 0 {
			t.Fatalf("%v: %v", c, terms)
		}
	}
	if got := idOrderByClause(1, true); got != ` ORDER BY +_ferretdb_sjson->'_id'` {
		t.Fatal(got)
	}
	if got := idOrderByClause(-1, false); got != ` ORDER BY _ferretdb_sjson->'_id' DESC` {
		t.Fatal(got)
	}
}
