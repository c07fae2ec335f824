"""One rule per contract: every place that reads a size or checks a token agrees with the others."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.capture.filters import parse
from devtunnel.capture.edit import Edit
from devtunnel.errors import ConfigError, ReplayError
from devtunnel.values.http1 import is_token
from devtunnel.values.request_head import method_problem
from devtunnel.values.websocket import sendable_close_code
from devtunnel.values.sizes import compact_size, format_size, parse_size, size_bytes, size_text


@pytest.mark.parametrize(
    ("text", "size"),
    [("17", 17), ("512k", 512 << 10), ("10mb", 10 << 20), ("1mib", 1 << 20), ("1.5 GiB", 3 << 29),
     (".5m", 1 << 19), ("0", 0), ("2KB", 2048)],
)
def test_a_size_reads_the_same_as_an_option_and_in_a_filter(text: str, size: int) -> None:
    assert size_bytes(text) == parse_size(text) == size
    if " " not in text:
        smaller, larger = parse(f"size:<={text}"), parse(f"size:>{text}")
        assert smaller is not None and larger is not None


@pytest.mark.parametrize("text", ["", "ten", "1tb", "-1", "1 2", "1e3", "mb"])
def test_what_is_not_a_size_is_refused_by_every_reader(text: str) -> None:
    assert size_bytes(text) is None
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size(text)


@given(st.integers(min_value=0, max_value=1 << 42))
def test_config_writes_sizes_that_read_back(n: int) -> None:
    assert parse_size(str(size_text(n))) == n


def test_sizes_for_people_and_for_a_column() -> None:
    assert [format_size(n) for n in (0, 17, 1536, 10 << 20, 3 << 29, 1 << 40)] == [
        "0 B", "17 B", "1.5 KiB", "10 MiB", "1.5 GiB", "1 TiB"]
    assert [compact_size(n) for n in (0, 900, 1536, 20 << 20, 5 << 40)] == ["0B", "900B", "1.5K", "20M", "5120G"]
    assert all(len(compact_size(n)) <= 5 for n in (0, 1023, 1024, 10239, 1 << 20, (1 << 30) - 1))


@pytest.mark.parametrize("name", ["X-Hook", "content-type", "!#$%&'*+-.^_`|~", "a1"])
def test_tokens(name: str) -> None:
    assert is_token(name) and is_token(name.encode())


@pytest.mark.parametrize("name", ["", "X Hook", "X-Hook\n", "X-Hook\r\n", "a:b", "é", "a\x00", "(x)", "x/y"])
def test_not_tokens_and_a_trailing_newline_is_not_forgiven(name: str) -> None:
    assert not is_token(name)
    assert not is_token(name.encode("utf-8"))


def test_every_place_that_checks_a_method_or_name_uses_the_token_rule() -> None:
    assert method_problem(b"GET\n") is not None and method_problem(b"GET") is None
    with pytest.raises(ReplayError, match="invalid method"):
        Edit(method="GET\n")
    with pytest.raises(ReplayError):
        Edit(set_headers=(("X-Hook\n", "1"),))


@pytest.mark.parametrize(
    ("code", "sent"),
    [(1000, 1000), (1001, 1001), (1008, 1008), (1011, 1011), (1014, 1014), (3000, 3000), (4999, 4999),
     (1005, 1000), (1006, 1011), (1015, 1011), (1004, 1000), (1016, 1000), (2999, 1000), (5000, 1000), (0, 1000)],
)
def test_a_close_code_either_travels_or_is_replaced_the_same_way_by_relay_and_agent(code: int, sent: int) -> None:
    assert sendable_close_code(code) == sent


@given(st.binary(max_size=24) | st.sampled_from(
    [b"5", b" 5\t", b"007", b"0", b"", b"+5", b"-0", b"5 5", b"0x5", b"5.0", "\u0665".encode(), b"\xd9\xa5", b"1" * 18, b"1" * 19]))
def test_a_content_length_is_digits_alike_in_a_request_at_the_agent_and_a_response_at_the_relay(value: bytes) -> None:
    from devtunnel.relay.headers import length_problem
    from devtunnel.values.http1 import content_length_digits
    from devtunnel.values.request_head import head_problem

    digits = content_length_digits(value)
    assert digits is None or (digits.isascii() and digits.isdigit() and digits == value.strip(b" \t"))
    response_ok = length_problem(((b"Content-Length", value),)) is None
    request_ok = head_problem(b"POST", b"/", ((b"Host", b"a"), (b"Content-Length", value))) is None
    assert response_ok == request_ok == (digits is not None and len(digits) <= 18)  # always an int; no body is longer
