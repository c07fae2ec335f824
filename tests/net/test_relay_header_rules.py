"""The direct path's header checks (``http_direct.response_head``) against uvicorn's rules: a
``bytes.translate`` table made from each rule must find what the rule's regex search finds."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uvicorn.protocols.http.httptools_impl import HEADER_RE, HEADER_VALUE_RE

from devtunnel.values.http1 import refused_bytes

RULES = {"name": HEADER_RE, "value": HEADER_VALUE_RE}
# Bytes near the rules' edges (controls, tab, space, separators, DEL, high bytes) come up often.
EDGES = st.sampled_from(b'\x00\x08\t\n\x1f !"(),:;<=>?@[\\]{}\x7f\x80\xff-_aZ09')
DATA = st.lists(st.one_of(EDGES, st.integers(0, 255)), max_size=40).map(bytes)


@pytest.mark.parametrize("rule", list(RULES))
def test_the_table_refuses_each_byte_the_rule_refuses(rule: str) -> None:
    table = refused_bytes(RULES[rule])
    for byte in range(256):
        data = bytes([byte])
        assert (0 in data.translate(table)) == bool(RULES[rule].search(data)), f"byte {byte:#04x}"


@pytest.mark.parametrize("rule", list(RULES))
@given(data=DATA)
def test_the_table_finds_what_the_rule_finds(rule: str, data: bytes) -> None:
    table = refused_bytes(RULES[rule])
    assert (0 in data.translate(table)) == bool(RULES[rule].search(data))
    assert (0 in bytearray(data).translate(table)) == bool(RULES[rule].search(data))


def test_uvicorns_header_rules_are_one_character_class_each() -> None:
    # What refused_bytes relies on: a rule that matched a sequence, or an anchor, could not be a table.
    for rule in RULES.values():
        assert re.fullmatch(rb"\[[^\[]*(\\\[[^\[]*)*\]", rule.pattern), f"uvicorn's rule {rule.pattern!r}"


def test_a_table_only_ever_maps_a_byte_to_itself_or_to_0() -> None:
    for rule in RULES.values():
        table = refused_bytes(rule)
        assert all(mapped in (0, byte) for byte, mapped in enumerate(table))


def test_the_one_field_rule_refuses_what_uvicorn_refuses() -> None:
    # values.http1.field_problem judges a head before the relay hands it to uvicorn (which could
    # only drop the connection then): a value as uvicorn's rule does, a name at least as strictly
    # (a token: uvicorn lets bytes above 0x7f through, llhttp does not).
    from devtunnel.values.http1 import field_problem, fields_problem

    for byte in range(256):
        data = b"a" + bytes([byte]) + b"b"
        assert (field_problem(b"x", data) is not None) == bool(HEADER_VALUE_RE.search(data)), f"byte {byte:#04x}"
        if HEADER_RE.search(data):
            assert field_problem(data, b"v") is not None, f"byte {byte:#04x}"
        fields = [(b"a", b"1"), (b"x", data), (b"b", b"2")]
        assert fields_problem(fields) == field_problem(b"x", data)


@given(fields=st.lists(st.tuples(DATA, DATA), max_size=5))
def test_asking_once_for_all_fields_says_what_asking_each_says(fields: list[tuple[bytes, bytes]]) -> None:
    from devtunnel.values.http1 import field_problem, fields_problem

    each = [p for name, value in fields if (p := field_problem(name, value)) is not None]
    assert fields_problem(fields) == (each[0] if each else None)


@settings(deadline=None)  # (the first example imports the uvicorn contract's helpers)
@given(name=DATA)
def test_the_direct_path_refuses_every_name_the_one_field_rule_refuses(name: bytes) -> None:
    # Names are held to values.http1's rule, not uvicorn's: uvicorn writes an empty name and one
    # with bytes above 0x7f, which no HTTP/1.1 client may take (RFC 9110 5.6.2).
    from devtunnel.relay.http_direct import response_head
    from devtunnel.values.http1 import field_problem
    from tests.net.test_uvicorn_contract import _direct_cycle

    cycle, _, _ = _direct_cycle("GET", "1.1", True, [])
    try:
        response_head(cycle, 200, [(b"content-length", b"0"), (name, b"v")])
    except RuntimeError as exc:
        assert str(exc) == "Invalid HTTP header name."
        refused = True
    else:
        refused = False
    assert refused == (field_problem(name, b"v") is not None), name
