"""Diffs: headers without case or order noise, bodies compared by what they are, ignore paths."""

from __future__ import annotations

import hashlib
import json
import time

from hypothesis import given
from hypothesis import strategies as st

from devtunnel.capture.diff import (
    DiffLine,
    ExchangeDiff,
    diff_bodies,
    diff_exchanges,
    diff_headers,
    render_side_by_side,
    render_unified,
)
from devtunnel.capture.model import Exchange, Headers
from tests.kit.exchanges import make_exchange, make_response


def event(event_id: str, created: int, amount: int, *, signature: str = "t=1,v1=aaa") -> Exchange:
    body = {"id": event_id, "created": created, "type": "invoice.paid",
            "data": {"object": {"id": f"in_{event_id}", "amount_paid": amount,
                                "lines": [{"id": "il_1", "amount": amount}, {"id": "il_2", "amount": 5}]}}}
    return make_exchange(
        "POST", b"/webhooks/stripe",
        [("Host", "shop.localhost"), ("Content-Type", "application/json"), ("Stripe-Signature", signature)],
        json.dumps(body).encode(), make_response(200, [("Content-Type", "text/plain")], b"ok\n"),
        tunnel="shop", started_at=time.time(),
    )


def changed(section_lines: list[DiffLine]) -> list[tuple[str, str]]:
    return [(line.tag, line.text) for line in section_lines if line.tag != " "]


def test_json_bodies_compare_as_data_and_ignore_paths_leave_fields_out() -> None:
    a = event("evt_1", 100, 2000)
    b = event("evt_2", 200, 2500)
    body = diff_exchanges(a, b, side="request").sections[2]
    assert body.kind == "json" and not body.identical
    ignored = diff_exchanges(a, b, side="request", ignore=["id", "created", "data.object.id"]).sections[2]
    assert changed(ignored.lines) == [
        ("-", '      "amount_paid": 2000,'),
        ("+", '      "amount_paid": 2500,'),
        ("-", '          "amount": 2000,'),
        ("+", '          "amount": 2500,'),
    ]
    everything = ["id", "created", "data.object.id", "data.object.amount_paid", "data.object.lines[*].amount"]
    assert diff_exchanges(a, b, side="request", ignore=everything).sections[2].identical
    assert not diff_exchanges(a, b, side="request", ignore=[*everything[:-1], "data.object.lines[1].amount"]
                              ).sections[2].identical


def test_json_key_order_and_spacing_do_not_count() -> None:
    section = diff_bodies(b'{"b": 1, "a": [1, 2]}', "application/json", b'{"a":[1,2],"b":1}', "application/json")
    assert section.kind == "json" and section.identical
    assert [line.text for line in section.lines] == ["{", '  "a": [', "    1,", "    2", "  ],", '  "b": 1', "}"]


def test_headers_ignore_case_and_order_unless_asked() -> None:
    a = Headers([("Content-Type", "json"), ("X-Id", "1"), ("Accept", "*/*")])
    b = Headers([("accept", "*/*"), ("content-type", "json"), ("x-id", "2")])
    section = diff_headers(a, b)
    assert section.kind == "headers"
    assert changed(section.lines) == [("-", "X-Id: 1"), ("+", "x-id: 2")]
    assert diff_headers(a, b, ignore=["X-ID"]).identical
    swapped = Headers([("b", "2"), ("a", "1")])
    assert not diff_headers(Headers([("a", "1"), ("b", "2")]), swapped, ordered=True).identical


def test_a_fresh_signature_shows_as_one_changed_header() -> None:
    a, b = event("evt_1", 1, 1), event("evt_1", 1, 1, signature="t=2,v1=bbb")
    diff = diff_exchanges(a, b)
    assert [s.title for s in diff.sections if not s.identical] == ["request headers"]
    assert changed(diff.sections[1].lines) == [
        ("-", "Stripe-Signature: t=1,v1=aaa"),
        ("+", "Stripe-Signature: t=2,v1=bbb"),
    ]
    assert diff_exchanges(a, b, ignore=["stripe-signature"]).identical


def test_form_bodies_compare_field_by_field() -> None:
    form = "application/x-www-form-urlencoded"
    section = diff_bodies(b"b=2&a=1&token=x", form, b"a=1&b=3&token=y", form, ignore=["token"])
    assert section.kind == "form"
    assert [(line.tag, line.text) for line in section.lines] == [(" ", "a=1"), ("-", "b=2"), ("+", "b=3")]


