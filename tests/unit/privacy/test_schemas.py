"""The privacy API's request schema (services/privacy/schemas.py)."""
import marshmallow as ma
import pytest

from services.privacy.schemas import RequestCreate


@pytest.mark.parametrize("key", ["a}b", "{x}", "{", "{0}", "}{input}"])
def test_a_custom_field_name_that_is_no_field_name_is_refused_by_name(key):
    """Braces in the key reached the message's format string: a 500."""
    with pytest.raises(ma.ValidationError) as refused:
        RequestCreate().load({"kind": "rectification", "subject": {"contact_id": "c1"},
                              "changes": {"fields": {key: 1}}})
    assert refused.value.messages["changes"]["fields"]["value"] == [
        f"{key!r} is not a field name"]
