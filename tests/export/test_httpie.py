"""HTTPie export, checked by running the real ``http --offline`` through a shell."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from devtunnel.errors import ExportError
from devtunnel.export import Export, export
from tests.export.support import run_shell
from tests.kit.exchanges import make_exchange

HTTP = shutil.which("http", path=str(Path(sys.executable).parent)) or shutil.which("http")
CANARY = Path(tempfile.gettempdir()) / f"devtunnel-httpie-canary-{os.getpid()}"

needs_httpie = pytest.mark.skipif(HTTP is None, reason="needs HTTPie (the test extras install it)")


def offline(result: Export, directory: Path) -> tuple[str, list[tuple[str, str]], bytes]:
    """Run the command with ``--offline`` and parse the request HTTPie prints."""
    assert HTTP is not None and result.text.startswith("http ")
    command = Export(f"{HTTP} --offline --pretty=none " + result.text[len("http "):], result.files)
    proc = run_shell(command, directory)
    assert proc.returncode == 0, (result.text, proc.stderr)
    head, _, body = proc.stdout.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    headers = [(n, v.strip()) for n, _, v in (line.partition(":") for line in lines[1:])]
    return lines[0], headers, body


@needs_httpie
def test_httpie_command_sends_method_target_headers_and_body(tmp_path: Path) -> None:
    hostile = f"'$(touch {CANARY})' `touch {CANARY}` \"$HOME\""
    headers = [
        (b"Host", b"pub.example"),
        (b"X-Hostile", hostile.encode()),
        (b"X-Eq", b"=looks like json"),
        (b"X-At", b"@/etc/passwd"),
        (b"X-Empty", b""),
        (b"Content-Type", b"application/json"),
        (b"Content-Length", b"25"),
    ]
    body = f'{{"a": "$(touch {CANARY})"}}\n'.encode()[:25]
    ex = make_exchange("PATCH", b"/items/1?x=%20y", headers, body)
    start, got, sent_body = offline(export("httpie", ex, base_url="http://127.0.0.1:1"), tmp_path)
    assert not CANARY.exists()
    assert start == "PATCH /items/1?x=%20y HTTP/1.1"
    expected = [(n.decode(), v.decode()) for n, v in headers if n != b"Content-Length"]
    # HTTPie may reorder headers; it must send each of them, plus only the framing it computes.
    assert Counter(got) == Counter(expected + [("Content-Length", "25")])
    assert sent_body.rstrip(b"\n") == body.rstrip(b"\n")


@needs_httpie
def test_binary_body_is_read_from_a_side_file(tmp_path: Path) -> None:
    body = b"\x00\x01\x02\xff"
    ex = make_exchange("POST", b"/bin", [(b"Host", b"h"), (b"Content-Type", b"application/octet-stream")], body)
    result = export("httpie", ex)
    assert list(result.files.values()) == [body] and "< ./" in result.text
    _, _, sent_body = offline(result, tmp_path)
    assert sent_body.startswith(body)


@needs_httpie
def test_headers_httpie_would_add_are_switched_off(tmp_path: Path) -> None:
    start, got, _ = offline(export("httpie", make_exchange(headers=[(b"Host", b"h")])), tmp_path)
    assert start == "GET / HTTP/1.1" and got == [("Host", "h")]


def test_dot_segments_get_path_as_is() -> None:
    assert "--path-as-is" in export("httpie", make_exchange(target=b"/a/../b")).text


def test_header_httpie_cannot_send_gives_a_clear_error() -> None:
    ex = make_exchange(headers=[(b"Host", b"h"), (b"X-Bin", b"\xff\xfe")])
    with pytest.raises(ExportError, match="X-Bin.*use the curl format"):
        export("httpie", ex)


def test_method_that_is_not_letters_gives_a_clear_error() -> None:
    with pytest.raises(ExportError, match="letters only"):
        export("httpie", make_exchange("M-SEARCH"))


def test_redact_hides_credentials() -> None:
    ex = make_exchange(headers=[(b"Host", b"h"), (b"Authorization", b"Bearer tok_123"), (b"X-Slack-Signature", b"v0=9")])
    text = export("httpie", ex, redact=True).text
    assert "tok_123" not in text and "v0=9" not in text and "'Authorization:Bearer <redacted>'" in text


@needs_httpie
def test_header_names_that_look_like_options_stay_header_items(tmp_path: Path) -> None:
    """``-o: x`` is a header a public client may send (the relay takes any token); as the item
    ``-o:x`` HTTPie read it as ``-o :x`` and created the file ``:x``; ``-a:secret`` would be
    credentials sent along."""
    headers = [(b"Host", b"pub.example"), (b"-o", b"owned.txt"), (b"-a", b"user:pw"), (b"--verbose", b"x"),
               (b"-v", b"1")]
    ex = make_exchange("GET", b"/x", headers, b"")
    start, got, _ = offline(export("httpie", ex, base_url="http://127.0.0.1:1"), tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert start == "GET /x HTTP/1.1"
    assert Counter(got) == Counter((n.decode(), v.decode()) for n, v in headers)


@needs_httpie
def test_tabs_in_header_and_body_never_print_raw_and_are_sent(tmp_path: Path) -> None:
    """A tab was written raw inside the quotes: copied from a terminal it becomes spaces."""
    from devtunnel.values.terminal import escape

    body = b'{"k": "a\tb \'q\'"}\n'
    headers = [(b"Host", b"h"), (b"X-Tab", b"x\ty"), (b"Content-Type", b"application/json")]
    result = export("httpie", make_exchange("POST", b"/t", headers, body), base_url="http://127.0.0.1:1")
    assert escape(result.text, keep="\n", double_backslash=False) == result.text, result.text
    _, got, sent_body = offline(result, tmp_path)
    assert ("X-Tab", "x\ty") in got
    assert sent_body.rstrip(b"\n") == body.rstrip(b"\n")


def test_a_request_captured_as_http_1_0_says_httpie_sends_it_as_1_1() -> None:
    """curl sends it with --http1.0, pytest and raw keep the version: HTTPie cannot, and said nothing."""
    from dataclasses import replace

    ex = make_exchange("GET", b"/old", [(b"Host", b"h")])
    old = replace(ex, request=replace(ex.request, http_version="1.0"))
    assert export("httpie", old).text.startswith("# captured as HTTP/1.0; HTTPie sends HTTP/1.1 (the curl format keeps the version)\nhttp ")
    assert export("httpie", ex).text.startswith("http ")
    assert "--http1.0" in export("curl", old).text


@needs_httpie
def test_a_public_url_under_localhost_is_reached_on_loopback_with_its_host_kept(tmp_path: Path) -> None:
    # The embedded relay's public URLs are http://NAME.localhost:PORT: curl reaches them, but
    # HTTPie asks the system resolver, which often knows no *.localhost ("Name or service not
    # known"). The command goes to 127.0.0.1 with Host naming the tunnel, as the relay routes by it.
    from tests.kit.servers import Received, Reply, http_server

    seen: list[Received] = []

    def answer(request: Received) -> Reply:
        seen.append(request)
        return Reply(200, body=b"ok")

    with http_server(answer) as server:
        port = server.url.rsplit(":", 1)[1]
        host = f"hooks.localhost:{port}"
        ex = make_exchange("POST", b"/webhooks/github", [(b"Host", host.encode()), (b"Content-Length", b"2")], b"{}",
                           target_url="http://127.0.0.1:9")
        result = export("httpie", ex)
        assert f"http://127.0.0.1:{port}/webhooks/github" in result.text and f"Host:{host}" in result.text
        assert HTTP is not None
        proc = run_shell(Export(HTTP + result.text[len("http"):], result.files), tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert [(r.path, r.header("Host"), r.body) for r in seen] == [("/webhooks/github", host, b"{}")]


def test_a_version_an_older_capture_holds_as_a_relay_sent_it_is_escaped_in_the_comment() -> None:
    # A capture made before the agent refused such a version: its ESC reached the terminal.
    from dataclasses import replace

    ex = make_exchange("GET", b"/old", [(b"Host", b"h")])
    forged = replace(ex, request=replace(ex.request, http_version="1.1\x1b]0;pwned\x07"))
    text = export("httpie", forged).text
    assert text.startswith("# captured as HTTP/1.1\\x1b]0;pwned\\x07; HTTPie sends HTTP/1.1"), text
    assert "\x1b" not in text and "\x07" not in text
