"""The segment condition language: what compiles, what is refused, and
(property-based) that hostile input never yields an operator we did not choose."""
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings, strategies as st

from services.contacts.segments import SegmentError, compile_condition

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
LIST = "a" * 32
FIELDS = {"city": {"type": "text"}, "age": {"type": "number"}, "born": {"type": "date"},
          "vip": {"type": "boolean"}, "plan": {"type": "choice", "choices": ["free", "pro"]}}
ALLOWED_OPERATORS = {"$and", "$or", "$nor", "$in", "$ne", "$gt", "$gte", "$lt", "$lte",
                     "$regex", "$options", "$exists"}
ALLOWED_KEYS = {"email", "name", "status", "created_at", "updated_at", "list_ids",
                "subscribed_list_ids", f"lists.{LIST}.status"} | {f"fields.{k}" for k in FIELDS}


def compile_(condition):
    return compile_condition(condition, FIELDS, list_ids={LIST}, now=NOW)


def test_city_is_pune_and_signed_up_in_the_last_90_days():
    got = compile_({"all": [{"field": "fields.city", "op": "eq", "value": "Pune"},
                            {"field": "created_at", "op": "within_days", "value": 90}]})
    assert got == {"$and": [{"fields.city": "Pune"},
                            {"created_at": {"$gte": NOW - timedelta(days=90)}}]}


def test_each_operator_compiles_to_what_it_says():
    assert compile_({"field": "fields.age", "op": "gte", "value": 18}) == {"fields.age": {"$gte": 18}}
    assert compile_({"field": "fields.plan", "op": "in", "value": ["pro"]}) == \
        {"fields.plan": {"$in": ["pro"]}}
    assert compile_({"field": "fields.city", "op": "starts_with", "value": "a.b*"}) == \
        {"fields.city": {"$regex": r"^a\.b\*", "$options": "i"}}
    assert compile_({"field": "fields.city", "op": "contains", "value": "(x)"}) == \
        {"fields.city": {"$regex": r"\(x\)", "$options": "i"}}
    assert compile_({"field": "email", "op": "contains", "value": "(X)"}) == \
        {"email": {"$regex": r"\(X\)", "$options": "i"}}
    # the name: its folded copy (either case, any accent), and as before for
    # a contact stored before it had one
    assert compile_({"field": "name", "op": "starts_with", "value": "Mü.b*"}) == \
        {"$or": [{"name_key": {"$gte": "mu.b*", "$lt": "mu.b+"}},
                 {"name_key": {"$exists": False}, "name": {"$regex": r"^Mü\.b\*", "$options": "i"}}]}
    # a space at an end stays a word's end: "Ann " is not "Anna", " Lee" not "Ashlee"
    assert compile_({"field": "name", "op": "starts_with", "value": "Ann "})["$or"][0] == \
        {"name_key": {"$gte": "ann ", "$lt": "ann!"}}
    assert compile_({"field": "name", "op": "contains", "value": "\u00a0Lee"})["$or"][0] == \
        {"name_key": {"$regex": r"\ lee"}}


def test_a_day_without_a_time_is_the_whole_day():
    """"Created on or before 2024-01-31" compared with midnight: a contact
    created at 15:00 that day was left out, and "after" took it in."""
    day = datetime(2024, 1, 31, tzinfo=timezone.utc)
    assert compile_({"field": "created_at", "op": "lte", "value": "2024-01-31"}) == \
        {"created_at": {"$lt": day + timedelta(days=1)}}
    assert compile_({"field": "created_at", "op": "gt", "value": "2024-01-31"}) == \
        {"created_at": {"$gte": day + timedelta(days=1)}}
    assert compile_({"field": "created_at", "op": "gte", "value": "2024-01-31"}) == \
        {"created_at": {"$gte": day}}
    assert compile_({"field": "created_at", "op": "lt", "value": "2024-01-31"}) == \
        {"created_at": {"$lt": day}}
    at = "2024-01-31T15:00:00+00:00"   # a time given: that instant
    assert compile_({"field": "created_at", "op": "lte", "value": at}) == \
        {"created_at": {"$lte": day + timedelta(hours=15)}}


