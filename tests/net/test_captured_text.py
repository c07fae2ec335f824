"""Captured bytes read by one rule wherever they are shown: UTF-8, any other byte ``\\xNN`` on a
terminal (``values.terminal.read_utf8``) and U+FFFD in JSON (``values.terminal.read_utf8_json``).

A request goes through a real relay and agent; ``show`` runs as the installed console script, the
agent API answers over HTTP on loopback, and HAR is the API's export. The target and the header
values read as latin-1 in some of these (``GrÃ¶Ãe``), and the API and HAR disagreed on a header
value holding a byte that is not UTF-8.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx

from devtunnel.api.app import serve_api
from devtunnel.capture.model import new_id
from devtunnel.values.http1 import RELAY_SET
from tests.net.tunnel_fixtures import local_http, raw_request, relay_and_agent

DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")

GROSSE = "Größe".encode()
TARGET = b"/" + GROSSE + b"/\xf6?q=" + GROSSE
"""A UTF-8 path segment, a stray latin-1 byte (not UTF-8) and a UTF-8 query. The relay refuses
such a target (httptools takes visible ASCII only), so it reaches the store another way: a
database written elsewhere, or an import."""


STRAY = b"/\xf6"
"""A path of one byte that is not UTF-8: latin-1 read it as ``/ö``."""


def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "LINES": "40"}
    return subprocess.run([DEVTUNNEL, *args, "--db", str(db)], capture_output=True, text=True,
                          errors="surrogateescape", env=env, timeout=60)


@dataclass
class Captured:
    """What the agent API says of the exchanges, and the database that holds them."""

    headers: dict[str, Any]
    """The exchange sent through the tunnel with hostile header values, as the API's JSON."""
    hostile: dict[str, Any]
    """The exchange with ``TARGET``, as the API's JSON."""
    listed: list[dict[str, Any]]
    """The list of every exchange (``/api/requests/http``), newest first."""
    har: dict[str, Any]
    """The HAR of both, by ``id``."""
    db: Path
    stray_id: str
    """The id of the exchange with ``STRAY``."""


async def _capture(tmp_path: Path) -> Captured:
    """Send one request with two hostile header values through a relay and an agent, store a
    copy of it with ``TARGET`` and one with ``STRAY``, and read all three back from the agent API."""
    with local_http() as (port, _state):
        async with relay_and_agent(tmp_path) as h:
            await h.start(f"http://127.0.0.1:{port}")
            head = (b"GET /headers HTTP/1.1\r\nHost: " + h.host("app").encode() + b"\r\n"
                    b"X-Utf8: " + GROSSE + b"\r\nX-Stray: Gr\xf6e\r\nConnection: close\r\n\r\n")
            answer = await raw_request(h.relay.port, head)
            assert answer.startswith(b"HTTP/1.1 "), answer
            (ex,) = await h.exchanges(1)
            fields = ex.request.headers.fields
            assert (b"X-Utf8", GROSSE) in fields and (b"X-Stray", b"Gr\xf6e") in fields, fields
            hostile, stray = (replace(ex, id=new_id(), started_at=ex.started_at + i,
                                      request=replace(ex.request, target=target))
                              for i, target in ((1, TARGET), (2, STRAY)))
            h.store.put_many([hostile, stray])
            server, api_port = await serve_api(h.service, port=0)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as client:
                    docs = [await client.get(f"/api/requests/http/{e.id}") for e in (ex, hostile)]
                    docs.append(await client.get("/api/requests/http"))
                    docs += [await client.get(f"/api/requests/http/{e.id}/export", params={"format": "har"})
                             for e in (ex, hostile)]
            finally:
                await server.stop()
    for resp in docs:
        assert resp.status_code == 200, resp.text
    # Strict UTF-8: every document encodes, whatever bytes were captured.
    one, two, listed, *hars = (json.loads(resp.content.decode("utf-8")) for resp in docs)
    har = {e.id: json.loads(doc["text"])["log"]["entries"][0] for e, doc in zip((ex, hostile), hars)}
    return Captured(one, two, listed["requests"], har, tmp_path / "captures.db", stray.id)


async def test_header_values_read_alike_in_the_api_har_and_show(tmp_path: Path) -> None:
    """A header value of UTF-8 bytes reads as UTF-8 everywhere; one with a byte that is not
    UTF-8 read as latin-1 in the API (``Gröe``) but with U+FFFD in HAR: now both say U+FFFD,
    and ``show`` says ``\\xf6``."""
    c = await _capture(tmp_path)
    headers = c.headers["request"]["headers"]
    assert headers["X-Utf8"] == ["Größe"] and headers["X-Stray"] == ["Gr\ufffde"], headers
    har_headers = {h["name"]: h["value"] for h in c.har[c.headers["id"]]["request"]["headers"]}
    # (An entry's URL is the public one: the relay's X-Forwarded-*, Forwarded and X-Real-IP are
    # not the client's request.)
    client = {n: v for n, v in headers.items()
              if not n.startswith("X-Forwarded-") and n.lower().encode() not in RELAY_SET}
    assert {n: [v] for n, v in har_headers.items()} == client

    proc = await asyncio.to_thread(_cli, c.db, "show", c.headers["id"])
    assert proc.returncode == 0, proc.stderr
    assert "X-Utf8: Größe\n" in proc.stdout and "X-Stray: Gr\\xf6e\n" in proc.stdout, proc.stdout


