"""Every command's arguments, parsed by the real grammar, carry what the command reads.

Commands read ``args.x`` directly, never ``getattr(args, "x", default)``: a flag a parser does
not define is an AttributeError here rather than a silent default at run time. Each command is
run from the shortest command line it takes, as far as it goes without a server: the local ones
in full, ``http``, ``agent`` and ``up`` (which share the agent's code) and ``relay`` up to the
options they would start with.
"""

from __future__ import annotations

import argparse
import contextlib
import io
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.cli import build_parser, main
from devtunnel.commands.config import resolve_http, resolve_relay, store_path
from devtunnel.commands.http import agent_options
from devtunnel.commands.tunnel_args import check_http_args
from devtunnel.commands.relay import settings_from_args
from devtunnel.commands.up import resolve_up
from devtunnel.config import load
from devtunnel.values.exchange_ids import stable_short_id
from tests.helpers import free_port
from tests.net.api_fixtures import echo_service, make_exchange

MINIMAL: dict[str, list[str]] = {
    "relay": ["relay"],
    "http": ["http", "8080"],
    "agent": ["agent"],
    "up": ["up"],
    "start": ["start", "--all"],
    "requests": ["requests"],
    "show": ["show", "ID"],
    "export": ["export", "ID"],
    "replay": ["replay", "ID"],
    "diff": ["diff", "ID", "ID"],
    "inspect": ["inspect"],
    "logs": ["logs", "web", "--api", "URL"],
    "send": ["send", "--list"],
    "config": ["config", "path"],
    "init": ["init"],
    "help": ["help"],
}
"""The shortest command line of each command (ID, URL: filled in by the test)."""


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder defining tunnel ``web``, with no user file, no environment settings, its own state."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("DEVTUNNEL_RELAY", "DEVTUNNEL_TOKEN", "DEVTUNNEL_CONFIG", "DEVTUNNEL_DB"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "devtunnel.toml").write_text(f'[tunnels.web]\ntarget = {free_port()}\n')
    return tmp_path


def parsed(*argv: str) -> argparse.Namespace:
    """``argv`` parsed, with the settings loaded, as ``cli.main`` does before running a command."""
    args = build_parser().parse_args(argv)
    args.settings = load()
    return args


def test_every_command_has_its_shortest_command_line_here() -> None:
    subparsers = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == set(MINIMAL)


@pytest.mark.parametrize("command", ["requests", "show", "export", "replay", "diff", "logs", "send", "config",
                                     "init", "help"])
def test_the_local_commands_run_from_their_shortest_command_line(folder: Path, command: str) -> None:
    db = folder / "captures.db"
    with echo_service() as (target, _):
        exchange = make_exchange(method="GET", target=b"/orders", req_headers=[("Host", "shop.localhost")],
                                 req_body=b"", target_url=target)
        with Store(db) as store:
            store.put(exchange)
        argv = [{"ID": stable_short_id(exchange.id), "URL": f"http://127.0.0.1:{free_port()}"}.get(a, a)
                for a in MINIMAL[command]]
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--db", str(db), *argv])
    # Success, or the one-line failure the command means (no agent for logs, a file already here for init).
    expected = {"logs": 1, "init": 2}.get(command, 0)
    assert code == expected, err.getvalue()


@pytest.mark.parametrize("argv", [["http", "8080"], ["http", "web"], ["agent"],
                                  ["http", "web", "--name", "other", "--no-record", "--run", "true", "--hold", "2s"]])
def test_http_and_agent_arguments_go_as_far_as_the_agent_options(folder: Path, argv: list[str]) -> None:
    resolved = resolve_http(parsed(*argv))
    options = agent_options(resolved)
    assert options.db == str(store_path(resolved))
    if argv[0] == "agent":
        assert options.tunnels == []
    else:
        check_http_args(resolved)  # the inspector's path: the same arguments, checked before the screen opens
        [tunnel] = options.tunnels
        assert tunnel.name == ("other" if "--name" in argv else "web" if "web" in argv else None)


def test_up_arguments_go_as_far_as_the_agent_options(folder: Path) -> None:
    resolved, tunnels = resolve_up(parsed(*MINIMAL["up"]))
    options = agent_options(resolved, tunnels)
    assert [t.name for t in options.tunnels] == ["web"]


def test_start_arguments_go_as_far_as_the_agent_options(folder: Path) -> None:
    from devtunnel.commands.start import prepare

    ngrok = folder / "ngrok.yml"
    ngrok.write_text(f'version: "2"\ntunnels:\n  hooks:\n    proto: http\n    addr: {free_port()}\n')
    args = parsed(*MINIMAL["start"], "--config", str(ngrok))
    command = prepare(args)
    assert command == ["start", "--config", str(ngrok.absolute())]
    resolved, tunnels = resolve_up(args)
    options = agent_options(resolved, tunnels)
    assert [t.name for t in options.tunnels] == ["hooks"]


def test_relay_arguments_go_as_far_as_the_relay_settings(folder: Path) -> None:
    settings = settings_from_args(resolve_relay(parsed(*MINIMAL["relay"])))
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_inspect_finds_its_store(folder: Path) -> None:
    assert store_path(parsed(*MINIMAL["inspect"])) == load().store.path
