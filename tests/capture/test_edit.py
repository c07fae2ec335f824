"""The one edit contract: what an Edit means, how it is checked, and its JSON form."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.capture.edit import Edit
from devtunnel.capture.model import Exchange
from devtunnel.errors import ReplayError
from tests.kit.exchanges import make_exchange


def captured(headers: list[tuple[str, str]] | None = None, body: bytes = b'{"a":1}', method: str = "POST") -> Exchange:
    fields = headers if headers is not None else [
        ("Host", "shop.localhost"), ("Content-Type", "application/json"), ("Content-Length", "7"),
        ("X-Multi", "a"), ("x-multi", "b"), ("Stripe-Signature", "t=1,v1=abc"),
    ]
    return make_exchange(method, b"/hooks?x=1", fields, body, id="01KB0EDIT00000000000000001", tunnel="shop",
                         started_at=1.0)


def test_an_empty_edit_sends_the_capture_with_its_framing() -> None:
    request = Edit().apply(captured())
    assert (request.method, request.target, request.body) == ("POST", b"/hooks?x=1", b'{"a":1}')
    assert request.headers == captured().request.headers
    assert Edit().is_empty and not Edit().changes(captured())


def test_headers_are_the_complete_list_a_deleted_one_is_not_sent() -> None:
    request = Edit(headers=[("Host", "edited"), ("X-Added", "1")]).apply(captured())
    assert request.headers.fields == ((b"Host", b"edited"), (b"X-Added", b"1"), (b"Content-Length", b"7"))


def test_set_and_remove_change_the_captured_list() -> None:
    edit = Edit(set_headers=[("x-multi", "1"), ("X-Multi", "2"), ("X-New", "n")], remove_headers=["stripe-signature"])
    assert edit.apply(captured()).headers.fields == (
        (b"Host", b"shop.localhost"), (b"Content-Type", b"application/json"), (b"Content-Length", b"7"),
        (b"X-Multi", b"1"), (b"X-Multi", b"2"), (b"X-New", b"n"),
    )


def test_framing_follows_the_body_sent() -> None:
    chunked = captured([("Host", "h"), ("Transfer-Encoding", "chunked"), ("Connection", "close, X-Hop"), ("X-Hop", "1")])
    request = Edit(body=b"longer body").apply(chunked)
    assert request.headers.fields == ((b"Host", b"h"), (b"Content-Length", b"11"))
    emptied = Edit(body=b"").apply(captured())
    assert emptied.headers.get("content-length") == "0"  # a POST that had a body still says so
    assert "content-length" not in Edit().apply(captured([("Host", "h")], body=b"", method="GET")).headers


def test_the_method_is_kept_as_typed() -> None:
    assert Edit(method="purge").apply(captured()).method == "purge"
    assert Edit(method="purge").to_json() == {"method": "purge"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"method": "GET /"}, "invalid method 'GET /'"),
        ({"method": ""}, "invalid method ''"),
        ({"method": 5}, "the method must be text"),
        ({"target": "no-slash"}, "invalid target 'no-slash'"),
        ({"target": "/a\r\nX: 1"}, "invalid target"),
        ({"headers": [("Bad Name", "1")]}, "headers, item 1: invalid header name 'Bad Name'"),
        ({"headers": [("X-A:", "1")]}, "invalid header name 'X-A:'"),
        ({"set_headers": {"X-Split": "a\r\nInjected: 1"}}, "invalid value for header X-Split: it holds CR, LF"),
        ({"set_headers": {"X-Nul": "a\x00"}}, "invalid value for header X-Nul"),
        ({"set_headers": {"X-Esc": "\x1b[31m"}}, "invalid value for header X-Esc"),
        ({"set_headers": [("X-One",)]}, "set_headers: item 1 is not a (name, value) pair"),
        ({"remove_headers": "X-A"}, "remove_headers must be a list"),
        ({"remove_headers": ["X A"]}, "invalid header name 'X A'"),
        ({"set_headers": {"X-A": "1"}, "remove_headers": ["x-a"]}, "header x-a is both set and removed"),
        ({"body": 5}, "the body must be text"),
    ],
)
def test_invalid_fields_are_refused_with_a_sentence_naming_them(fields: dict, message: str) -> None:
    with pytest.raises(ReplayError, match=re.escape(message)):
        Edit(**fields)


def test_a_tab_in_a_value_is_allowed() -> None:
    assert Edit(set_headers={"X-Tab": "a\tb"}).apply(captured()).headers.get("x-tab") == "a\tb"


def test_a_partly_recorded_body_needs_a_new_one() -> None:
    ex = captured()
    ex.request.body_size, ex.request.body_truncated = 5000, True
    with pytest.raises(ReplayError, match="7 of 5000"):
        Edit().apply(ex)
    assert Edit(body=b"whole").apply(ex).body == b"whole"
    assert Edit(body=b"whole").changes(ex)


def test_changes_says_whether_the_request_sent_differs() -> None:
    ex = captured()
    assert not Edit(method="POST").changes(ex)  # the same method again
    assert Edit(method="PUT").changes(ex)
    assert not Edit(headers=ex.request.headers).changes(ex)
    assert Edit(remove_headers=["Stripe-Signature"]).changes(ex)


def test_names_host() -> None:
    assert Edit(headers=[("host", "x")]).names_host and Edit(set_headers={"HOST": "x"}).names_host
    assert not Edit(set_headers={"X-Host": "x"}).names_host and not Edit().names_host


# -- JSON form --------------------------------------------------------------------------


def test_json_form_of_every_part() -> None:
    edit = Edit(method="PUT", target=b"/caf\xc3\xa9", headers=[("Host", "h"), ("X-Bin", b"\xff\xfe")],
                set_headers=[("X-A", "1")], remove_headers=["Cookie"], body=b"\xff\x00")
    data = edit.to_json()
    assert data == {
        "method": "PUT", "path": "/café", "headers": [["Host", "h"], ["X-Bin", {"base64": "//4="}]],
        "set_headers": [["X-A", "1"]], "remove_headers": ["Cookie"], "body_base64": "/wA=",
    }
    assert Edit.from_json(json.loads(json.dumps(data))) == edit


def test_a_target_that_is_not_utf8_is_sent_percent_encoded() -> None:
    assert Edit(target=b"/q=\xff").to_json() == {"path": "/q=%FF"}


header_name = st.from_regex(r"[A-Za-z0-9!#$%&'*+.^_`|~-]{1,12}", fullmatch=True)
header_value = st.binary(max_size=20).filter(lambda v: not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", v))
pairs = st.lists(st.tuples(header_name, header_value), max_size=5)


@given(
    method=st.none() | header_name,
    target=st.none() | st.binary(max_size=20).map(lambda b: b"/" + bytes(c for c in b if c > 0x20 and c != 0x7F)),
    headers=st.none() | pairs,
    set_headers=pairs,
    body=st.none() | st.binary(max_size=30),
)
def test_json_form_round_trips(method, target, headers, set_headers, body) -> None:  # type: ignore[no-untyped-def]
    removed = {n.lower() for n, _ in set_headers}
    remove = [n for n in ("X-Gone", "Cookie") if n.lower() not in removed]
    edit = Edit(method=method, target=target, headers=headers, set_headers=set_headers, remove_headers=remove, body=body)
    again = Edit.from_json(json.loads(json.dumps(edit.to_json())))
    if target is not None and not _utf8(target):
        assert again.apply(captured()).target != b""  # percent-encoded: the same once on the wire
        again = Edit(**{**again.__dict__, "target": target})
    assert again == edit


def _utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ([1, 2], "an edit must be a JSON object"),
        ({"header": []}, "unknown field 'header'"),
        ({"method": 5.5}, "method must be a string, not a number"),
        ({"method": "GET /"}, "invalid method 'GET /'"),
        ({"path": ["/"]}, "path must be a string, not a list"),
        ({"headers": {"X-Debug": "1"}}, "headers must be the complete list of [name, value] pairs"),
        ({"headers": [["X-A"]]}, "headers: item 1 must be a [name, value] pair"),
        ({"headers": [[1, "x"]]}, "headers: item 1: a header name must be a string, not a number"),
        ({"set_headers": {"Stripe-Signature": None}}, "is null; to delete a header, name it in remove_headers"),
        ({"set_headers": {"X-A": 1}}, "the value of 'X-A' must be a string"),
        ({"set_headers": "X-A: 1"}, "set_headers must be an object"),
        ({"set_headers": {"X-A": {"base64": "***"}}}, "is not valid base64"),
        ({"remove_headers": "X-A"}, "remove_headers must be a list"),
        ({"remove_headers": [7]}, "a header name must be text, not int"),
        ({"body": "a", "body_base64": "YQ=="}, "give body or body_base64, not both"),
        ({"body_base64": "***"}, "body_base64 is not valid base64"),
        ({"body": {"x": 1}}, "body must be a string, not an object"),
    ],
)
def test_bad_json_edits_say_what_is_wrong(data: object, message: str) -> None:
    with pytest.raises(ReplayError, match=re.escape(message)):
        Edit.from_json(data)


def test_from_json_allows_the_callers_own_keys() -> None:
    assert Edit.from_json({"to": "http://127.0.0.1:1"}, allow=("to",)).is_empty


def test_set_fields_edit_the_json_body_after_body_and_change_what_is_sent() -> None:
    ex = captured(body=b'{"data": {"object": {"amount": 2000}}}')
    sent = Edit(set_fields=("data.object.amount=999", "data.object.note=gift")).apply(ex)
    assert json.loads(sent.body) == {"data": {"object": {"amount": 999, "note": "gift"}}}
    assert sent.headers.get("content-length") == str(len(sent.body))
    after_body = Edit(body=b'{"a": 1}', set_fields=("a=2",)).apply(ex)
    assert json.loads(after_body.body) == {"a": 2}
    assert Edit(set_fields=("data.object.amount=999",)).changes(ex)
    assert not Edit(set_fields=("data.object.amount=2000",)).changes(ex)  # the same value: the same request


def test_as_captured_alone_changes_nothing_sent() -> None:
    ex = captured()
    edit = Edit(as_captured=True)
    assert not edit.is_empty and not edit.changes(ex)
    assert edit.apply(ex) == Edit().apply(ex)


def test_set_and_as_captured_in_the_json_form() -> None:
    edit = Edit(set_fields=("a=1",), as_captured=True)
    assert edit.to_json() == {"set": ["a=1"], "as_captured": True}
    assert Edit.from_json(edit.to_json()) == edit
    assert Edit.from_json({"set": None, "as_captured": None}) == Edit()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda: Edit(set_fields=("nope",)), "--set 'nope': expected PATH=VALUE"),
        (lambda: Edit(set_fields="a=1"), "set must be a list of PATH=VALUE texts"),  # type: ignore[arg-type]
        (lambda: Edit.from_json({"set": "a=1"}), "set must be a list of PATH=VALUE texts, not a string"),
        (lambda: Edit.from_json({"set": [{"a": 1}]}), "set: each item is a PATH=VALUE text, not an object"),
        (lambda: Edit.from_json({"as_captured": 1}), "as_captured must be true or false, not a number"),
        (lambda: Edit(set_fields=("a.b=1",)).apply(captured(body=b"not json")), "--set needs a JSON body"),
        (lambda: Edit(set_fields=("a.b=1",)).apply(captured(body=b'{"a": 5}')), "a is int 5, not an object"),
    ],
)
def test_bad_set_and_as_captured_are_refused_with_a_sentence(edit, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ReplayError, match=re.escape(message)):
        edit()


def test_set_edits_a_forms_fields_by_the_content_type_sent() -> None:
    form = [("Host", "shop.localhost"), ("Content-Type", "application/x-www-form-urlencoded"), ("Content-Length", "17")]
    request = Edit(set_fields=("Body=STOP", "To=+1")).apply(captured(form, body=b"Body=hi&From=%2B1"))
    assert request.body == b"Body=STOP&From=%2B1&To=%2B1"
    assert request.headers.get("Content-Length") == str(len(request.body))
    # The Content-Type the edit sends decides: a form made JSON is edited as JSON, and the other way.
    as_json = Edit(set_headers=((b"Content-Type", b"application/json"),), body=b'{"Body": "hi"}', set_fields=("Body=x",))
    assert as_json.apply(captured(form)).body == b'{"Body": "x"}'
    as_form = Edit(set_headers=((b"Content-Type", b"application/x-www-form-urlencoded"),), body=b"a=1", set_fields=("a=2",))
    assert as_form.apply(captured()).body == b"a=2"
    with pytest.raises(ReplayError, match="the form has no field 'payload'"):
        Edit(set_fields=("payload.action=closed",)).apply(captured(form, body=b"Body=hi"))
