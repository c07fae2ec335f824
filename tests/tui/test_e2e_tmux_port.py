"""End to end in a real terminal: the inspector's tunnel keeps its URL from one run to the next,
even after a run that found the port taken moved elsewhere (``devtunnel http PORT --name N`` in tmux)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.tui.test_e2e_tmux import DEVTUNNEL, Tmux, exit_status, pytestmark as _e2e_marks, wait_online

pytestmark = _e2e_marks


def _run_once(tmp_path: Path, service: int, run: int) -> int:
    """Open the inspector on tunnel ``keep``, read its relay port once online, quit with q."""
    tmux = Tmux()
    try:
        status = tmp_path / f"status-{run}"
        tmux.start(f"env XDG_STATE_HOME={tmp_path / 'state'} TERM=xterm-256color {DEVTUNNEL} http {service} "
                   f"--db {tmp_path / 'captures.db'} --name keep; echo $? > {status}", 120, 36)
        port = int(wait_online(tmux, "keep", tmp_path / "state" / "devtunnel" / "agent.log"))
        tmux.run("send-keys", "-t", "e2e", "q")
        assert exit_status(status) == "0"
        return port
    finally:
        tmux.close()


def test_a_run_that_found_the_port_taken_does_not_move_the_url_for_good(tmp_path: Path, service: int) -> None:
    first = _run_once(tmp_path, service, 1)
    with socket.socket() as holder:  # another program holds the port for one run
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", first))
        holder.listen()
        moved = _run_once(tmp_path, service, 2)
        assert moved != first
        assert _run_once(tmp_path, service, 3) == moved, "while it is taken, the same second choice"
    assert _run_once(tmp_path, service, 4) == first, "the name's URL is back once its port is free"

