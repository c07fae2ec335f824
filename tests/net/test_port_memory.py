"""A URL that stays put: the embedded relay's port remembered per tunnel name between runs, and the
name an unnamed tunnel got remembered per target."""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest

from devtunnel.agent.port_memory import MAX_ENTRIES, PortMemory
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs  # noqa: F401 (fixtures)


def test_ports_are_remembered_per_kind_and_key_in_one_json_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "ports.json"
    memory = PortMemory(path)
    assert memory.get("relay", "payments") is None  # no file yet
    memory.put("relay", "payments", 41234)
    memory.put("ssh", "payments ssh:me@host", 40021)
    again = PortMemory(path)
    assert again.get("relay", "payments") == 41234 and again.get("ssh", "payments ssh:me@host") == 40021
    assert json.loads(path.read_text()) == {"relay": {"payments": 41234}, "ssh": {"payments ssh:me@host": 40021}}
    assert os.listdir(path.parent) == ["ports.json"], "no temporary file left behind"


@pytest.mark.parametrize("text", ["", "not json", "[]", '{"relay": [1]}', '{"relay": {"a": "80"}}',
                                  '{"relay": {"a": 70000}}', '{"relay": {"a": true}}'])
def test_a_broken_file_is_an_empty_memory_and_is_replaced_on_the_next_put(tmp_path: Path, text: str) -> None:
    path = tmp_path / "ports.json"
    path.write_text(text)
    memory = PortMemory(path)
    assert memory.get("relay", "a") is None
    memory.put("relay", "b", 8000)
    assert memory.get("relay", "b") == 8000


def test_the_memory_keeps_the_newest_entries_only(tmp_path: Path) -> None:
    memory = PortMemory(tmp_path / "ports.json")
    for n in range(MAX_ENTRIES + 5):
        memory.put("relay", f"t{n}", 10000 + n)
    table = json.loads((tmp_path / "ports.json").read_text())["relay"]
    assert len(table) == MAX_ENTRIES and "t0" not in table and table[f"t{MAX_ENTRIES + 4}"] == 10000 + MAX_ENTRIES + 4


def test_an_unnamed_tunnel_gets_the_name_its_target_had_last_time(tmp_path: Path) -> None:
    path = tmp_path / "ports.json"
    first = PortMemory(path).name_for("http://127.0.0.1:8000")
    assert PortMemory(path).name_for("http://127.0.0.1:8000") == first
    other = PortMemory(path).name_for("http://127.0.0.1:3000")
    assert other != first and PortMemory(path).name_for("http://127.0.0.1:3000") == other
    assert json.loads(path.read_text())["name"] == {"to http://127.0.0.1:8000": first, "to http://127.0.0.1:3000": other}
    # Running already (a second tunnel to the same target): another name, and the first keeps its own.
    second = PortMemory(path).name_for("http://127.0.0.1:8000", taken={first})
    assert second != first
    assert PortMemory(path).name_for("http://127.0.0.1:8000") == first


@pytest.mark.parametrize("stored", ['"Brave-Otter-1"', '"a.b"', '"xn--pple-43d"', "8000", '""', '"' + "a" * 64 + '"'])
def test_a_remembered_name_that_is_no_tunnel_name_is_replaced(tmp_path: Path, stored: str) -> None:
    path = tmp_path / "ports.json"
    path.write_text('{"name": {"to http://127.0.0.1:8000": %s}, "relay": {"kept": 41234}}' % stored)
    name = PortMemory(path).name_for("http://127.0.0.1:8000")
    assert json.loads(f"[{stored}]")[0] != name
    assert json.loads(path.read_text()) == {"name": {"to http://127.0.0.1:8000": name}, "relay": {"kept": 41234}}
    assert PortMemory(path).get("name", "to http://127.0.0.1:8000") is None, "a name is not a port"


def test_an_unwritable_state_directory_is_not_an_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    memory = PortMemory(blocker / "ports.json")  # its directory cannot be created
    memory.put("relay", "a", 8000)
    assert memory.get("relay", "a") is None