async def test_a_target_reads_as_utf8_in_show_the_api_and_har(tmp_path: Path) -> None:
    """The whole target read as latin-1 once one byte of it was not UTF-8: ``show`` printed
    ``/GrÃ¶Ãe/\\xf6?q=GrÃ¶Ãe`` and the API and HAR said ``/GrÃ¶Ãe/ö?q=GrÃ¶Ãe``."""
    c = await _capture(tmp_path)
    assert c.hostile["request"]["uri"] == "/Größe/\ufffd?q=Größe"
    assert [r["request"]["uri"] for r in c.listed] == ["/\ufffd", "/Größe/\ufffd?q=Größe", "/headers"]
    url = c.har[c.hostile["id"]]["request"]["url"]
    assert url.endswith("/Größe/\ufffd?q=Größe"), url

    proc = await asyncio.to_thread(_cli, c.db, "show", c.hostile["id"])
    assert proc.returncode == 0, proc.stderr
    assert "GET /Größe/\\xf6?q=Größe HTTP/1.1\n" in proc.stdout, proc.stdout
    assert "Ã" not in proc.stdout
    listed = await asyncio.to_thread(_cli, c.db, "requests", "--json")
    assert [r["path"] for r in json.loads(listed.stdout)] == ["/headers", "/Größe/\ufffd?q=Größe", "/\ufffd"]
    table = await asyncio.to_thread(_cli, c.db, "requests")  # the list reads the target as show does
    assert table.returncode == 0, table.stderr
    assert [line.rsplit(" ", 1)[-1] for line in table.stdout.splitlines()[1:]] == [
        "/headers", "/Größe/\\xf6?q=Größe", "/\\xf6"], table.stdout


async def test_the_path_filter_reads_the_target_as_the_json_does(tmp_path: Path) -> None:
    """``path:`` matches the path as the JSON reads it. With latin-1 one stray byte made the
    whole path mojibake, so ``path:/Größe`` missed ``/Größe/\\xf6``, and ``path:/ö`` took the
    byte ``\\xf6`` for the letter ``ö`` (UTF-8 ``\\xc3\\xb6``)."""
    c = await _capture(tmp_path)

    def ids(expr: str) -> list[str]:
        proc = _cli(c.db, "requests", "--json", "--filter", expr)
        assert proc.returncode == 0, proc.stderr
        return [r["id"] for r in json.loads(proc.stdout)]

    hostile, stray = c.hostile["id"], c.stray_id
    assert await asyncio.to_thread(ids, "path:/Größe/") == [hostile]
    assert await asyncio.to_thread(ids, "path:/ö") == []
    assert await asyncio.to_thread(ids, "Größe") == [hostile]  # a bare word: the URL holds it
    assert await asyncio.to_thread(ids, "path:/\ufffd") == [stray]


C1_AND_BIDI = "\u009b2J \u009d52;c;cHduZWQ=\u009c \u202eevil\u202c"
"""A C1 CSI (clear the screen), an OSC 52 (write the clipboard) in C1 form and a bidi override:
characters past ASCII that JSON does not escape unless asked to."""


async def test_every_api_answer_quoting_captured_text_is_ascii(tmp_path: Path) -> None:
    """The exchange, the list, each export and the diff quote captured header values and bodies;
    sent in UTF-8, ``curl localhost:4040/api/requests/http`` put a C1 control or a bidi override
    from anyone on the internet on the developer's terminal (error answers were ASCII already).
    Escaped, a client still reads the very values."""
    with local_http() as (port, _state):
        async with relay_and_agent(tmp_path) as h:
            await h.start(f"http://127.0.0.1:{port}")
            async with httpx.AsyncClient(trust_env=False, timeout=10) as public:
                for body in ("first " + C1_AND_BIDI, "second " + C1_AND_BIDI):
                    answer = await public.post(f"http://127.0.0.1:{h.relay.port}/echo", content=body.encode(),
                                               headers={"Host": h.host("app"), "X-C1": C1_AND_BIDI.encode(),
                                                        "Content-Type": "text/plain"})
                    assert answer.status_code == 200, answer.text
            first, second = sorted(await h.exchanges(2), key=lambda e: e.started_at)
            server, api_port = await serve_api(h.service, port=0)
            try:
                async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=10) as client:
                    answers = {
                        "one": await client.get(f"/api/requests/http/{first.id}"),
                        "list": await client.get("/api/requests/http"),
                        "diff": await client.get("/api/diff", params={"a": first.id, "b": second.id}),
                        **{fmt: await client.get(f"/api/requests/http/{first.id}/export", params={"format": fmt})
                           for fmt in ("curl", "har", "raw")},
                        "replay": await client.post(f"/api/requests/http/{first.id}/replay", json={}),
                    }
            finally:
                await server.stop()
    for name, resp in answers.items():
        assert resp.status_code in (200, 201), (name, resp.text)
        assert resp.content.isascii(), (name, [ch for ch in resp.content.decode() if not ch.isascii()][:5])
    one = answers["one"].json()
    assert one["request"]["headers"]["X-C1"] == [C1_AND_BIDI]
    assert base64.b64decode(one["request"]["raw"]).endswith(("first " + C1_AND_BIDI).encode())
    assert [r["request"]["headers"]["X-C1"] for r in answers["list"].json()["requests"]] == [[C1_AND_BIDI]] * 2
    assert not answers["diff"].json()["identical"]
    assert answers["replay"].json()["request"]["headers"]["X-C1"] == [C1_AND_BIDI]