def test_a_binary_body_sent_with_a_form_content_type_compares_as_binary() -> None:
    form = "application/x-www-form-urlencoded"  # curl --data-binary's default
    a = bytes(range(256)) * 4
    b = a[:500] + b"X" + a[501:]
    section = diff_bodies(a, form, b, form)
    assert section.kind == "binary"
    assert section.first_difference == 500


def test_a_line_break_inside_a_form_value_cannot_forge_a_diff_line() -> None:
    form = "application/x-www-form-urlencoded"
    section = diff_bodies(b"a=1%0A%2Bamount%3D0", form, b"a=2", form)
    assert section.kind == "form"
    assert all("\n" not in line.text and "\r" not in line.text for line in section.lines)
    assert ("-", "a=1\\n+amount=0") in changed(section.lines)  # the terminal rule spells LF \\n


def test_text_bodies_compare_line_by_line() -> None:
    section = diff_bodies(b"one\ntwo\nthree\n", "text/plain", b"one\n2\nthree\n", "text/plain")
    assert section.kind == "text"
    assert [(line.tag, line.text) for line in section.lines] == [(" ", "one"), ("-", "two"), ("+", "2"), (" ", "three")]
    crlf = diff_bodies(b"a\r\nb", "text/plain", b"a\nb", "text/plain")
    assert not crlf.identical and crlf.lines[-1].tag == "?"


def test_binary_bodies_compare_by_size_hash_and_first_difference() -> None:
    a, b = b"\x89PNG\x00\x01\x02", b"\x89PNG\x00\x01\x03\x04"
    section = diff_bodies(a, "image/png", b, "image/png")
    assert section.kind == "binary" and not section.identical
    assert (section.size_a, section.size_b) == (7, 8)
    assert section.sha_a == hashlib.sha256(a).hexdigest() and section.sha_b == hashlib.sha256(b).hexdigest()
    assert section.first_difference == 6
    prefix = diff_bodies(b"\x00\x01", "", b"\x00\x01\x02", "")
    assert prefix.first_difference == 2
    same = diff_bodies(a, "image/png", a, "image/png")
    assert same.identical and same.first_difference is None


@given(st.binary(max_size=64), st.binary(max_size=64))
def test_first_difference_is_where_the_bytes_first_differ(a: bytes, b: bytes) -> None:
    section = diff_bodies(b"\x00" + a, "application/octet-stream", b"\x00" + b, "application/octet-stream")
    assert section.kind == "binary"
    if a == b:
        assert section.identical and section.first_difference is None
    else:
        n = section.first_difference
        assert n is not None and (b"\x00" + a)[:n] == (b"\x00" + b)[:n]
        assert n == min(len(a), len(b)) + 1 or (b"\x00" + a)[n] != (b"\x00" + b)[n]


def test_a_missing_response_and_truncated_bodies_are_said_plainly() -> None:
    a = event("evt_1", 1, 1)
    b = event("evt_1", 1, 1)
    b.response = None
    a.request.body_truncated, a.request.body_size = True, 10_000_000
    diff = diff_exchanges(a, b)
    status = next(s for s in diff.sections if s.title == "status line")
    assert changed(status.lines) == [("-", "HTTP/1.1 200"), ("+", "(no response)")]
    # Found by use: a failed replay said "(no response)" and not why.
    b.error, b.error_message = "local_refused", "connection refused by http://127.0.0.1:9 \x1b[31m"
    status = next(s for s in diff_exchanges(a, b).sections if s.title == "status line")
    assert changed(status.lines) == [("-", "HTTP/1.1 200"),
                                     ("+", "(no response: local_refused: connection refused by http://127.0.0.1:9 \\x1b[31m)")]
    request_body = next(s for s in diff.sections if s.title == "request body")
    assert request_body.lines[-1].tag == "?" and "10000000 bytes" in request_body.lines[-1].text


def test_control_characters_in_captured_data_are_escaped() -> None:
    section = diff_bodies(b"ok\n", "text/plain", b"\x1b[31mred\x07\n", "text/plain")
    assert ("+", "\\x1b[31mred\\x07") in changed(section.lines)
    text = render_unified(diff_exchanges(event("e", 1, 1), event("e", 1, 1, signature="\x1b]0;pwned\x07")))
    assert "\x1b" not in text and "\x07" not in text


def test_unified_text_folds_unchanged_runs() -> None:
    a = b"\n".join(b"line %d" % i for i in range(40))
    b = a.replace(b"line 20", b"line twenty")
    ea, eb = event("e", 1, 1), event("e", 1, 1)
    ea.response.body, eb.response.body = a, b  # type: ignore[union-attr]
    text = render_unified(diff_exchanges(ea, eb, side="response"), context=2)
    assert text.splitlines() == [
        f"--- a {ea.id}", f"+++ b {eb.id}",
        "== status line: identical",
        "== response headers: identical",
        "== response body (text)",
        "@@ 18 unchanged lines",
        " line 18", " line 19", "-line 20", "+line twenty", " line 21", " line 22",
        "@@ 17 unchanged lines",
    ]