# -- devtunnel http, run again ---------------------------------------------------------------------------
def run_once(procs: list[Proc], env: dict[str, str], *extra: str) -> tuple[str, Proc]:
    proc = Proc([*DEVTUNNEL, "http", "8000", "--name", "payments", "--no-tui", "--api-port", "0", "--no-record",
                 *extra], env)
    procs.append(proc)
    line = proc.line(lambda l: l.startswith("Forwarding"))
    assert proc.stop(signal.SIGINT) == 0
    return line, proc


def test_the_same_tunnel_name_gets_the_same_url_again_unless_its_port_is_taken(
    env: dict[str, str], procs: list[Proc]
) -> None:
    first, _ = run_once(procs, env)
    second, _ = run_once(procs, env)
    assert second == first
    match = FORWARDING.match(first)
    assert match is not None and match.group(2) == "payments"
    port = int(match.group(3))
    remembered = json.loads((Path(env["XDG_STATE_HOME"]) / "devtunnel" / "ports.json").read_text())
    assert remembered["relay"]["payments"] == port

    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the last run's connections may linger
        taken.bind(("127.0.0.1", port))
        taken.listen(1)
        third, proc = run_once(procs, env)
    moved = FORWARDING.match(third)
    assert moved is not None and int(moved.group(3)) != port
    assert any(f"port {port}, which tunnel payments had last time, is taken: its URL moves to port {moved.group(3)}"
               in line for line in proc.err), proc.err
    fourth, _ = run_once(procs, env)
    assert fourth == third, "the new port is the one remembered now"


def test_an_unnamed_tunnel_gets_the_same_url_again(env: dict[str, str], procs: list[Proc]) -> None:
    def run(target: str) -> str:
        proc = Proc([*DEVTUNNEL, "http", target, "--no-tui", "--api-port", "0", "--no-record"], env)
        procs.append(proc)
        line = proc.line(lambda l: l.startswith("Forwarding"))
        assert proc.stop(signal.SIGINT) == 0
        return line

    first = run("8000")
    assert run("127.0.0.1:8000") == first, "the same target, written another way"
    match = FORWARDING.match(first)
    assert match is not None
    remembered = json.loads((Path(env["XDG_STATE_HOME"]) / "devtunnel" / "ports.json").read_text())
    assert remembered["name"] == {"to http://127.0.0.1:8000": match.group(2)}
    assert remembered["relay"] == {match.group(2): int(match.group(3))}
    other = FORWARDING.match(run("8001"))
    assert other is not None and other.group(2) != match.group(2)


def test_port_pins_the_port_and_a_taken_one_is_an_error(env: dict[str, str], procs: list[Proc]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = Proc([*DEVTUNNEL, "http", "8000", "--name", "payments", "--no-tui", "--api-port", "0", "--no-record",
                     "--port", str(port)], env)
        procs.append(proc)
        assert proc.wait(30) == 2
    assert proc.out == []
    assert len(proc.err) == 1 and proc.err[0].startswith(f"devtunnel: cannot listen on 127.0.0.1:{port}: "), proc.err
    free = FORWARDING.match(run_once(procs, env, "--port", str(port))[0])
    assert free is not None and free.group(3) == str(port)


async def test_two_unnamed_tunnels_to_one_target_in_one_agent_get_two_names(tmp_path: Path) -> None:
    from devtunnel.agent.config import TunnelConfig
    from devtunnel.agent.service import AgentService

    memory = PortMemory(tmp_path / "ports.json")
    remembered = memory.name_for("http://127.0.0.1:8000")
    service = AgentService(ports=memory)
    try:
        first = await service.start_tunnel(TunnelConfig(target="8000"))
        second = await service.start_tunnel(TunnelConfig(target="8000"))
        named = await service.start_tunnel(TunnelConfig(target="8000", name="named"))
    finally:
        await service.stop()
    assert first.name == remembered and second.name not in (remembered, "named") and named.name == "named"
    assert memory.name_for("http://127.0.0.1:8000") == remembered
