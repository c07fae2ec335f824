"""A head the agent refuses is said once escaped everywhere: the 400 text, the record, ``devtunnel show``.

A scripted relay (a real websockets server speaking the tunnel protocol, as a hostile or older
relay would) sends a target holding an ESC and a backslash. The refusal's message quoted it with
repr(): the record held ``\\x1b`` as text and ``devtunnel show`` escaped it again (``\\\\x1b``).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

from websockets.asyncio.server import ServerConnection, serve

from devtunnel.agent.config import TunnelConfig
from devtunnel.agent.tunnel import AgentTunnel
from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.protocol.events import DataReceived
from devtunnel.protocol.relay_side import RelayConnection
from tests.helpers import async_wait_for
from tests.net.head_fixtures import recording_service
from tests.net.tunnel_fixtures import read_hello
from tests.test_cli_captures import DEVTUNNEL

TARGET = b"/a\x1b[2J\\b c"
SHOWN = "the request target '/a\\x1b[2J\\\\b c' holds a space or a control character"


async def test_a_refused_target_is_escaped_once_in_the_answer_and_in_devtunnel_show(tmp_path: Path) -> None:
    body = bytearray()
    answered = asyncio.Event()
    records: list[Exchange] = []

    with recording_service(b"victim") as (port, victim):

        async def relay(ws: ServerConnection) -> None:
            conn = RelayConnection()
            await read_hello(ws, conn)
            conn.send_welcome("victim", "http://victim.localhost", {})
            conn.open_request(b"GET", TARGET, b"1.1", ((b"Host", b"victim.localhost"),), end_stream=True)
            await ws.send(conn.data_to_send())
            async for message in ws:
                for event in conn.receive_data(message):  # type: ignore[arg-type]
                    if isinstance(event, DataReceived):
                        body.extend(event.data)
                        if event.end_stream:
                            answered.set()
                if conn.wants_to_send:
                    await ws.send(conn.data_to_send())

        async with serve(relay, "127.0.0.1", 0) as server:
            tunnel = AgentTunnel(
                TunnelConfig(target=str(port), name="victim"),
                relay_url=f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}/_devtunnel/connect",
                sink=lambda ex, final: records.append(ex) if final else None,
                on_change=lambda info: None,
            )
            await tunnel.start()
            try:
                await asyncio.wait_for(answered.wait(), 20)
                await async_wait_for(lambda: records, what="the exchange to be recorded")
            finally:
                await tunnel.stop()
        assert victim.snapshot()[0] == 0

    # The client's terminal shows the text as it is: escaped once, no raw ESC.
    assert bytes(body).decode() == f"devtunnel refused to forward this request: {SHOWN}\n"
    # The record keeps the message as it came; the CLI escapes it once.
    assert records[0].error_message == "devtunnel refused to forward this request: the request target " \
        "'/a\x1b[2J\\b c' holds a space or a control character"
    db = tmp_path / "c.db"
    with Store(db) as store:
        store.put(records[0])
    shown = subprocess.run([DEVTUNNEL, "--db", str(db), "show", records[0].id], capture_output=True, text=True,
                           env={**os.environ, "COLUMNS": "200"}, timeout=60)
    assert shown.returncode == 0, shown.stderr
    error = next(line for line in shown.stdout.splitlines() if line.startswith("error "))
    assert error == f"error     bad_request: devtunnel refused to forward this request: {SHOWN}", error
    assert "\x1b" not in shown.stdout
