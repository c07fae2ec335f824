"""``devtunnel http ... --via`` with the inspector: the agent it runs gets the provider, and the
embedded relay's remembered port; the agent API's port it is given."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from devtunnel.cli import build_parser
from devtunnel.commands.config import resolve_http
from devtunnel.commands.inspect import http_agent_argv
from devtunnel.commands.tunnel_args import check_http_args
from devtunnel.config import load
from devtunnel.errors import ConfigError
from devtunnel.agent.port_memory import PortMemory
from tests.helpers import free_port


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    for name in ("DEVTUNNEL_RELAY", "DEVTUNNEL_TOKEN", "DEVTUNNEL_CONFIG", "DEVTUNNEL_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path / "state" / "devtunnel"


def args_of(*argv: str):  # type: ignore[no-untyped-def]
    args = build_parser().parse_args(["http", *argv])
    args.settings = load()
    return resolve_http(args)


def test_the_agent_gets_the_provider_and_keeps_its_names_port_itself(state: Path) -> None:
    # A --port from the inspector would be remembered as the user's choice: the agent takes the
    # port its name has (agent.port_memory), and its second choice when that one is taken.
    argv = http_agent_argv(args_of("8000", "--name", "Payments", "--via", "pinggy"))()
    assert argv[argv.index("--via") + 1] == "pinggy"
    assert "--port" not in argv
    chosen = http_agent_argv(args_of("8000", "--name", "payments", "--port", "41234"))()
    assert chosen[chosen.index("--port") + 1] == "41234"  # the user's choice is passed on
    assert "--port" not in http_agent_argv(args_of("8000", "--relay", "wss://relay.localhost", "--port", "41234"))()


def test_the_inspectors_agent_gets_the_name_its_target_had_last_time(state: Path) -> None:
    def name_of(*argv: str) -> str:
        made = http_agent_argv(args_of(*argv))()
        return made[made.index("--name") + 1]

    first = name_of("8000")
    assert name_of("8000") == first and name_of("127.0.0.1:8000") == first
    assert PortMemory().name_for("http://127.0.0.1:8000") == first
    assert name_of("8001") != first
    # On a relay of one's own the agent asks for it itself, and for a new one when another agent holds it now.
    assert "--name" not in http_agent_argv(args_of("8000", "--relay", "wss://relay.localhost"))()


def test_a_missing_provider_is_refused_before_the_screen_opens(state: Path, monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="cloudflared is not installed"):
        check_http_args(args_of("8000", "--via", "cloudflared"))


def test_the_inspectors_agent_takes_a_chosen_api_port_and_moves_the_default_one(state: Path) -> None:
    # The default (4040) is left to the agent, which moves on when it is taken and prints where.
    assert "--api-port" not in http_agent_argv(args_of("8000"))()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        busy = taken.getsockname()[1]
        # Chosen and taken: one line before the screen opens, not an agent failing behind it at every restart.
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{busy} for the agent API: the port is taken"):
            http_agent_argv(args_of("8000", "--api-port", str(busy)))
    free = free_port()
    argv = http_agent_argv(args_of("8000", "--api-port", str(free)))()
    assert argv[argv.index("--api-port") + 1] == str(free)
