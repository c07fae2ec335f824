"""``devtunnel http`` refuses bad arguments before the inspector takes the terminal."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

DEVTUNNEL = str(Path(sys.executable).with_name("devtunnel"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http", "localhost"], "devtunnel: invalid target 'localhost': the port is missing"),
        (["http", "8080", "--name", "Bad_Name"], "is not a valid DNS label"),
        (["http", "8080", "--body-cap", "lots"], "'lots' is not a size"),
        (["http", "8080", "--relay", "ftp://x"], "invalid relay URL"),
    ],
)
def test_bad_http_arguments_exit_2_with_one_line_and_no_screen(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run([DEVTUNNEL, *args, "--db", str(tmp_path / "c.db")], capture_output=True, text=True,
                          timeout=30, stdin=subprocess.DEVNULL, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 2  # bad usage
    assert message in done.stderr and len(done.stderr.splitlines()) == 1
    assert "\x1b" not in done.stdout + done.stderr  # the inspector never started
    assert not (tmp_path / ".local" / "state" / "devtunnel" / "agent.log").exists()


def test_relay_port_stays_the_same_across_restarts_unless_taken() -> None:
    import socket

    from devtunnel.commands.inspect import _RelayPort

    port = _RelayPort()
    first = port()
    assert port() == first  # a restart gets the same public URL
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", int(first)))
        holder.listen()
        moved = port()
    assert moved != first and port() == moved
