"""``devtunnel relay`` and its file descriptors (``relay.descriptors``): the relay as a subprocess
under a small open-file limit (``prlimit``), attackers on raw sockets from 127.0.0.3.

Before, one address could hold as many connections as the relay had descriptors (connections
whose head was sent are no pending ones: a slow body on every stream of every tunnel), and the
relay, out of descriptors, reset every new client without a word in its log. Now it raises its
soft limit to the hard one, one address holds at most a quarter of it by default
(``--connections-per-address``), and running short of descriptors is said once.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.test_relay_pending_cli import answers, flood, waiting

OTHER = "127.0.0.2"
ATTACKER = "127.0.0.3"


def limited_relay(procs: list[Proc], env: dict[str, str], nofile: str, *flags: str) -> tuple[Proc, int]:
    """``devtunnel relay`` under ``prlimit --nofile=SOFT:HARD``, with no bound on waiting connections
    per address (so what holds an address back here is its open connections alone)."""
    port = free_port()
    proc = Proc(["prlimit", f"--nofile={nofile}", "--", *DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}",
                 "--token", "good", "--head-timeout", "60", "--pending-per-address", "0", "--max-pending", "1000",
                 *flags], env)
    procs.append(proc)
    proc.line(lambda l: l.startswith("Relay listening"))
    return proc, port


def open_files_limit(pid: int) -> tuple[int, int]:
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max open files"):
                soft, hard = line.split()[3:5]
                return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


def healthz(port: int, source: str) -> bytes:
    """The first line of the relay's answer to ``GET /healthz`` from ``source`` (b"" when reset)."""
    with socket.socket() as client:
        client.settimeout(10)
        client.bind((source, 0))
        client.connect(("127.0.0.1", port))
        data = b""
        try:
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            while chunk := client.recv(65536):
                data += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
    return data.partition(b"\r\n")[0]


@contextmanager
def silent(port: int, source: str, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    end = time.monotonic() + 30
    try:
        for _ in range(count):
            assert time.monotonic() < end, "the connections took too long to open"
            sock = socket.socket()
            sock.bind((source, 0))
            sock.connect(("127.0.0.1", port))
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def test_the_relay_raises_its_soft_limit_and_holds_one_address_to_a_quarter_of_it(
    env: dict[str, str], procs: list[Proc]
) -> None:
    proc, port = limited_relay(procs, env, "128:256")
    assert open_files_limit(proc.pid) == (256, 256)  # raised to the hard limit at start
    with flood(port, ATTACKER, 80) as socks:  # silent, a head begun, WebSocket upgrades: a third each
        wait_for(lambda: sum(not waiting(s) for s in socks) >= 16, what="the 16 past a quarter of 256 refused")
        # Those that spoke are answered; a silent one is cut (an answer would cross its request).
        assert answers(socks[64:]) == {b"HTTP/1.1 429 Too Many Requests": 11, b"": 5}
        assert answers(socks[:64]) == {b"held": 64}
        assert healthz(port, OTHER) == b"HTTP/1.1 200 OK"  # another address is served meanwhile
    lines = [line for line in proc.err if "open connections, the most one address may" in line]
    assert len(lines) == 1 and "client 127.0.0.3 holds 64 open connections" in lines[0], proc.err
    assert proc.stop() == 0


def test_running_short_of_descriptors_is_said_once_and_the_relay_serves_again_once_some_close(
    env: dict[str, str], procs: list[Proc]
) -> None:
    proc, port = limited_relay(procs, env, "96:96", "--connections-per-address", "0")
    short = "the relay is running out of file descriptors"
    with silent(port, ATTACKER, 120):
        wait_for(lambda: any(short in line for line in proc.err), what="the relay saying it runs short")
        assert healthz(port, OTHER) == b""  # reset unserved: no descriptor left for it
    wait_for(lambda: healthz(port, OTHER) == b"HTTP/1.1 200 OK", what="the relay serving again")
    lines = [line for line in proc.err if short in line]
    assert len(lines) == 1 and "of 96 open (ulimit -n)" in lines[0], proc.err
    assert proc.stop() == 0


def test_bad_values_of_the_connection_and_rate_flags_are_one_line_and_exit_2(
    env: dict[str, str], procs: list[Proc]
) -> None:
    for flags, message in (
        (("--connections-per-address", "-1"), "--connections-per-address: expected a whole number of 0 or more, not '-1'"),
        (("--connections-per-address", "lots"), "--connections-per-address: expected a whole number of 0 or more, not 'lots'"),
        (("--body-min-rate", "fast"), "--body-min-rate 'fast': expected bytes a second, e.g. 500 or 2k"),
        (("--body-min-rate=-1k",), "--body-min-rate '-1k': expected bytes a second, e.g. 500 or 2k"),
    ):
        proc = start(procs, env, "relay", *flags)
        assert proc.wait() == 2
        assert len(proc.err) == 1 and message in proc.err[0], proc.err
