"""The curl exporter, proven by running its commands: real curl, real shell, a byte-recording server."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from devtunnel.export import Export, export
from devtunnel.values.terminal import escape
from tests.export.rawserver import RawServer
from tests.export.support import run_shell
from tests.kit.exchanges import make_exchange

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")

CANARY = Path(tempfile.gettempdir()) / f"devtunnel-curl-canary-{os.getpid()}"
"""A file that any injected command below would create. It must never appear."""

# Values built to break naive quoting: command substitution, backticks, quotes, variables.
HOSTILE = [
    f"'$(touch {CANARY})'",
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"\"; touch {CANARY}; echo \"",
    f"'; touch {CANARY}; '",
    "$HOME ${HOME} %s %n %%",
    "\\' \\\" \\\\ \\n",
]

TCHARS = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
FRAMING = {b"host", b"content-length", b"transfer-encoding", b"expect"}

token = st.binary(min_size=1, max_size=12).map(lambda b: bytes(TCHARS[x % len(TCHARS)] for x in b))
methods = st.one_of(st.sampled_from(["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]), token.map(bytes.decode))
# Field-value bytes: visible ASCII and obs-text, with inner spaces and tabs (no CR, LF or NUL).
value_byte = st.one_of(st.integers(0x21, 0x7E), st.integers(0x80, 0xFF)).map(lambda i: bytes([i]))
inner = st.lists(st.one_of(value_byte, value_byte, st.sampled_from([b" ", b"\t"])), max_size=30).map(b"".join)
header_value = st.one_of(
    st.builds(lambda a, mid, z: a + mid + z if mid else a, value_byte, inner, value_byte),
    st.just(b""),
    st.sampled_from(HOSTILE).map(str.encode),
)
header_name = token.filter(lambda n: n.lower() not in FRAMING)
PLAIN = b"abcXYZ019-._~!$&'()*+,;=:@%?/"
targets = st.one_of(
    st.lists(st.sampled_from(PLAIN), max_size=30),  # what curl keeps as is in a URL
    st.lists(st.integers(0x21, 0x7E), max_size=30),  # adds quotes, globs, #, dot segments by chance
    st.lists(st.integers(0x21, 0xFF).filter(lambda i: i != 0x7F), max_size=30),  # adds non-UTF-8
).map(lambda xs: b"/" + bytes(xs))
bodies = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(HOSTILE).map(str.encode),
    st.text(max_size=200).map(lambda s: s.encode("utf-8")),
    st.just(b"line one\nline two\r\n\x00after NUL\n\n"),
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, object]:
    headers: list[tuple[bytes, bytes]] = []
    if draw(st.booleans()):
        headers.append((b"Host", draw(header_value.filter(bool))))
    headers += draw(st.lists(st.tuples(header_name, header_value), max_size=8))
    body = draw(bodies)
    if body or draw(st.booleans()):
        start = 1 if headers and headers[0][0] == b"Host" else 0  # curl always sends Host first
        at = draw(st.integers(start, len(headers)))
        headers.insert(at, (b"Content-Length", str(len(body)).encode()))
    return {"method": draw(methods), "target": draw(targets), "headers": headers, "body": body}


def shows_as_is(text: str) -> bool:
    """True when the terminal rule leaves ``text`` as it is: no tab or other control character
    (a raw tab copied from the screen becomes spaces), only the newlines between lines."""
    return escape(text, keep="\n", double_backslash=False) == text


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=requests())
def test_curl_command_reproduces_method_target_headers_and_body_exactly(req: dict, tmp_path: Path) -> None:
    exchange = make_exchange(**req)  # type: ignore[arg-type]
    with RawServer() as server:
        result = export("curl", exchange, base_url=server.url)
        assert shows_as_is(result.text), result.text
        with tempfile.TemporaryDirectory(dir=tmp_path) as workdir:
            proc = run_shell(result, Path(workdir))
        assert proc.returncode == 0, (result.text, proc.stderr)
        assert len(server.received) == 1
        got = server.received[0]
    assert not CANARY.exists(), "a captured value ran a command"
    assert got.method.decode() == req["method"]
    assert got.target == req["target"]
    # Every header in order, but the framing is curl's own: it counts the body it sends.
    expected = [(n, v) for n, v in req["headers"] if n.lower() != b"content-length"]  # type: ignore[attr-defined]
    if len(expected) != len(req["headers"]) and (req["body"] or req["method"] != "HEAD"):  # type: ignore[arg-type]
        expected.append((b"Content-Length", str(len(req["body"])).encode()))  # type: ignore[arg-type]
    assert got.headers == expected, result.text
    assert "Content-Length" not in result.text
    assert got.body == req["body"]


def test_request_without_host_accept_or_user_agent_gets_none_from_curl(tmp_path: Path) -> None:
    exchange = make_exchange(method="GET", target=b"/bare", headers=[(b"X-Only", b"1")])
    with RawServer() as server:
        proc = run_shell(export("curl", exchange, base_url=server.url), tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert server.received[0].headers == [(b"X-Only", b"1")]


def test_large_body_goes_through_a_side_file_and_arrives_intact(tmp_path: Path) -> None:
    body = (b'{"k": "' + b"x" * 100_000 + b'"}\n')
    exchange = make_exchange(method="POST", headers=[(b"Host", b"h"), (b"Content-Length", str(len(body)).encode())], body=body)
    with RawServer() as server:
        result = export("curl", exchange, base_url=server.url)
        assert len(result.text) < 1000 and list(result.files.values()) == [body]
        proc = run_shell(result, tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert server.received[0].body == body


def test_chunked_request_is_sent_whole_with_the_length_curl_counts(tmp_path: Path) -> None:
    body = b"part one, part two"
    headers = [(b"Host", b"h"), (b"Transfer-Encoding", b"chunked"), (b"Content-Type", b"text/plain")]
    exchange = make_exchange(method="POST", target=b"/up", headers=headers, body=body)
    with RawServer() as server:
        result = export("curl", exchange, base_url=server.url)
        assert "Transfer-Encoding" not in result.text
        proc = run_shell(result, tmp_path)
        assert proc.returncode == 0, proc.stderr
    got = server.received[0]
    assert not got.chunked and got.body == body
    assert got.headers == [(b"Host", b"h"), (b"Content-Type", b"text/plain"), (b"Content-Length", b"18")]


def test_edited_json_body_is_sent_whole_with_its_new_length(tmp_path: Path) -> None:
    """A person changes 2000 to 20 in the exported command: curl must not wait for bytes that never come."""
    body = b'{"amount": 2000, "currency": "eur"}'
    headers = [(b"Host", b"pay.example"), (b"Content-Type", b"application/json"), (b"Content-Length", str(len(body)).encode())]
    exchange = make_exchange(method="POST", target=b"/charges", headers=headers, body=body)
    with RawServer() as server:
        result = export("curl", exchange, base_url=server.url)
        assert "Content-Length" not in result.text and "2000" in result.text
        edited = Export(result.text.replace("2000", "20"), result.files)
        proc = run_shell(edited, tmp_path, timeout=10)
        assert proc.returncode == 0, proc.stderr
    got = server.received[0]
    assert got.body == b'{"amount": 20, "currency": "eur"}'
    assert (b"Content-Length", str(len(got.body)).encode()) in got.headers


def test_empty_body_with_content_length_zero_keeps_it(tmp_path: Path) -> None:
    headers = [(b"Host", b"h"), (b"Content-Length", b"0")]
    exchange = make_exchange(method="POST", target=b"/ping", headers=headers)
    with RawServer() as server:
        proc = run_shell(export("curl", exchange, base_url=server.url), tmp_path)
        assert proc.returncode == 0, proc.stderr
    got = server.received[0]
    assert (got.method, got.headers, got.body) == (b"POST", headers, b"")


def test_dot_segments_and_glob_characters_in_target_are_sent_unchanged(tmp_path: Path) -> None:
    target = b"/a/../b/./{x}[1-2]?q=a b&r=%zz#frag"
    exchange = make_exchange(target=target)
    with RawServer() as server:
        proc = run_shell(export("curl", exchange, base_url=server.url + "/"), tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert server.received[0].target == target


def test_base_url_path_prefix_is_put_before_the_target(tmp_path: Path) -> None:
    exchange = make_exchange(target=b"/hook?x=1")
    with RawServer() as server:
        proc = run_shell(export("curl", exchange, base_url=server.url + "/prefix/"), tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert server.received[0].target == b"/prefix/hook?x=1"


def test_several_exchanges_run_as_several_commands(tmp_path: Path) -> None:
    exchanges = [
        make_exchange(method="POST", target=b"/one", headers=[(b"Host", b"h")], body=b"\x00\x01"),
        make_exchange(method="DELETE", target=b"/two"),
    ]
    with RawServer() as server:
        proc = run_shell(export("curl", exchanges, base_url=server.url), tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert [(r.method, r.target, r.body) for r in server.received] == [
        (b"POST", b"/one", b"\x00\x01"),
        (b"DELETE", b"/two", b""),
    ]


# What the terminal rule (values.terminal) calls hidden although Unicode does not call it a control:
# line and paragraph separators and the letters that draw as nothing.
HIDDEN = ["\u2028", "\u2029", "\u3164", "\u115f", "\u1160", "\uffa0"]


@pytest.mark.parametrize("hidden", HIDDEN)
def test_characters_a_terminal_hides_never_print_inline_and_still_arrive(tmp_path: Path, hidden: str) -> None:
    """``X-Token: ㅤ`` printed inline looks like an empty value: the exported text may hold only what
    ``values.terminal`` shows as itself, in the header, the target and the body alike."""
    value = f"a{hidden}b".encode()
    target = b"/p?" + value
    exchange = make_exchange(method="POST", target=target,
                             headers=[(b"Host", b"h"), (b"X-Token", value), (b"Content-Length", b"5")], body=value)
    with RawServer() as server:
        result = export("curl", exchange, base_url=server.url)
        assert shows_as_is(result.text), result.text  # nothing a terminal hides or acts on
        proc = run_shell(result, tmp_path)
        assert proc.returncode == 0, proc.stderr
    got = server.received[0]
    assert (got.target, got.body) == (target, value)
    assert (b"X-Token", value) in got.headers


# What the terminal rule escapes: a tab, CR, other C0 controls, DEL, C1 (as UTF-8), a bidi override.
CONTROLS = ["\t", "\r", "\x01", "\x1b", "\x7f", "\u009b", "\u202e"]


@pytest.mark.parametrize("control", CONTROLS, ids=repr)
def test_controls_in_header_target_and_body_never_print_raw_and_arrive_byte_for_byte(tmp_path: Path, control: str) -> None:
    """A tab was written raw inside the quotes (copied from a terminal it turns into spaces, pasted
    into bash it asks for completion): every control shows escaped, and bash sends the exact bytes."""
    value = f"a{control}b 'q' \\ $x".encode()
    body = b'{"k": "' + value + b'"}\n'
    if control == "\r":
        value = value.replace(b"\r", b"\t")  # no CR in a head: the relay refuses it, curl cannot send it
    target = b"/p?v=" + value
    headers = [(b"Host", b"h"), (b"X-Ctl", value), (b"X-Tab", b"x\ty\tz"), (b"Content-Length", str(len(body)).encode())]
    exchange = make_exchange(method="PUT", target=target, headers=headers, body=body)
    with RawServer() as server:
        result = export("curl", exchange, base_url=server.url)
        assert shows_as_is(result.text), result.text
        proc = run_shell(result, tmp_path)
        assert proc.returncode == 0, proc.stderr
    got = server.received[0]
    assert (got.method, got.target, got.body) == (b"PUT", target, body)
    assert got.headers[:3] == [(b"Host", b"h"), (b"X-Ctl", value), (b"X-Tab", b"x\ty\tz")], result.text
    assert not CANARY.exists()
