"""The provider's supervisor (``ViaRunner``) with a real provider program: what it says when no URL comes.

The CLI's path (``devtunnel http --via``) is in ``test_via_command.py``; here the runner is given a
short ``no_url_after`` so a provider that never prints its URL is seen in a second, not thirty.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

from devtunnel.agent.via_runner import ViaRunner
from devtunnel.via import parse_via
from tests.helpers import async_wait_for, free_port, process_alive

pytestmark = pytest.mark.timeout(60)


class Pins:
    """The embedded relay's ``pin``/``unpin``, without the relay: a port number handed out."""

    def __init__(self) -> None:
        self.pinned: set[int] = set()

    async def pin(self, name: str, port: int = 0) -> int:
        port = port or free_port()
        self.pinned.add(port)
        return port

    def unpin(self, port: int) -> None:
        self.pinned.discard(port)


def cloudflared(tmp_path: Path, output: str) -> dict[str, str]:
    """An environment whose PATH finds a cloudflared that prints ``output`` on stderr and keeps running."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "cloudflared"
    program.write_text(f"#!{sys.executable}\nimport sys, time\nsys.stderr.write({output!r}); sys.stderr.flush()\n"
                       "time.sleep(600)\n")
    program.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")


async def test_a_provider_that_prints_no_url_it_knows_is_reported_with_its_last_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A URL in a form devtunnel does not read (another domain): without a word, the tunnel
    # would stay "starting" for good and a headless devtunnel print nothing at all.
    env = cloudflared(tmp_path, "INF Requesting new quick Tunnel on trycloudflare.com...\n"
                                "INF |  https://seasonal-deck.cfargotunnel.example  |\n")
    pins = Pins()
    runner = ViaRunner(parse_via("cloudflared"), "shop", pins, on_change=lambda: None, env=env, no_url_after=0.5)
    with caplog.at_level(logging.WARNING, logger="devtunnel.agent"):
        await runner.start()
        try:
            status = await async_wait_for(lambda: runner.status if runner.status.message else None, timeout=20,
                                          what="the runner to say no URL came")
            assert status.state == "starting" and status.url is None
            assert status.message == ("no public URL after 0.5 s "
                                      "(last line: INF |  https://seasonal-deck.cfargotunnel.example  |)")
            pid = status.pid
            assert pid is not None and process_alive(pid), "it keeps running: the URL may still come"
        finally:
            await runner.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "tunnel shop: cloudflared printed no public URL after 0.5 s "
        "(last line: INF |  https://seasonal-deck.cfargotunnel.example  |)"]
    assert not process_alive(pid) and not pins.pinned

