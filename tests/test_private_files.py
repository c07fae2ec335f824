"""What devtunnel records is the user's alone: the folders it makes are 0700, the capture
database (with its -wal and -shm) and the inspector's agent log 0600, whatever the umask.

They hold every captured request and response: the Authorization headers and cookies of a
tunnel's clients, webhook bodies, the log line of each request. Made with the usual umask (022)
they were 0755 and 0644: any user of the machine could read them.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtunnel.tui.supervisor import AgentSupervisor
from tests.helpers import async_wait_for, free_port
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.net.tunnel_fixtures import LocalState, local_http


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """The umask most systems start users with; children inherit it."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def local() -> Iterator[tuple[int, LocalState]]:
    with local_http() as served:
        yield served


def test_captures_made_by_a_headless_tunnel_are_readable_by_the_user_alone(
        tmp_path: Path, usual_umask: None, local: tuple[int, LocalState]) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "home").chmod(0o755)
    state_home = tmp_path / "home" / ".local" / "state"  # none of it exists yet
    elsewhere = tmp_path / "team" / "shared" / "captures.db"  # --db in a folder that does not exist either
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_STATE_HOME=str(state_home), XDG_CONFIG_HOME=str(tmp_path / "config"))
    for db_args, db in (([], state_home / "devtunnel" / "captures.db"), (["--db", str(elsewhere)], elsewhere)):
        proc = Proc([*DEVTUNNEL, "http", str(local[0]), "--no-tui", "--api-port", "0", *db_args], env)
        try:
            match = FORWARDING.match(proc.line(lambda l: l.startswith("Forwarding")))
            assert match is not None
            answer = httpx.get(f"http://127.0.0.1:{match.group(3)}/echo", headers={"Host": f"{match.group(2)}.localhost",
                               "Authorization": "Bearer a-client-token"}, timeout=10)
            assert answer.status_code == 200
            proc.line(lambda l: " GET " in l and "/echo" in l)
            # While the agent runs, with its -wal and -shm beside the database.
            files = [db.with_name(db.name + suffix) for suffix in ("", "-wal", "-shm")]
            assert {f.name: oct(_mode(f)) for f in files} == {f.name: "0o600" for f in files}
        finally:
            assert proc.stop() == 0
        assert oct(_mode(db)) == "0o600" and _listed(db, env) == 1
    for folder in (tmp_path / "home" / ".local", state_home, state_home / "devtunnel", tmp_path / "team",
                   tmp_path / "team" / "shared"):
        assert oct(_mode(folder)) == "0o700", folder
    assert oct(_mode(tmp_path / "home")) == "0o755"  # a folder that was there is left as it is


def _listed(db: Path, env: dict[str, str]) -> int:
    """How many exchanges ``devtunnel requests`` lists from ``db`` (the file works as before)."""
    done = subprocess.run([*DEVTUNNEL, "requests", "--json", "--db", str(db)], capture_output=True, text=True,
                          env=env, timeout=30)
    assert done.returncode == 0, done
    return len(json.loads(done.stdout))


async def test_the_inspectors_agent_log_is_readable_by_the_user_alone(tmp_path: Path, usual_umask: None) -> None:
    log = tmp_path / "state" / "devtunnel" / "agent.log"
    supervisor = AgentSupervisor([sys.executable, "-c", "print('GET /hello 200', flush=True)"], log, lambda status: None)
    supervisor.start()
    try:
        await async_wait_for(lambda: log.exists() and "GET /hello 200" in log.read_text(), what="the agent's line")
    finally:
        await supervisor.stop()
    assert oct(_mode(log)) == "0o600"
    assert oct(_mode(log.parent)) == "0o700" and oct(_mode(log.parent.parent)) == "0o700"


def test_a_port_remembered_makes_a_private_state_folder(tmp_path: Path, usual_umask: None) -> None:
    from devtunnel.agent.port_memory import PortMemory

    path = tmp_path / "state" / "devtunnel" / "ports.json"
    PortMemory(path).put("relay", "payments", free_port())
    assert oct(_mode(path.parent)) == "0o700" and oct(_mode(path)) == "0o600"


def test_a_private_folder_in_the_way_of_a_file_fails_as_mkdir_does(tmp_path: Path) -> None:
    from devtunnel.values.paths import make_private_folder

    a_file = tmp_path / "a-file"
    a_file.write_text("")
    with pytest.raises(FileExistsError):
        make_private_folder(a_file)
    with pytest.raises(NotADirectoryError):
        make_private_folder(a_file / "devtunnel")
    tmp_path.chmod(0o755)
    make_private_folder(tmp_path)  # there already: left as it is
    assert oct(_mode(tmp_path)) == "0o755"
