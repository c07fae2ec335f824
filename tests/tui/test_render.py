"""Safe rendering of captured data: escapes, classification, pretty-printing, rows."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.console import Console

from devtunnel.capture.model import Headers, Response
from devtunnel.tui.render import (
    MAX_ROW,
    HexLines,
    TextLines,
    body_kind,
    describe_body,
    escape_control,
    escape_line,
    form_fields,
    pretty_json,
    pretty_xml,
    safe_text,
)
from devtunnel.values.sizes import format_size
from tests.kit.exchanges import make_response


def _shown(text: object) -> str:
    console = Console(width=400, color_system="truecolor", force_terminal=True, legacy_windows=False)
    with console.capture() as capture:
        console.print(text)
    return capture.get()


def test_escape_control_makes_escape_sequences_visible() -> None:
    assert escape_control("a\x1b[31mb\x07\x00\x7f\x9b") == "a\\x1b[31mb\\x07\\x00\\x7f\\x9b"
    assert escape_control("tab\there\r\n") == "tab\\there\\r\\n"
    assert escape_control("\u202eevil\u2066") == "\\u202eevil\\u2066"


def test_escape_line_keeps_tabs_as_spaces_but_escapes_other_controls() -> None:
    assert escape_line("k\tv\x1b") == "k   v\\x1b"


def test_markup_in_safe_text_is_printed_literally() -> None:
    out = _shown(safe_text("[bold red]boom[/] [/x] [link=http://evil]x[/link]"))
    assert "[bold red]boom[/] [/x] [link=http://evil]x[/link]" in out


def test_zero_width_and_other_invisible_characters_are_shown() -> None:
    assert safe_text("pay\u200bment\u200d\u2060\ufeff\u00ad").plain == "pay\\u200bment\\u200d\\u2060\\ufeff\\xad"
    assert escape_line("a\u200bb\u2028") == "a\\u200bb\\u2028"


def test_shown_text_doubles_backslashes_but_editable_and_body_text_keeps_them() -> None:
    assert safe_text("C:\\x1b").plain == "C:\\\\x1b"
    assert escape_control("C:\\x1b\x1b") == "C:\\x1b\\x1b"
    assert escape_line('"a\\"b"') == '"a\\"b"'


@given(st.text())
def test_safe_text_never_lets_a_control_or_format_character_through(value: str) -> None:
    import unicodedata

    for shown in (safe_text(value).plain, escape_control(value), escape_line(value.replace("\n", ""))):
        assert not any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp") for c in shown)


@pytest.mark.parametrize(
    ("content_type", "body", "kind"),
    [
        ("application/json", b'{"a":1}', "json"),
        ("application/problem+json", b"{}", "json"),
        ("", b' [1, 2]', "json"),
        ("application/x-www-form-urlencoded", b"a=1", "form"),
        ("application/atom+xml", b"<feed/>", "xml"),
        ("text/xml", b"<a/>", "xml"),
        ("text/html", b"<p>hi</p>", "text"),
        ("image/png", b"\x89PNG", "binary"),
        ("image/svg+xml", b"<svg/>", "xml"),
        ("application/octet-stream", b"hello", "binary"),
        ("text/plain", b"caf\xe9", "binary"),
        ("text/plain", b"a\x00b", "binary"),
        ("application/json", b"", "empty"),
    ],
)
def test_body_kind_by_media_type_then_by_bytes(content_type: str, body: bytes, kind: str) -> None:
    assert body_kind(content_type, body) == kind


def test_pretty_json_keeps_key_order_and_unicode() -> None:
    assert pretty_json('{"b":1,"a":"é"}') == '{\n  "b": 1,\n  "a": "é"\n}'
    assert pretty_json("{nope") is None


def test_pretty_json_escapes_control_characters_in_strings() -> None:
    assert pretty_json('["\\u001b[31m"]') == '[\n  "\\u001b[31m"\n]'


def test_pretty_xml_does_not_expand_entities() -> None:
    xml = '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">]><x>&a;&a;</x>'
    assert pretty_xml(xml) == '<!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">\n]>\n<x>&a;&a;</x>'


def test_pretty_xml_indents_broken_xml_as_well_as_it_can() -> None:
    assert pretty_xml("<a><b>1</b><c>") == "<a>\n  <b>1</b>\n  <c>"


def test_form_fields_keep_order_blanks_and_repeats() -> None:
    assert form_fields("a=1&b=&a=2&c=%E2%9C%93+x") == [("a", "1"), ("b", ""), ("a", "2"), ("c", "✓ x")]


def test_long_lines_are_cut_into_rows() -> None:
    lines = TextLines("x" * (MAX_ROW * 2 + 5) + "\nend")
    assert len(lines) == 4
    assert lines.width == MAX_ROW
    assert lines.line(2).plain == "xxxxx"


def test_width_counts_escapes_and_wide_characters() -> None:
    assert TextLines("ab\x1b").width == len("ab\\x1b")
    assert TextLines("日本").width == 4


def test_crlf_line_ends_are_dropped_but_a_lone_cr_is_shown() -> None:
    lines = TextLines("a\r\nb\rc")
    assert [lines.line(i).plain for i in range(len(lines))] == ["a", "b\\rc"]


def test_hex_lines_cover_every_byte() -> None:
    lines = HexLines(bytes(range(33)))
    assert len(lines) == 3
    assert lines.line(2).plain.startswith("00000020 20 ")
    assert lines.line(2).plain.endswith("│ " + " " * 15 + "│")
    assert all(lines.line(i).cell_len == lines.width == 76 for i in range(len(lines)))


def test_describe_body_reports_truncation_with_the_real_size() -> None:
    response = Response(headers=Headers([("Content-Type", "text/plain")]), body=b"abc", body_size=5_000_000, body_truncated=True)
    assert describe_body(response).label == "text · 4.8 MiB · truncated: recorded the first 3 B of 4.8 MiB"


def test_describe_body_of_invalid_json_says_so_and_shows_it() -> None:
    response = Response(headers=Headers([("Content-Type", "application/json")]), body=b"{oops", body_size=5)
    body = describe_body(response)
    assert body.label == "json · 5 B · does not parse as JSON"
    assert body.lines is not None and body.lines.line(0).plain == "{oops"


def test_sizes_in_the_inspector_read_as_in_the_cli() -> None:
    assert [format_size(n) for n in (0, 1023, 1024, 1536, 10 * 1024 * 1024)] == ["0 B", "1023 B", "1 KiB", "1.5 KiB", "10 MiB"]


def _gzip_response(body: bytes, content_type: str = "application/json") -> Response:
    import gzip

    packed = gzip.compress(body)
    return make_response(headers=[("Content-Type", content_type), ("Content-Encoding", "gzip")], body=packed)


def test_gzip_body_is_inflated_and_pretty_printed() -> None:
    response = _gzip_response(b'{"a":1}')
    body = describe_body(response)
    assert body.label.startswith("json · 7 B · decoded from gzip (")
    assert body.lines is not None and [body.lines.line(i).plain for i in range(len(body.lines))] == ["{", '  "a": 1', "}"]


def test_gzip_bomb_is_inflated_only_up_to_the_limit() -> None:
    from devtunnel.tui.render import DECODE_LIMIT

    body = describe_body(_gzip_response(b"\x00" * (DECODE_LIMIT * 2), "application/octet-stream"))
    assert body.lines is not None and len(body.lines) == DECODE_LIMIT // 16


def test_a_body_inflated_up_to_the_limit_says_it_was_stopped_there_and_one_that_fits_does_not() -> None:
    from devtunnel.tui.render import DECODE_LIMIT

    label = describe_body(_gzip_response(b"\x00" * (DECODE_LIMIT + 1), "application/octet-stream")).label
    assert label.startswith("binary · 32 MiB · hex dump · decoded from gzip (")
    assert label.endswith(" · decoded only the first 32 MiB")
    whole = describe_body(_gzip_response(b"\x00" * DECODE_LIMIT, "application/octet-stream")).label
    assert "decoded only" not in whole


def test_body_that_claims_gzip_but_is_not_is_shown_as_received_and_says_so() -> None:
    headers = Headers([("Content-Type", "text/plain"), ("Content-Encoding", "gzip")])
    body = describe_body(Response(headers=headers, body=b"plain", body_size=5))
    assert body.label == "text · 5 B · not valid gzip: shown as received"
    assert body.lines is not None and body.lines.line(0).plain == "plain"


def test_a_body_in_a_coding_not_decoded_says_so_and_its_hex_dump_says_nothing_of_codings() -> None:
    headers = Headers([("Content-Type", "application/json"), ("Content-Encoding", "br")])
    response = Response(headers=headers, body=b"\x8b\x02\x80{}\x03", body_size=6)
    assert describe_body(response).label == "binary · 6 B · hex dump · shown as received: only gzip and deflate bodies are decoded"
    assert describe_body(response, hex_dump=True).label == "binary · 6 B · hex dump"
    assert "decoded" not in describe_body(_gzip_response(b'{"a":1}'), hex_dump=True).label


def test_folded_rows_fit_the_width_in_cells_and_keep_every_character() -> None:
    from rich.cells import cell_len

    text = "ascii " * 30 + "\n" + "日本語のテキスト" * 10 + "\ncafé\x1b" + "é" * 50
    folded = TextLines(text).folded(20)
    rows = [folded.line(i).plain for i in range(len(folded))]
    assert all(cell_len(row) <= 20 for row in rows)
    assert "".join(rows) == ("ascii " * 30 + "日本語のテキスト" * 10 + "café\\x1b" + "é" * 50)


def test_a_long_line_folds_whole_not_in_cut_rows() -> None:
    """The rows a long line is cut into are not line breaks: folded, the line breaks only at
    the width (a short row every MAX_ROW characters read as a break in the body)."""
    line = "".join(chr(ord("a") + n % 26) for n in range(MAX_ROW * 2 + 5))
    folded = TextLines(line + "\nend").folded(160)
    rows = [folded.line(i).plain for i in range(len(folded))]
    assert rows == [line[i : i + 160] for i in range(0, len(line), 160)] + ["end"]


def test_a_body_too_costly_to_fold_is_kept_as_it_is_and_says_so() -> None:
    from devtunnel.tui.render import WIDE_FOLD_LIMIT

    wide = ("日本" * 50 + "\n") * (WIDE_FOLD_LIMIT // 100 + 1)
    lines = TextLines(wide)
    assert not lines.foldable() and lines.folded(40) is lines
    response = Response(headers=Headers([("Content-Type", "text/plain")]), body=wide.encode(), body_size=len(wide.encode()))
    assert describe_body(response, pretty=False).label.endswith("too large to fold: scroll sideways")
    assert TextLines("é" * (WIDE_FOLD_LIMIT * 2)).foldable()  # one cell a character: sliced, not measured


def test_a_form_fields_json_is_reformatted_unless_the_body_is_too_large_to_reformat() -> None:
    from urllib.parse import urlencode

    from devtunnel.tui.render import PRETTY_LIMIT
    from tests.kit.exchanges import make_request

    def view(body: bytes):  # type: ignore[no-untyped-def]
        return describe_body(make_request("POST", "/", [("Content-Type", "application/x-www-form-urlencoded")], body))

    small = view(urlencode({"payload": '{"a": [1]}', "text": "[not json"}).encode())
    assert [(name, [lines.line(i).plain for i in range(len(lines))]) for name, lines in small.field_json] == [
        ("payload", ["{", '  "a": [', "    1", "  ]", "}"])]
    large = view(urlencode({"payload": '{"a": 1}', "pad": "x" * PRETTY_LIMIT}).encode())
    assert large.fields and not large.field_json
    assert not describe_body(make_request("POST", "/", [("Content-Type", "application/x-www-form-urlencoded")],
                                          b'payload={"a":1}'), pretty=False).field_json