def test_a_campaigns_member_of_a_list_is_a_subscriber_of_it():
    """A contact who unsubscribed from L, or never confirmed it, was mailed a
    campaign to "member of L" whenever another list kept them subscribed."""
    member = {"field": "list", "op": "member", "value": LIST}

    def audience(condition):
        return compile_condition(condition, FIELDS, list_ids={LIST}, now=NOW, audience=True)

    assert compile_(member) == {"list_ids": LIST}           # who is on it, for a preview or export
    assert audience(member) == {"subscribed_list_ids": LIST}
    assert audience({"any": [member]}) == {"$or": [{"subscribed_list_ids": LIST}]}
    # "not a member" still leaves out everyone on the list, whatever their status
    assert audience({"not": member}) == {"$nor": [{"list_ids": LIST}]}
    assert audience({"not": {"all": [{"not": member}]}}) == \
        {"$nor": [{"$and": [{"$nor": [{"subscribed_list_ids": LIST}]}]}]}
    # the other list conditions say which status they mean
    pending = {"field": "list", "op": "pending", "value": LIST}
    assert audience(pending) == compile_(pending) == {f"lists.{LIST}.status": "pending"}


def test_the_lists_a_segment_reaches_its_contacts_through():
    from services.contacts.segments import lists_reaching
    other = "b" * 32

    def on(list_id, op="member"):
        return {"field": "list", "op": op, "value": list_id}

    assert lists_reaching(on(LIST)) == {LIST}
    assert lists_reaching({"all": [on(LIST, "subscribed"), {"any": [on(other)]}]}) == {LIST, other}
    assert lists_reaching({"not": on(LIST)}) == set()
    assert lists_reaching({"not": {"any": [{"not": on(LIST)}, on(other)]}}) == {LIST}
    assert lists_reaching({"all": [on(LIST, "pending"), on(other, "unsubscribed")]}) == set()
    assert lists_reaching({"field": "fields.city", "op": "eq", "value": "Pune"}) == set()



    """It would match every contact with a name: a campaign to the whole list."""
    for value in ("\u0301", "\u00a0", " \u0308 "):
        with pytest.raises(SegmentError) as caught:
            compile_({"field": "name", "op": "contains", "value": value})
        assert caught.value.path == "definition.value"
    assert compile_({"not": {"field": "fields.vip", "op": "eq", "value": True}}) == \
        {"$nor": [{"fields.vip": True}]}
    assert compile_({"field": "fields.born", "op": "lt", "value": "2000-01-01"}) == \
        {"fields.born": {"$lt": datetime(2000, 1, 1, tzinfo=timezone.utc)}}
    assert compile_({"field": "list", "op": "subscribed", "value": LIST}) == \
        {"subscribed_list_ids": LIST}
    assert compile_({"field": "list", "op": "unsubscribed", "value": LIST}) == \
        {f"lists.{LIST}.status": "unsubscribed"}
    assert compile_({"any": [{"field": "status", "op": "eq", "value": "bounced"}]}) == \
        {"$or": [{"status": "bounced"}]}


@pytest.mark.parametrize("condition, where", [
    ({"$where": "1"}, "definition"),
    ({"field": "fields.city", "op": "$regex", "value": ".*"}, "definition.op"),
    ({"field": "fields.city", "op": "gt", "value": "a"}, "definition.op"),
    ({"field": "fields.age", "op": "eq", "value": "ten"}, "definition.value"),
    ({"field": "fields.plan", "op": "eq", "value": "gold"}, "definition.value"),
    ({"field": "fields.city", "op": "eq", "value": {"$ne": 1}}, "definition.value"),
    ({"field": "fields.nope", "op": "eq", "value": 1}, "definition.field"),
    ({"field": "fields.city.$", "op": "eq", "value": 1}, "definition.field"),
    ({"field": "$fields", "op": "eq", "value": 1}, "definition.field"),
    ({"field": "list", "op": "subscribed", "value": "b" * 32}, "definition.value"),
    ({"field": "list", "op": "subscribed", "value": "x.y"}, "definition.value"),
    ({"all": []}, "definition.all"),
    ({"all": [{"field": "name", "op": "eq"}]}, "definition.all.0.value"),
    ({"field": "created_at", "op": "within_days", "value": -1}, "definition.value"),
    ({"field": "fields.city", "op": "in", "value": list(range(600))}, "definition.value"),
])
def test_invalid_conditions_are_refused_naming_the_place(condition, where):
    with pytest.raises(SegmentError) as caught:
        compile_(condition)
    assert caught.value.path == where


