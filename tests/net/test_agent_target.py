"""TARGET parsing: the forms ``devtunnel http`` accepts and a clear error for everything else."""

from __future__ import annotations

import pytest

from devtunnel.errors import ConfigError
from devtunnel.values.target import Target, parse_target


@pytest.mark.parametrize(
    ("text", "url", "authority"),
    [
        ("8080", "http://127.0.0.1:8080", "127.0.0.1:8080"),
        (" 3000 ", "http://127.0.0.1:3000", "127.0.0.1:3000"),
        ("localhost:8080", "http://localhost:8080", "localhost:8080"),
        ("10.0.0.2:80", "http://10.0.0.2:80", "10.0.0.2"),
        ("[::1]:9000", "http://[::1]:9000", "[::1]:9000"),
        ("http://localhost:8080", "http://localhost:8080", "localhost:8080"),
        ("https://localhost:8443", "https://localhost:8443", "localhost:8443"),
        ("https://api.internal", "https://api.internal:443", "api.internal"),
        ("HTTP://Example.COM:81/", "http://example.com:81", "example.com:81"),
        ("http://127.0.0.1:5000/base/", "http://127.0.0.1:5000/base", "127.0.0.1:5000"),
    ],
)
def test_accepted_targets_parse_to_url_and_host_header(text: str, url: str, authority: str) -> None:
    target = parse_target(text)
    assert target.url == url
    assert target.authority == authority


def test_base_path_is_put_before_origin_form_targets_only() -> None:
    target = parse_target("http://127.0.0.1:5000/api")
    assert target.request_target(b"/users?id=1") == b"/api/users?id=1"
    assert target.request_target(b"*") == b"*"
    assert parse_target("5000").request_target(b"/x") == b"/x"


def test_https_target_uses_tls() -> None:
    assert parse_target("https://localhost:8443").tls
    assert not parse_target("8443").tls
    assert parse_target("https://localhost:8443") == Target("https", "localhost", 8443)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("0", "between 1 and 65535"),
        ("70000", "between 1 and 65535"),
        ("localhost", "port is missing"),
        ("localhost:http", "not a number"),
        ("::1:8080", "[ADDRESS]:PORT"),
        ("[::1]", "port is missing"),
        ("localhost:8080/path", "needs a URL with a scheme"),
        ("ftp://localhost:21", "scheme must be http or https"),
        ("ws://localhost:8080", "scheme must be http or https"),
        ("http://user:pw@localhost:8080", "credentials"),
        ("http://localhost:8080/?a=1", "query or a fragment"),
        ("http://localhost:8080/#top", "query or a fragment"),
        ("http://:8080", "host is missing"),
        ("http://localhost:99999", "invalid target"),
        ("http://bad_host!:80", "not a valid host name"),
        ("exa mple:80", "not a valid host name"),
    ],
)
def test_invalid_targets_raise_config_error_saying_why(text: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_target(text)
    message = str(info.value)
    assert reason in message
    if "@" in text:  # the target is quoted with its credentials hidden
        assert "'http://…@localhost:8080'" in message and "pw" not in message
    elif text.strip():
        assert repr(text) in message
