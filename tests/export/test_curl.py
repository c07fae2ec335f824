"""The curl command's shape: flags only when needed, side files, redaction, clear errors."""

from __future__ import annotations

import shlex

import pytest

from devtunnel.errors import ExportError
from devtunnel.export import EXPORTERS, export, options_of
from tests.kit.exchanges import make_exchange

BASE = [(b"Host", b"pub.example"), (b"User-Agent", b"ua"), (b"Accept", b"*/*")]


def curl(ex, **options) -> str:  # type: ignore[no-untyped-def]
    return export("curl", ex, **options).text


def words(text: str) -> list[str]:
    """The arguments the shell would pass to curl (comment lines and continuations removed)."""
    lines = [line for line in text.splitlines(keepends=True) if not line.startswith("#")]
    return shlex.split("".join(lines).replace(" \\\n  ", " "))


def test_get_has_no_method_flag_and_uses_the_public_url() -> None:
    text = curl(make_exchange(headers=BASE))
    assert text == (
        "curl --http1.1 http://pub.example/ \\\n  -H 'Host: pub.example' \\\n  -H 'User-Agent: ua' \\\n  -H 'Accept: */*'\n"
    )
    assert words(text) == ["curl", "--http1.1", "http://pub.example/", "-H", "Host: pub.example", "-H", "User-Agent: ua",
                           "-H", "Accept: */*"]


@pytest.mark.parametrize(
    ("method", "body", "flag"),
    [
        ("POST", b"x", None),
        ("PUT", b"x", "-X PUT"),
        ("GET", b"x", "-X GET"),
        ("POST", b"", "-X POST"),
        ("HEAD", b"", "--head"),
        ("DELETE", b"", "-X DELETE"),
    ],
)
def test_method_flag_only_when_curl_would_pick_another(method: str, body: bytes, flag: str | None) -> None:
    text = curl(make_exchange(method, headers=BASE, body=body))
    first_line = text.splitlines()[0]
    if flag is None:
        assert "-X" not in first_line and "--head" not in first_line
    else:
        assert flag in first_line


def test_missing_default_headers_are_switched_off_and_compressed_never_used() -> None:
    args = words(curl(make_exchange("POST", headers=[(b"Host", b"h")], body=b"a=1")))
    assert args[-12:] == ["-H", "Host: h", "-H", "Accept:", "-H", "User-Agent:", "-H", "Content-Type:", "-H", "Expect:",
                          "--data-binary", "a=1"]
    assert "--compressed" not in args and "-d" not in args


def test_empty_header_value_uses_curls_semicolon_form() -> None:
    assert "-H 'X-Empty;'" in curl(make_exchange(headers=[*BASE, (b"X-Empty", b"")]))


def test_body_with_nul_non_utf8_control_or_leading_at_goes_to_a_side_file() -> None:
    for body in (b"a\x00b", b"\xff\xfe", b"\x1b[31mred", b"@/etc/passwd", b"crlf\r\n"):
        ex = make_exchange("POST", headers=BASE, body=body)
        result = export("curl", ex, body_dir="bodies")
        assert result.files == {f"bodies/{ex.id}.body": body}
        assert f"--data-binary @bodies/{ex.id}.body" in result.text


def test_header_with_bytes_a_shell_argument_cannot_show_goes_to_a_header_file() -> None:
    ex = make_exchange(headers=[*BASE, (b"X-Bin", b"caf\xe9"), (b"X-Esc", b"\x1b]0;title\x07")])
    result = export("curl", ex)
    assert result.files == {f"./{ex.id}.header4.txt": b"X-Bin: caf\xe9\n", f"./{ex.id}.header5.txt": b"X-Esc: \x1b]0;title\x07\n"}
    assert f"-H @./{ex.id}.header4.txt" in result.text and "\x1b" not in result.text


def test_target_with_non_utf8_bytes_goes_to_a_curl_config_file() -> None:
    ex = make_exchange(target=b'/p\xff"q\\', headers=BASE)
    result = export("curl", ex)
    assert result.files == {f"./{ex.id}.target.curlrc": b'request-target = "/p\xff\\"q\\\\"\n'}
    assert f"-K ./{ex.id}.target.curlrc" in result.text


def test_url_and_base_url_options() -> None:
    ex = make_exchange(target=b"/hooks?x=1", headers=BASE)
    assert "http://127.0.0.1:8080/hooks?x=1" in words(curl(ex, base_url="http://127.0.0.1:8080"))
    assert "https://other.example/exact" in words(curl(ex, url="https://other.example/exact"))
    with pytest.raises(ExportError, match="not several"):
        curl(ex, url="http://a/", base_url="http://b")
    with pytest.raises(ExportError, match="not an http"):
        curl(ex, base_url="file:///etc")
    with pytest.raises(ExportError, match="control characters"):
        curl(ex, url="http://a.example/\x1b[2J")


