"""Commands sent to the public URL leave out what the relay added: its rule, undone exactly."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.export import export
from devtunnel.export.base import without_relay_fields
from devtunnel.relay.headers import forward_request_headers
from tests.export.support import run_shell
from tests.kit.exchanges import make_exchange
from tests.net.tunnel_fixtures import local_http, parse_response, raw_request, relay_and_agent

NAMES = [b"Host", b"Accept", b"X-Forwarded-For", b"x-forwarded-for", b"X-Forwarded-Proto", b"X-Forwarded-Host",
         b"Forwarded", b"X-Real-IP", b"x-forwarded-port", b"X-A"]
RELAY_SET = (b"x-forwarded-proto", b"x-forwarded-host", b"x-forwarded-port", b"forwarded", b"x-real-ip")
VALUES = st.lists(st.sampled_from([b"10.0.0.1", b"::1", b",", b", ", b" ", b"a", b"for=1.2.3.4"]), max_size=4).map(b"".join)


@settings(max_examples=300, deadline=None)
@given(
    fields=st.lists(st.tuples(st.sampled_from(NAMES), VALUES), max_size=8),
    ip=st.sampled_from([b"127.0.0.1", b"203.0.113.9", b"2001:db8::1"]),
    host=st.sampled_from([b"app.localhost:8080", b""]),
    lowered=st.booleans(),
)
def test_what_the_relay_adds_is_taken_off_and_nothing_else(fields: list[tuple[bytes, bytes]], ip: bytes, host: bytes,
                                                           lowered: bool) -> None:
    """The relay's rule lives in ``relay.headers``; the exporters undo it in ``export.base``.
    Whatever the client sent, undoing what the relay forwarded gives the client's headers back,
    less the X-Forwarded-Proto, -Host and -Port, Forwarded and X-Real-IP the relay takes off (and
    sets its own X-Forwarded-Proto and -Host)."""
    lower = [(n.lower(), v) for n, v in fields] if lowered else None
    forwarded = forward_request_headers(fields, host, ip, b"https", lowered=lower)
    client = [(n, v) for n, v in fields if n.lower() not in RELAY_SET]
    assert without_relay_fields(forwarded) == client


CAPTURED = make_exchange("POST", b"/hook", [
    (b"Host", b"app.example"), (b"X-Forwarded-For", b"10.9.9.9, 127.0.0.1"), (b"X-Real-IP", b"10.9.9.9"),
    (b"Forwarded", b"for=10.9.9.9"), (b"Content-Length", b"2"), (b"X-Forwarded-Proto", b"http"),
    (b"X-Forwarded-Host", b"app.example"),
], b"{}", target_url="http://127.0.0.1:8080")


@pytest.mark.parametrize("fmt", ["curl", "httpie"])
def test_a_command_to_the_public_url_leaves_the_relays_headers_out_and_to_the_service_keeps_them(fmt: str) -> None:
    public = export(fmt, CAPTURED).text
    assert "10.9.9.9, 127.0.0.1" not in public and "X-Forwarded-Proto" not in public and "X-Forwarded-Host" not in public
    assert "X-Forwarded-For: 10.9.9.9'" in public or "X-Forwarded-For:10.9.9.9 " in public
    assert "X-Real-IP" not in public and "Forwarded:" not in public  # the relay takes them off
    for options in ({"local": True}, {"base_url": "http://127.0.0.1:9000"}):
        assert "10.9.9.9, 127.0.0.1" in export(fmt, CAPTURED, **options).text  # as the service got it


def test_a_har_entry_has_the_headers_of_a_request_to_its_url() -> None:
    import json

    def headers(**options: object) -> list[tuple[str, str]]:
        entry = json.loads(export("har", CAPTURED, **options).text)["log"]["entries"][0]["request"]
        return [(h["name"], h["value"]) for h in entry["headers"]]

    assert headers() == [("Host", "app.example"), ("X-Forwarded-For", "10.9.9.9"), ("Content-Length", "2")]
    assert ("X-Forwarded-For", "10.9.9.9, 127.0.0.1") in headers(local=True)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl binary")
async def test_the_curl_command_of_a_capture_run_against_the_public_url_arrives_with_the_same_headers(tmp_path: Path) -> None:
    """The exported command sent the relay's X-Forwarded-For entry along, and the relay added
    another: the service got ``10.9.9.9, 127.0.0.1, 127.0.0.1``. A client's X-Real-IP and
    Forwarded never reach the service: the command sends none."""
    with local_http() as (port, _):
        async with relay_and_agent(tmp_path) as h:
            await h.start(str(port), name="app")
            sent = (b"GET /echo HTTP/1.1\r\nHost: " + h.host("app").encode() + b"\r\nX-Forwarded-For: 10.9.9.9\r\n"
                    b"X-Real-IP: 10.9.9.9\r\nForwarded: for=10.9.9.9\r\nConnection: close\r\n\r\n")
            status, _, _ = parse_response(await raw_request(h.relay.port, sent))
            assert status == 200
            (first,) = await h.exchanges(1)
            command = export("curl", first)
            done = await asyncio.to_thread(run_shell, command, tmp_path)
            assert done.returncode == 0, done.stderr
            _, again = await h.exchanges(2)
    assert first.request.headers.get_all("x-forwarded-for") == ["10.9.9.9, 127.0.0.1"]
    assert first.request.headers.get_all("x-real-ip") == []  # the client's was taken off by the relay
    assert again.request.headers.fields == first.request.headers.fields