def test_side_by_side_pairs_changes_and_wraps_to_the_width() -> None:
    a, b = event("evt_1", 1, 1), event("evt_2", 1, 1)
    rows = render_side_by_side(diff_exchanges(a, b, side="request"), width=43)
    assert ("#", "request line (identical)", "") in rows
    assert (" ", "Host: shop.localhost", "Host: shop.localhost") in rows
    # A long changed line wraps onto a second row, both rows marked as changed.
    assert ("!", '      "id": "in_evt_', '      "id": "in_evt_') in rows
    assert ("!", '1",', '2",') in rows
    assert ("!", '  "id": "evt_1",', '  "id": "evt_2",') in rows
    assert all(len(left) <= 20 and len(right) <= 20 for tag, left, right in rows if tag != "#")
    one_sided = render_side_by_side(diff_exchanges(a, event("evt_1", 1, 1, signature="x"), side="request"), 80)
    assert ("!", "Stripe-Signature: t=1,v1=aaa", "Stripe-Signature: x") in one_sided
    added = diff_bodies(b"a\n", "text/plain", b"a\nb\n", "text/plain")
    assert render_side_by_side(ExchangeDiff("x", "y", [added]), 40)[-1] == ("+", "", "b")
    only = render_side_by_side(diff_exchanges(a, a, side="request"), width=80)
    assert {tag for tag, _, _ in only} <= {"#", " "}


def test_big_bodies_diff_around_the_change_and_unrelated_rewrites_do_not_align() -> None:
    doc = {f"key{i:05d}": i for i in range(30_000)}
    changed_doc = dict(doc, key15000=-1)
    section = diff_bodies(json.dumps(doc).encode(), "application/json",
                          json.dumps(changed_doc).encode(), "application/json")
    assert changed(section.lines) == [("-", '  "key15000": 15000,'), ("+", '  "key15000": -1,')]
    assert len(section.lines) == 30_003
    a = b"\n".join(b"a%d" % i for i in range(5_000))
    b = b"\n".join(b"b%d" % i for i in range(5_000))
    rewrite = diff_bodies(a, "text/plain", b, "text/plain")
    assert [line.tag for line in rewrite.lines] == ["-"] * 5_000 + ["+"] * 5_000


def test_two_changes_far_apart_in_a_big_body_are_two_small_changes() -> None:
    """A list of 20,000 items changed at items 777 and 15,000: everything between them (about
    100,000 lines) was shown removed and added again, as the region difflib was not given."""
    items = [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "price": i * 1.5} for i in range(20_000)]
    edited = json.loads(json.dumps(items))
    edited[777]["price"] = -1
    edited[15_000]["name"] = "changed"
    section = diff_bodies(json.dumps(items).encode(), "application/json", json.dumps(edited).encode(), "application/json")
    assert changed(section.lines) == [("-", '    "price": 1165.5,'), ("+", '    "price": -1,'),
                                      ("-", '    "name": "item 15000",'), ("+", '    "name": "changed",')]
    assert not section.identical


@given(st.lists(st.sampled_from(["{", "}", '"a",', '"b",', "x", "y", "z"]), max_size=60),
       st.lists(st.sampled_from(["{", "}", '"a",', '"b",', "x", "y", "w"]), max_size=60),
       st.integers(min_value=0, max_value=3000))
def test_a_long_diff_cut_at_unique_lines_gives_back_both_sides(common: list[str], other: list[str], seed: int) -> None:
    """However the long regions are cut, the lines kept and removed make the first body, those
    kept and added the second, in order."""
    from devtunnel.capture import diff as diff_module

    a = [f"line {i}" if i % 7 else common[i % len(common)] if common else "c" for i in range(seed)] + common
    b = list(a)
    for n, text in enumerate(other):
        b.insert((n * 37 + seed) % (len(b) + 1), text)
    if seed % 3 == 0:
        b = b[::2] + ["unique tail"]
    old = diff_module.MAX_ALIGNED_LINES
    diff_module.MAX_ALIGNED_LINES = 8  # cut even small bodies, so the cutting is what is checked
    try:
        lines = diff_module._line_diff(a, b)
    finally:
        diff_module.MAX_ALIGNED_LINES = old
    assert [line.text for line in lines if line.tag in " -"] == a
    assert [line.text for line in lines if line.tag in " +"] == b


