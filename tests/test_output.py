"""commands/output.py: text from captures made safe for a terminal."""

from __future__ import annotations

import pytest

from devtunnel.commands.http import exchange_line
from devtunnel.commands.output import safe
from devtunnel.capture.model import Exchange, Headers, Request, Response


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/webhooks/stripe?id=42&x=[/y]", "/webhooks/stripe?id=42&x=[/y]"),  # printable ASCII as it is
        ("/a\\b", "/a\\\\b"),  # a literal backslash is doubled, so it cannot pose as an escape
        ("/\x1b[31mred", "/\\x1b[31mred"),
        ("/del\x7f", "/del\\x7f"),
        ("/tab\there\r\n", "/tab\\there\\r\\n"),
        ("/caf\u00e9", "/caf\u00e9"),  # printable non-ASCII stays
        ("/\u202egnp.exe", "/\\u202egnp.exe"),  # a bidi override is made visible
        ("/c1\x9b", "/c1\\x9b"),
        ("", ""),
    ],
)
def test_safe_escapes_exactly_the_characters_a_terminal_would_act_on(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_safe_can_keep_newlines_for_bodies() -> None:
    assert safe("a\n\tb\x1b", keep_newlines=True) == "a\n\tb\\x1b"


def test_the_log_line_of_a_hostile_request_is_one_safe_line() -> None:
    ex = Exchange(
        id="01ARYZ6S41TSV4RRFFQ69G5FAV", tunnel="demo", started_at=1469918176.385,
        request=Request(headers=Headers([]), http_version="1.1", method="GE\x1bT", target=b"/x\n\x1b]0;pwned\x07"),
        response=Response(headers=Headers([]), http_version="1.1", status=200, reason="OK"),
        duration=0.0123,
    )
    line = exchange_line(ex)
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "GE\\x1bT" in line and "/x\\n\\x1b]0;pwned\\x07" in line and "200" in line and "12.3 ms" in line
