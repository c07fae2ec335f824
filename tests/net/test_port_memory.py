"""A URL that stays put: the embedded relay's port remembered per tunnel name between runs, and the
name an unnamed tunnel got remembered per target."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
from pathlib import Path

import pytest

from devtunnel.agent.port_memory import MAX_ENTRIES, MOVED, RELAY, PortMemory
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


def test_a_tunnel_tries_its_own_port_then_the_one_it_moved_to(tmp_path: Path) -> None:
    memory = PortMemory(tmp_path / "ports.json")
    assert memory.relay_ports("payments") == []
    memory.put(MOVED, "payments", 52810)
    assert memory.relay_ports("payments") == [], "a second choice without a first is none"
    memory.put(RELAY, "payments", 41234)
    assert memory.relay_ports("payments") == [41234, 52810]
    memory.put(MOVED, "payments", 41234)
    assert memory.relay_ports("payments") == [41234], "no port is tried twice"
    assert json.loads((tmp_path / "ports.json").read_text()) == {"relay moved": {"payments": 41234},
                                                                 "relay": {"payments": 41234}}


def taken_port() -> socket.socket:
    """A listening socket on a free loopback port: a program that holds a tunnel's port."""
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen(1)
    return held


async def test_a_run_that_moves_keeps_the_names_port_and_comes_back_to_the_same_second_choice(tmp_path: Path) -> None:
    from devtunnel.agent.config import TunnelConfig
    from devtunnel.agent.service import AgentService

    async def url(memory: PortMemory, *configs: TunnelConfig) -> list[int]:
        service = AgentService(ports=memory)
        try:
            return [int(str((await service.start_tunnel(c)).public_url).rsplit(":", 1)[1]) for c in configs]
        finally:
            await service.stop()

    memory = PortMemory(tmp_path / "ports.json")
    with taken_port() as held:
        own = held.getsockname()[1]
        memory.put(RELAY, "payments", own)
        [moved] = await url(memory, TunnelConfig(target="8000", name="payments"))
        assert moved != own and memory.relay_ports("payments") == [own, moved]
        assert await url(memory, TunnelConfig(target="8000", name="payments")) == [moved], "the same second URL"
        with taken_port() as also:  # its second choice taken too: another one, the first kept
            second = also.getsockname()[1]
            memory.put(MOVED, "payments", second)
            [third] = await url(memory, TunnelConfig(target="8000", name="payments"))
        assert third not in (own, second) and memory.relay_ports("payments") == [own, third]
    assert await url(memory, TunnelConfig(target="8000", name="payments")) == [own]
    # A tunnel in another tunnel's relay: a port of its own stays its own; a name without one gets this one.
    memory.put(RELAY, "orders", 1)
    assert await url(memory, *(TunnelConfig(target="8000", name=n) for n in ("payments", "orders", "fresh"))) == [own] * 3
    assert memory.relay_ports("orders") == [1] and memory.relay_ports("fresh") == [own]


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
    assert any(f"port {port} of tunnel payments is taken: this run's URL is on port {moved.group(3)}, remembered as "
               f"its second choice; payments keeps port {port} for later runs" in line for line in proc.err), proc.err
    fourth, _ = run_once(procs, env)
    assert fourth == first, "the port is free again: the name's own URL"


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
    assert remembered(env)["relay"] == {"payments": port}, "the user's port is the name's port"
    assert run_once(procs, env)[0] == free.group(0)


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


def remembered(env: dict[str, str]) -> dict[str, dict[str, object]]:
    return json.loads((Path(env["XDG_STATE_HOME"]) / "devtunnel" / "ports.json").read_text())


def forwarding_line(line: str) -> re.Match[str]:
    match = FORWARDING.match(line)
    assert match is not None, line
    return match


def forwarding(proc: Proc) -> re.Match[str]:
    return forwarding_line(proc.line(lambda l: l.startswith("Forwarding")))


@pytest.mark.parametrize("name", [["--name", "payments"], []], ids=["named", "unnamed"])
def test_a_second_run_beside_the_first_does_not_take_the_first_ones_url_for_good(
    env: dict[str, str], procs: list[Proc], name: list[str]
) -> None:
    def start() -> Proc:
        proc = Proc([*DEVTUNNEL, "http", "8000", *name, "--no-tui", "--api-port", "0", "--no-record"], env)
        procs.append(proc)
        return proc

    first = start()
    url = forwarding(first)
    second = start()  # the same name, while the first holds its port
    moved = forwarding(second)
    assert moved.group(2) == url.group(2) and moved.group(3) != url.group(3)
    port, tunnel = int(url.group(3)), url.group(2)
    second.line(lambda l: f"port {port} of tunnel {tunnel} is taken: this run's URL is on port {moved.group(3)}" in l
                and l.endswith(f"{tunnel} keeps port {port} for later runs"), lines="err")
    assert remembered(env)["relay"] == {tunnel: port}
    assert remembered(env)["relay moved"] == {tunnel: int(moved.group(3))}
    for proc in (second, first):
        assert proc.stop(signal.SIGTERM) == 0
    third = start()
    assert forwarding(third).group(1) == url.group(1), third.err
    assert third.stop(signal.SIGTERM) == 0
    assert not any("taken" in line for line in third.err), third.err


def test_while_a_program_holds_the_port_every_run_gets_the_same_second_url(
    env: dict[str, str], procs: list[Proc]
) -> None:
    first, _ = run_once(procs, env)
    port = int(forwarding_line(first).group(3))
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the last run's connections may linger
        held.bind(("127.0.0.1", port))
        held.listen(1)
        second, _ = run_once(procs, env)
        third, proc = run_once(procs, env)
    assert second != first and third == second
    assert any(f"is on port {forwarding_line(third).group(3)}, its second choice; payments keeps port {port} "
               "for later runs" in line for line in proc.err), proc.err
    assert remembered(env)["relay"] == {"payments": port}
    assert run_once(procs, env)[0] == first
