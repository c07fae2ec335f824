"""The provider's supervisor (``ViaRunner``) with a real provider program: what it says when no URL comes.

The CLI's path (``devtunnel http --via``) is in ``test_via_command.py``; here the runner is given a
short ``no_url_after`` so a provider that never prints its URL is seen in a second, not thirty.
"""

from __future__ import annotations

import contextlib
import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.agent.via_runner import FIXED_PORT_TRIES, ViaRunner
from devtunnel.via import parse_via
from tests.helpers import async_wait_for, free_port, process_alive, wait_for
from tests.net.test_via_command import _sshd_program

pytestmark = pytest.mark.timeout(60)


class Pins:
    """The embedded relay's ``pin``/``unpin``, without the relay: a port number handed out."""

    def __init__(self) -> None:
        self.pinned: set[int] = set()
        self.forwarded: set[int] = set()

    async def pin(self, name: str, port: int = 0, *, forwarded: bool = False) -> int:
        port = port or free_port()
        self.pinned.add(port)
        if forwarded:
            self.forwarded.add(port)
        return port

    def unpin(self, port: int) -> None:
        self.pinned.discard(port)

    def serve_host(self, port: int, public_url: str) -> None:
        pass


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
            # Cloudflare's edge says each client's address: its port is pinned as forwarded.
            assert pins.forwarded == {status.port}
        finally:
            await runner.stop()
    assert [r.getMessage() for r in caplog.records] == [
        "tunnel shop: cloudflared printed no public URL after 0.5 s "
        "(last line: INF |  https://seasonal-deck.cfargotunnel.example  |)"]
    assert not process_alive(pid) and not pins.pinned



# -- plain ssh against a real sshd that goes away and comes back ---------------------------------------
class Server:
    """An OpenSSH server on 127.0.0.1:``port`` that lets this user in with ``key``; stopped and started at will."""

    def __init__(self, base: Path) -> None:
        program = _sshd_program()
        if program is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
            pytest.skip("OpenSSH (sshd, ssh, ssh-keygen) is not installed: apt-get install openssh-server")
        self.program, self.base, self.port = program, base, free_port()
        for name in ("host_key", "user_key"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True)
        (base / "authorized_keys").write_text((base / "user_key.pub").read_text())
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)
        (base / "sshd_config").write_text(
            f"HostKey {base / 'host_key'}\nAuthorizedKeysFile {base / 'authorized_keys'}\nPidFile none\n"
            "StrictModes no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen([self.program, "-D", "-e", "-f", str(self.base / "sshd_config"), "-p", str(self.port),
                                      "-o", "ListenAddress=127.0.0.1"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

        def listening() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, what="sshd to listen")

    def stop(self) -> None:
        """Stop the server and the connections it serves (each in a session of its own, a child of the server)."""
        if self.proc is None:
            return
        sessions = children_of(self.proc.pid)
        self.proc.terminate()
        self.proc.wait(10)
        for pid in sessions:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        wait_for(lambda: not any(process_alive(pid) for pid in sessions), what="sshd's sessions to end")
        self.proc = None


def children_of(pid: int) -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                if int(Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(name))
    return found


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    s = Server(tmp_path)
    try:
        yield s
    finally:
        s.stop()


async def test_plain_ssh_keeps_its_url_through_a_server_outage_of_many_restarts(server: Server, tmp_path: Path) -> None:
    server.start()
    env = dict(os.environ, DEVTUNNEL_SSH_OPTIONS=f"-i {server.base / 'user_key'} -o UserKnownHostsFile={tmp_path / 'kh'}")
    via = parse_via(f"ssh:{getpass.getuser()}@127.0.0.1:{server.port}")
    messages: list[str] = []
    runner = ViaRunner(via, "hooks", Pins(), on_change=lambda: messages.append(runner.status.message), env=env,
                       backoff=(0.05, 0.2))
    await runner.start()
    try:
        first = await async_wait_for(lambda: runner.status.url if runner.status.state == "online" else None,
                                     timeout=30, what="the first URL")
        server.stop()  # the server is down for many more restarts than FIXED_PORT_TRIES
        await async_wait_for(lambda: runner.status.restarts >= 2 * FIXED_PORT_TRIES, timeout=60,
                             what="the provider to fail again and again")
        assert runner.status.url == first
        server.start()
        await async_wait_for(lambda: runner.status.state == "online", timeout=30, what="the provider back")
        assert runner.status.url == first, "the same port is asked for again: a server outage does not move the URL"

        # This run asked for its port with -v: ssh's closing statistics do not hide why it stopped.
        seen = len(messages)
        server.stop()
        why = await async_wait_for(lambda: next((m for m in messages[seen:] if "exited with code 255 (" in m), None),
                                   timeout=30, what="the provider to stop again")
        assert "closed by remote host" in why, why
    finally:
        await runner.stop()


async def test_an_outage_of_many_exits_is_said_once_then_at_doubling_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A provider that fails the same way at each restart (a server down for an hour) wrote a
    # warning a restart: the log said nothing new after the first, and hid what did change.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "cloudflared"
    count = tmp_path / "runs"
    program.write_text(
        f"#!{sys.executable}\nimport pathlib, sys, time\nc = pathlib.Path({str(count)!r})\n"
        "n = int(c.read_text()) + 1 if c.exists() else 1\nc.write_text(str(n))\n"
        "if n <= 9:\n    sys.stderr.write('ERR cannot reach the edge\\n' if n != 6 else 'ERR login refused\\n')\n"
        "    sys.exit(1)\n"
        "sys.stderr.write('INF |  https://seasonal-deck.trycloudflare.com  |\\n'); sys.stderr.flush()\ntime.sleep(600)\n")
    program.chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    runner = ViaRunner(parse_via("cloudflared"), "shop", Pins(), on_change=lambda: None, env=env,
                       backoff=(0.01, 0.02))
    with caplog.at_level(logging.WARNING, logger="devtunnel.agent"):
        await runner.start()
        try:
            await async_wait_for(lambda: runner.status.state == "online", timeout=30, what="the provider online")
        finally:
            await runner.stop()
    edge, login = "exited with code 1 (ERR cannot reach the edge)", "exited with code 1 (ERR login refused)"
    assert [r.getMessage() for r in caplog.records] == [
        f"tunnel shop: cloudflared {edge}; restarting",  # 1
        f"tunnel shop: cloudflared failed 2 times in a row ({edge}); restarting",
        f"tunnel shop: cloudflared failed 4 times in a row ({edge}); restarting",
        f"tunnel shop: cloudflared {login}; restarting",  # 6: a new reason is said at once
        f"tunnel shop: cloudflared {edge}; restarting",  # 7: and so is the old one back
        f"tunnel shop: cloudflared failed 8 times in a row ({edge}); restarting",
        "tunnel shop: cloudflared gave a new public URL: https://seasonal-deck.trycloudflare.com",
        "tunnel shop: cloudflared back online at https://seasonal-deck.trycloudflare.com",
    ]
