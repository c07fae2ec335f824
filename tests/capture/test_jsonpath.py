"""``--set PATH=VALUE`` on JSON bodies and form bodies."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.capture.jsonpath import apply_assignments, parse_assignment
from devtunnel.errors import ConfigError

EVENT = b'{\n  "id": "evt_1",\n  "data": {\n    "object": {\n      "amount": 2000,\n      "items": [{"price": 1}]\n    }\n  }\n}\n'


def test_values_are_json_when_they_parse_and_strings_otherwise() -> None:
    out = json.loads(apply_assignments(EVENT, ["data.object.amount=999", "data.object.currency=usd",
                                               "data.object.paid=true", 'data.object.meta={"a": [1]}',
                                               'data.object.note="007"']))
    assert out["data"]["object"] == {"amount": 999, "items": [{"price": 1}], "currency": "usd", "paid": True,
                                     "meta": {"a": [1]}, "note": "007"}


def test_lists_are_indexed_and_missing_objects_are_made() -> None:
    out = json.loads(apply_assignments(EVENT, ["data.object.items.0.price=5", "data.object.items.-1.qty=2",
                                               "metadata.order\\.id=A-1"]))
    assert out["data"]["object"]["items"] == [{"price": 5, "qty": 2}]
    assert out["metadata"] == {"order.id": "A-1"}


def test_the_layout_is_kept() -> None:
    assert apply_assignments(EVENT, ["id=evt_2"]).startswith(b'{\n  "id": "evt_2",\n  "data": {\n    "object"')
    assert apply_assignments(EVENT, ["id=evt_2"]).endswith(b"}\n")
    assert apply_assignments(b'{"a":1,"b":[2]}', ["a=3"]) == b'{"a":3,"b":[2]}'
    assert apply_assignments(b'{"a": 1, "b": "\xc3\xa9"}', ["a=3"]) == '{"a": 3, "b": "é"}'.encode()
    assert apply_assignments(b"not json", []) == b"not json"
    # CRLF line ends and the \\u escapes of an ASCII body are layout too.
    crlf = b'{\r\n  "name": "caf\\u00e9",\r\n  "n": 1\r\n}\r\n'
    assert apply_assignments(crlf, ["n=2"]) == crlf.replace(b'"n": 1', b'"n": 2')


@pytest.mark.parametrize(
    ("body", "assignment", "message"),
    [
        (b"<xml/>", "a=1", "--set needs a JSON body (or a form: application/x-www-form-urlencoded); this one is not JSON"),
        (b"\x1f\x8b\x08\x00", "a=1", "--set needs a JSON or form body; this one is gzip-compressed"),
        (EVENT, "amount", "expected PATH=VALUE"),
        (EVENT, "=1", "expected PATH=VALUE"),
        (EVENT, "data..amount=1", "has an empty segment"),
        (EVENT, "id.x=1", "id is str \"evt_1\", not an object"),
        (EVENT, "data.object.items.x=1", "data.object.items is a list; index it with a number"),
        (EVENT, "data.object.items.3=1", "data.object.items.3 is past the end of a list of 1"),
        (b"[1]", "a=1", "the body is a list"),
    ],
)
def test_what_does_not_fit_is_one_clear_error(body: bytes, assignment: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_assignments(body, [assignment])
    assert message in str(info.value)


@given(key=st.text(st.characters(blacklist_characters=".=\\", blacklist_categories=["Cs"]), min_size=1, max_size=12),
       value=st.one_of(st.integers(), st.booleans(), st.text(max_size=20)))
def test_a_set_field_reads_back(key: str, value: object) -> None:
    text = json.dumps(value)
    out = json.loads(apply_assignments(b'{"x": {}}', [f"x.{key}={text}"]))
    assert out["x"][key] == value
    assert parse_assignment(f"x.{key}={text}")[0] == ["x", key]


FORM = "application/x-www-form-urlencoded"
TWILIO = b"ToCountry=US&Body=Hello+%F0%9F%91%8B&From=%2B14155551234&MediaUrl0=&Body=second"


def test_a_form_field_is_set_in_place_as_typed_and_the_others_keep_their_bytes() -> None:
    out = apply_assignments(TWILIO, ["Body=STOP now", "From=+1 (555) 0100", "Price=999"], FORM + "; charset=utf-8")
    assert out == (b"ToCountry=US&Body=STOP+now&From=%2B1+%28555%29+0100&MediaUrl0=&Body=second&Price=999")
    # The first field of the name is set, a repeated one kept; a value is text as typed (no JSON reading).
    assert parse_qsl(out.decode(), keep_blank_values=True) == [
        ("ToCountry", "US"), ("Body", "STOP now"), ("From", "+1 (555) 0100"), ("MediaUrl0", ""),
        ("Body", "second"), ("Price", "999")]
    assert apply_assignments(TWILIO, ['Body="quoted"'], FORM).startswith(b"ToCountry=US&Body=%22quoted%22&")
    assert apply_assignments(b"", ["a=b&c"], FORM) == b"a=b%26c"
    # A name as the form writes it (percent-encoded) is found by what it says.
    assert apply_assignments(b"user%5Bname%5D=a&x.y=1", ["user[name]=b", "x\\.y=2", "x.y=3"], FORM) == (
        b"user%5Bname%5D=b&x.y=3")


def test_a_form_field_holding_json_is_edited_by_its_path_in_its_layout() -> None:
    payload = {"type": "block_actions", "actions": [{"value": "approve"}], "user": {"id": "U1"}}
    body = urlencode({"payload": json.dumps(payload), "token": "t"}).encode()
    out = apply_assignments(body, ["payload.actions.0.value=deny", "payload.user.team=T9"], FORM)
    fields = dict(parse_qsl(out.decode()))
    assert json.loads(fields["payload"]) == {"type": "block_actions", "actions": [{"value": "deny"}],
                                              "user": {"id": "U1", "team": "T9"}}
    assert fields["payload"].startswith('{"type": "block_actions", ') and fields["token"] == "t"
    assert out.endswith(b"&token=t")


@pytest.mark.parametrize(
    ("body", "assignment", "message"),
    [
        (TWILIO, "Nope.x=1", "--set Nope.x: the form has no field 'Nope'"),
        (TWILIO, "Body.x=1", "--set Body.x: the form's field 'Body' does not hold JSON"),
        (b"n=5", "n.x=1", "--set n.x: n is int 5, not an object"),
        (b"a=\xff", "a=1", "--set: this form body is not UTF-8 text"),
        (TWILIO, "=1", "expected PATH=VALUE"),
    ],
)
def test_what_does_not_fit_a_form_is_one_clear_error(body: bytes, assignment: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_assignments(body, [assignment], FORM)
    assert message in str(info.value)