def test_diff_lines_follow_the_one_terminal_rule_in_every_kind_of_section() -> None:
    """The diff had its own rule (C0 and C1 controls only): a bidi override, a zero-width space or
    a BOM went out raw, in text, form, header and JSON lines alike."""
    from devtunnel.values.terminal import is_plain

    hidden = "a\u202eb\u200bc\ufeffd\x9b"
    shown = "a\\u202eb\\u200bc\\ufeffd\\x9b"
    text = diff_bodies(b"x\n", "text/plain", hidden.encode() + b"\n", "text/plain")
    form = diff_bodies(b"k=x", "application/x-www-form-urlencoded", f"k={hidden}".encode(), "application/x-www-form-urlencoded")
    data = diff_bodies(b'{"k": "x"}', "application/json", json.dumps({"k": hidden}).encode(), "application/json")
    headers = diff_headers(Headers([("X-K", "x")]), Headers([("X-K", hidden)]))
    assert ("+", shown) in changed(text.lines)
    assert ("+", f"k={shown}") in changed(form.lines)
    assert ("+", f'  "k": "{shown}"') in changed(data.lines)
    assert ("+", f"X-K: {shown}") in changed(headers.lines)
    for section in (text, form, data, headers):
        assert all(is_plain(line.text.replace("\\", "")) for line in section.lines), section.lines


def test_bytes_that_are_not_utf8_show_as_escapes_and_the_lines_encode() -> None:
    """A ``text/*`` body that is not UTF-8 read as latin-1 (guessed letters); a reason phrase or a
    header value holding such bytes now reads as everywhere else: ``\\xNN``, and every line encodes
    as UTF-8 (the API sends them as JSON)."""
    a = make_exchange("GET", "/", [("Host", "h")], b"", make_response(200, [("X-N", b"Gr\xf6\xdfe")], b"caf\xe9\n",  # type: ignore[list-item]
                                                                        reason="OK"))
    b = make_exchange("GET", "/", [("Host", "h")], b"", make_response(418, [("X-N", b"x")], b"cafe\n",
                                                                        reason=b"Gr\xf6\xdfe".decode("latin-1")))
    a.response.headers = Headers([("X-N", b"Gr\xf6\xdfe"), ("Content-Type", b"text/plain")])  # type: ignore[union-attr]
    b.response.headers = Headers([("X-N", b"x"), ("Content-Type", b"text/plain")])  # type: ignore[union-attr]
    result = diff_exchanges(a, b, side="response")
    lines = [(line.tag, line.text) for section in result.sections for line in section.lines]
    assert ("+", "HTTP/1.1 418 Gr\\xf6\\xdfe") in lines
    assert ("-", "X-N: Gr\\xf6\\xdfe") in lines
    assert ("-", "caf\\xe9") in lines
    json.dumps(lines, ensure_ascii=False).encode("utf-8")
    render_unified(result).encode("utf-8")


def test_volatile_response_headers_are_shown_but_alone_do_not_make_a_difference() -> None:
    a = make_exchange(response=make_response(200, [("Date", "Mon, 01 Dec 2025 10:00:00 GMT"), ("X-Request-Id", "1")], b"ok"))
    b = make_exchange(response=make_response(200, [("date", "Mon, 01 Dec 2025 10:00:01 GMT"), ("X-Request-Id", "2")], b"ok"))
    counted = diff_exchanges(a, b, side="response")
    assert not counted.identical and not any(line.tag == "?" for s in counted.sections for line in s.lines)
    quiet = diff_exchanges(a, b, side="response", volatile=("Date", "X-Request-Id"))
    assert quiet.identical
    headers = quiet.sections[1]
    assert sorted(line.tag for line in headers.lines) == ["+", "+", "-", "-", "?"]
    assert headers.lines[-1].text == "only volatile headers differ, not counted: Date, X-Request-Id"
    assert ("#", "response headers", "") in render_side_by_side(quiet, 80)  # not "(identical)" over changed rows
    # Another change still counts, and the volatile ones show among it with no note.
    c = make_exchange(response=make_response(200, [("Date", "x"), ("X-Request-Id", "1"), ("X-Build", "7")], b"ok"))
    mixed = diff_exchanges(a, c, side="response", volatile=("Date", "X-Request-Id"))
    assert not mixed.identical and not any(line.tag == "?" for line in mixed.sections[1].lines)
    # An ignored header is left out, not shown as volatile.
    gone = diff_exchanges(a, b, side="response", ignore=("Date",), volatile=("Date", "X-Request-Id"))
    assert gone.sections[1].lines[-1].text == "only volatile headers differ, not counted: X-Request-Id"