def test_without_a_usable_host_the_target_url_is_used_then_an_error() -> None:
    ex = make_exchange(headers=[(b"Host", b"evil.example/$(x)")], target_url="http://127.0.0.1:3000")
    assert words(curl(ex))[2] == "http://127.0.0.1:3000/"
    ex = make_exchange(headers=[], target_url="")
    with pytest.raises(ExportError, match="base_url"):
        curl(ex)


@pytest.mark.parametrize("scheme", ["https://attacker.example/x#", "javascript", "ftp"])
def test_a_captured_scheme_that_is_not_http_or_https_makes_no_public_url(scheme: str) -> None:
    # A capture an older agent took behind a hostile relay: the scheme went before the Host.
    ex = make_exchange(headers=[(b"Host", b"shop.localhost")], target_url="http://127.0.0.1:3000")
    ex.scheme = scheme
    assert words(curl(ex))[2] == "http://127.0.0.1:3000/"
    assert "attacker" not in export("httpie", [ex]).text
    assert '"url": "http://127.0.0.1:3000/' in export("har", [ex]).text


def test_ipv6_base_url_turns_globbing_off() -> None:
    assert words(curl(make_exchange(headers=BASE), base_url="http://[::1]:8080"))[:4] == [
        "curl", "--http1.1", "--globoff", "http://[::1]:8080/"]


def test_redact_replaces_credentials_and_signatures() -> None:
    secrets = [
        (b"Authorization", b"Bearer sk_live_1"),
        (b"Proxy-Authorization", b"Basic cHJveHk="),
        (b"Cookie", b"sid=s3cret; theme=dark"),
        (b"Stripe-Signature", b"t=1,v1=deadbeef"),
        (b"X-Hub-Signature-256", b"sha256=cafe"),
        (b"X-Slack-Signature", b"v0=1234"),
        (b"X-Shopify-Hmac-Sha256", b"abcd=="),
        (b"Svix-Signature", b"v1,xyz"),
    ]
    text = curl(make_exchange(headers=[*BASE, *secrets]), redact=True)
    for _, value in secrets:
        assert value.decode() not in text
    assert "-H 'Authorization: Bearer <redacted>'" in text
    assert "-H 'Cookie: sid=<redacted>; theme=<redacted>'" in text
    assert "-H 'Stripe-Signature: <redacted>'" in text


def test_truncated_body_is_flagged_and_curl_counts_it() -> None:
    ex = make_exchange("POST", headers=[*BASE, (b"Content-Length", b"5000")], body=b"x" * 10)
    ex.request.body_size, ex.request.body_truncated = 5000, True
    text = curl(ex)
    assert text.startswith("# body truncated: 10 of 5000 bytes") and "Content-Length" not in text


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"method": "GET /x"}, "not an HTTP token"),
        ({"headers": [(b"Host", b"h"), (b"Bad Name", b"1")]}, "not an HTTP token"),
        ({"headers": [(b"Host", b"h"), (b"X", b"a\r\nInjected: 1")]}, "CR, LF or NUL"),
        ({"target": b"/a\r\nb"}, "CR, LF or NUL"),
        ({"websocket": True}, "WebSocket"),
    ],
)
def test_exchanges_curl_cannot_send_give_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ExportError, match=message):
        curl(make_exchange(**kwargs))


def test_registry_knows_every_format_and_rejects_unknown_ones_and_options() -> None:
    assert set(EXPORTERS) == {"curl", "har", "raw", "httpie", "pytest"}
    assert "redact" in options_of("curl") and "response" in options_of("raw")
    with pytest.raises(ExportError, match="known formats: curl, har, raw, httpie, pytest"):
        export("wget", make_exchange())
    with pytest.raises(ExportError, match="no option 'colour'.*options: redact"):
        export("curl", make_exchange(), colour=True)
    with pytest.raises(ExportError, match="nothing to export"):
        export("har", [])


def test_framing_headers_are_left_to_curl() -> None:
    for framing in [(b"Content-Length", b"3"), (b"Transfer-Encoding", b"chunked"), (b"content-length", b"999")]:
        text = curl(make_exchange("POST", headers=[*BASE, framing], body=b"a=1"))
        assert "Content-Length" not in text and "content-length" not in text and "Transfer-Encoding" not in text
        assert words(text)[-2:] == ["--data-binary", "a=1"]


def test_head_with_content_length_zero_stays_a_head() -> None:
    args = words(curl(make_exchange("HEAD", headers=[*BASE, (b"Content-Length", b"0")])))
    assert "--head" in args and "--data-binary" not in args and "Content-Length: 0" not in args


def test_local_sends_to_each_exchanges_local_service() -> None:
    one = make_exchange(target=b"/a?x=1", headers=BASE, target_url="http://127.0.0.1:3000")
    two = make_exchange(target=b"/b", headers=BASE, target_url="https://[::1]:8443/base")
    text = curl([one, two], local=True)
    assert "http://127.0.0.1:3000/a?x=1" in text and "https://[::1]:8443/base/b" in text
    with pytest.raises(ExportError, match="no local service URL"):
        curl(make_exchange(headers=BASE, target_url=""), local=True)