def test_depth_and_size_are_bounded():
    deep = {"field": "name", "op": "eq", "value": "x"}
    for _ in range(10):
        deep = {"not": deep}
    with pytest.raises(SegmentError):
        compile_(deep)
    wide = {"any": [{"field": "name", "op": "eq", "value": str(i)} for i in range(100)]}
    with pytest.raises(SegmentError):
        compile_(wide)


# -- property-based: hostile input --------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True),
                    st.text(max_size=20),
                    st.sampled_from(["$where", "$gt", "$ne", "$expr", "fields.city", "a.b",
                                     "$function", "this.x", LIST, "Pune"]))
keys = st.one_of(st.text(max_size=12),
                 st.sampled_from(["all", "any", "not", "field", "op", "value", "$where",
                                  "$or", "$expr", "fields.city", "$regex"]))
field_names = st.one_of(st.sampled_from(["email", "name", "status", "created_at", "list",
                                         "fields.city", "fields.age", "fields.born",
                                         "fields.vip", "fields.plan", "fields.$where",
                                         "fields.city.x", "$where", "fields", "lists.x"]),
                        st.text(max_size=15))
ops = st.one_of(st.sampled_from(["eq", "ne", "in", "contains", "starts_with", "gt", "gte",
                                 "lt", "lte", "exists", "within_days", "member", "subscribed",
                                 "$where", "$regex", "$ne", "$gt"]), st.text(max_size=8))


def leaves():
    return st.fixed_dictionaries({"field": field_names, "op": ops},
                                 optional={"value": st.one_of(scalars,
                                                              st.lists(scalars, max_size=4),
                                                              st.dictionaries(keys, scalars,
                                                                              max_size=3))})


conditions = st.recursive(
    st.one_of(leaves(), st.dictionaries(keys, scalars, max_size=3)),
    lambda inner: st.one_of(st.fixed_dictionaries({"all": st.lists(inner, max_size=4)}),
                            st.fixed_dictionaries({"any": st.lists(inner, max_size=4)}),
                            st.fixed_dictionaries({"not": inner}),
                            st.dictionaries(keys, inner, max_size=3)),
    max_leaves=12)


def _walk(node):
    """Every key of the compiled filter, and every string that is a regex."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


@settings(max_examples=400, deadline=None)
@given(conditions)
def test_hostile_input_never_produces_an_operator_or_key_we_did_not_choose(condition):
    try:
        compiled = compile_(condition)
    except SegmentError as exc:
        assert exc.path.startswith("definition")
        return
    for key, value in _walk(compiled):
        if key.startswith("$"):
            assert key in ALLOWED_OPERATORS, key
        else:
            assert key in ALLOWED_KEYS, key
        if key == "$regex":
            assert isinstance(value, str)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=30), st.sampled_from(["contains", "starts_with"]))
def test_user_text_in_a_regex_matches_only_itself(text, op):
    import re
    compiled = compile_({"field": "fields.city", "op": op, "value": text})
    pattern = compiled["fields.city"]["$regex"]
    assert re.search(pattern, "zz" + text + "zz", re.IGNORECASE) if op == "contains" else \
        re.match(pattern, text + "zz", re.IGNORECASE)
    if op == "starts_with":
        # anchored: one character before the text and it no longer matches
        # (a character the text does not start with: "\n" + "\n" starts with "\n")
        before = "x" if text.startswith("\n") else "\n"
        assert pattern.startswith("^") and not re.match(pattern, before + text + "!") or text == ""
