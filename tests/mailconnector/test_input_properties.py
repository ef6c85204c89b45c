"""Suggestions' input read without the serializer must be exactly what the serializer reads:
the same data for plainly valid input, and the serializer (with its errors) for the rest."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailconnector.api.serializers import SuggestionsInput, plain_suggestions_input

EDGES = [
    "a@b.example",
    " a@b.example\t",
    "",
    "   ",
    "x" * 320,
    " " + "x" * 320 + " ",
    "x" * 321,
    "x" * 998,
    "x" * 999,
    "caf\u00e9@b.example",
    "a\x00@b.example",
    "a\ud800@b.example",
    "\u2003a@b.example",  # a Unicode space: stripped by str.strip()
]
ROLES = ["from", "sender", "reply_to", "to", "cc"]
texts = st.one_of(
    st.sampled_from(EDGES), st.text(alphabet="ab@. \t\x00\ud800\u00e9\u2003", max_size=8)
)
scalars = st.one_of(st.integers(), st.floats(allow_nan=False), st.booleans(), st.none())
values = st.recursive(
    st.one_of(texts, scalars), lambda inner: st.lists(inner, max_size=3), max_leaves=4
)
roles = st.one_of(st.sampled_from(ROLES), st.sampled_from(["bcc", "", "To", " to"]), scalars)
address = st.fixed_dictionaries(
    {"email": st.one_of(texts, texts, scalars), "role": st.one_of(roles, st.sampled_from(ROLES))},
    optional={"name": texts},
)
bodies = st.fixed_dictionaries(
    {"addresses": st.lists(address, max_size=3)},
    optional={"mailbox_owner": st.one_of(texts, scalars), "message_id": st.one_of(texts, scalars)},
)
odd_bodies = st.one_of(
    values,
    st.fixed_dictionaries({"addresses": st.one_of(values, st.lists(values, max_size=3))}),
    st.builds(
        lambda n: {"addresses": [{"email": "a@b.example", "role": "to"}] * n},
        st.sampled_from([199, 200, 201]),
    ),
)


def _plain(data: Any) -> Any:
    return json.loads(json.dumps(data))


def _same_as_serializer(data: Any) -> bool:
    """True when the plain reading took the input; fails the test if it read it otherwise."""
    fast = plain_suggestions_input(data)
    serializer = SuggestionsInput(data=data)
    valid = serializer.is_valid()
    if fast is not None:
        assert valid, serializer.errors
        assert fast == _plain(serializer.validated_data)
    return fast is not None


@settings(max_examples=600, deadline=None)
@given(st.one_of(bodies, bodies, odd_bodies))
def test_plain_input_reads_exactly_what_the_serializer_reads(data: Any) -> None:
    _same_as_serializer(data)


@pytest.mark.parametrize("text", EDGES)
@pytest.mark.parametrize("where", ["email", "mailbox_owner", "message_id"])
def test_each_edge_of_a_text_field_is_read_as_the_serializer_reads_it(
    text: str, where: str
) -> None:
    body: dict[str, Any] = {"addresses": [{"email": "a@b.example", "role": "to"}]}
    if where == "email":
        body["addresses"][0]["email"] = text
    else:
        body[where] = text
    _same_as_serializer(body)


def test_an_ordinary_request_is_read_without_the_serializer() -> None:
    body = {
        "addresses": [
            {"email": " Jane.Doe@Customer.example", "role": "from"},
            {"email": "alice@crm.example", "role": "to"},
        ],
        "mailbox_owner": "alice@crm.example",
        "message_id": "<deal-42@customer.example>",
    }
    assert _same_as_serializer(body)
    assert plain_suggestions_input(body)["addresses"][0]["email"] == "Jane.Doe@Customer.example"  # type: ignore[index]
    assert plain_suggestions_input({**body, "addresses": "jane@customer.example"}) is None
