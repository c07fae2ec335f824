"""``devtunnel start NAME... | --all``: the tunnels of an ngrok.yml, started as ngrok starts them.

Before: ``start`` only said ``devtunnel up ...`` (after ``config import-ngrok``); an ngrok user's
``ngrok start web`` habit (and scripts) ran nothing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.kit.servers import Reply, http_server

NGROK_YML = """\
version: "2"
authtoken: 2abcNGROKTOKEN
tunnels:
  web:
    proto: http
    addr: {port}
  My Hooks:
    addr: localhost:{port}
    inspect: false
  sso:
    addr: {port}
    oauth:
      provider: google
  edge:
    labels: [edge=edghts_1]
    addr: {port}
  ssh:
    proto: tcp
    addr: 22
"""


def _env(root: Path) -> dict[str, str]:
    """Files and captures under the test's folder; ngrok's own file looked for under its HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "HOME": str(root), "XDG_CONFIG_HOME": str(root / ".config"),
            "XDG_STATE_HOME": str(root / ".state")}


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=60, env=_env(root), cwd=root,
                          stdin=subprocess.DEVNULL)


def _get(relay: str, name: str, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{relay}{path}", headers={"Host": f"{name}.localhost:{relay}"},
                     trust_env=False, timeout=20)


def test_start_all_runs_every_tunnel_the_import_takes_and_says_the_others(tmp_path: Path) -> None:
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"home")) as server:
        (tmp_path / "ngrok.yml").write_text(NGROK_YML.format(port=server.port))
        proc = Proc([*DEVTUNNEL, "start", "--all", "--config", "ngrok.yml", "--no-tui", "--api-port", "0"],
                    _env(tmp_path), cwd=tmp_path)
        try:
            lines = [proc.line(lambda l, n=n: FORWARDING.match(l) is not None and f"//{n}." in l)
                     for n in ("web", "my-hooks")]
            relay = FORWARDING.match(lines[0]).group(3)  # type: ignore[union-attr]
            for name in ("web", "my-hooks"):
                answer = _get(relay, name, f"/{name}")
                assert (answer.status_code, answer.text) == (200, "home")
            assert [r.path for r in server.received] == ["/web", "/my-hooks"]
            # The tunnels the import refuses are said, each with why, and not started.
            proc.line(lambda l: l.startswith("devtunnel: not started: sso: it has OAuth"), "err")
            proc.line(lambda l: l.startswith("devtunnel: not started: edge: "), "err")
            proc.line(lambda l: l.startswith("devtunnel: not started: ssh: tcp tunnels are not supported"), "err")
            assert _get(relay, "sso", "/").status_code == 404
        finally:
            assert proc.stop(signal.SIGTERM) == 0
        assert not any("2abcNGROKTOKEN" in line for line in proc.out + proc.err)


def test_start_names_as_written_in_the_file_or_as_imported(tmp_path: Path) -> None:
    with http_server(lambda request: Reply(200, [], b"ok")) as server:
        (tmp_path / "ngrok.yml").write_text(NGROK_YML.format(port=server.port))
        proc = Proc([*DEVTUNNEL, "start", "My Hooks", "--config", str(tmp_path / "ngrok.yml"), "--no-tui",
                     "--api-port", "0"], _env(tmp_path), cwd=tmp_path)
        try:
            match = FORWARDING.match(proc.line(lambda l: FORWARDING.match(l) is not None))
            assert match is not None and match.group(2) == "my-hooks"
            assert _get(match.group(3), "my-hooks", "/x").status_code == 200
            assert _get(match.group(3), "web", "/x").status_code == 404  # only the one named
        finally:
            assert proc.stop(signal.SIGTERM) == 0


def test_later_config_files_win_and_the_default_location_is_ngrok_s(tmp_path: Path) -> None:
    with http_server(lambda request: Reply(200, [], b"second")) as server:
        first = tmp_path / "first.yml"
        first.write_text("tunnels:\n  web:\n    addr: 1\n  other:\n    addr: 2\n")
        second = tmp_path / "second.yml"
        second.write_text(f"tunnels:\n  web:\n    addr: {server.port}\n")
        # ngrok's own place for its file: $XDG_CONFIG_HOME/ngrok/ngrok.yml
        (tmp_path / ".config" / "ngrok").mkdir(parents=True)
        (tmp_path / ".config" / "ngrok" / "ngrok.yml").write_text(f"tunnels:\n  home:\n    addr: {server.port}\n")
        for args, name in ((["web", "--config", str(first), "--config", str(second)], "web"), (["home"], "home")):
            proc = Proc([*DEVTUNNEL, "start", *args, "--log", "stdout", "--log-format", "json", "--api-port", "0"],
                        _env(tmp_path), cwd=tmp_path)
            try:
                started = json.loads(proc.line(lambda l: '"started tunnel"' in l))
                assert started["name"] == name
                relay = started["url"].rsplit(":", 1)[1]
                answer = _get(relay, name, "/")
                assert (answer.status_code, answer.text) == (200, "second")
            finally:
                assert proc.stop(signal.SIGTERM) == 0


def test_files_read_as_one_a_later_tunnel_replacing_an_earlier_one_whole() -> None:
    from devtunnel.ngrok_config import read_ngrok_files

    first = "authtoken: x\ntunnels:\n  web:\n    addr: 1\n    basic_auth: ['a:secret12']\n  other:\n    addr: 2\n"
    second = "tunnels:\n  web:\n    addr: 3\n"
    result = read_ngrok_files([(first, "a.yml"), (second, "b.yml")])
    assert [(t.name, t.target, t.rules) for t in result.tunnels] == [("web", "3", ()), ("other", "2", ())]
    later_protected = read_ngrok_files([(second, "b.yml"), ("tunnels:\n  web:\n    addr: 3\n    oauth: {}\n"
                                                             "    oidc: {issuer_url: x}\n", "c.yml")])
    assert later_protected.tunnels == [] and later_protected.named("web") is not None


@pytest.mark.parametrize(("args", "says"), [
    (["start", "shop"], "devtunnel: tunnel 'shop' is not defined in the config files (tunnels available: web, "
                        "'My Hooks', sso, edge, ssh; config files read: ngrok.yml)"),
    (["start", "sso"], "devtunnel: tunnel 'sso' of ngrok.yml is not started: it has OAuth, which devtunnel cannot "
                       "enforce yet"),
    (["start", "ssh"], "devtunnel: tunnel 'ssh' of ngrok.yml is not started: tcp tunnels are not supported (only http)"),
    (["start"], "devtunnel: name the tunnels to start (devtunnel start NAME...), or --all for every one of ngrok.yml"),
    (["start", "web", "--all"], "devtunnel: give tunnel names or --all, not both"),
    (["start", "web", "--config", "missing.yml"], "devtunnel: missing.yml: cannot read it (No such file or directory)"),
    # ngrok's --region, which start takes there: said what it is here, not "unrecognized arguments" alone.
    (["start", "web", "--region", "eu"], "devtunnel start: unrecognized arguments: --region eu (--region is ngrok's: "
                                         "the relay you run decides where traffic enters: relay.url in devtunnel.toml)"),
])
def test_a_name_not_started_is_bad_usage_saying_why(tmp_path: Path, args: list[str], says: str) -> None:
    (tmp_path / "ngrok.yml").write_text(NGROK_YML.format(port=9))
    if "--config" not in args:
        args = [*args, "--config", "ngrok.yml"]
    done = _cli(tmp_path, *args, "--no-tui", "--api-port", "0")
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(says) and done.stderr.count("\n") == 1, done.stderr


def test_no_ngrok_yml_anywhere_says_where_it_was_looked_for(tmp_path: Path) -> None:
    done = _cli(tmp_path, "start", "web", "--no-tui")
    assert done.returncode == 2
    assert done.stderr == (f"devtunnel: no ngrok.yml found at {tmp_path}/.config/ngrok/ngrok.yml or "
                           f"{tmp_path}/.ngrok2/ngrok.yml; name the file\n")


def test_start_none_stays_the_agent(tmp_path: Path) -> None:
    done = _cli(tmp_path, "start", "--none")
    assert done.returncode == 2
    assert "start --none is ngrok's: here it is devtunnel agent" in done.stderr


def test_authtoken_is_the_relay_token_and_said_unused_without_a_relay(tmp_path: Path) -> None:
    with http_server(lambda request: Reply(200, [], b"ok")) as server:
        (tmp_path / "ngrok.yml").write_text(NGROK_YML.format(port=server.port))
        proc = Proc([*DEVTUNNEL, "start", "web", "--authtoken", "2abcNGROKTOKEN", "--config", "ngrok.yml", "--no-tui",
                     "--api-port", "0"], _env(tmp_path), cwd=tmp_path)
        try:
            proc.line(lambda l: FORWARDING.match(l) is not None)
            assert proc.err[0].startswith("devtunnel: note: the token given (--token, --authtoken or --token-file) "
                                          "is not used: no relay is set")
        finally:
            assert proc.stop(signal.SIGTERM) == 0


def test_the_relay_of_devtunnel_toml_takes_authtoken_as_its_token(tmp_path: Path) -> None:
    from tests.helpers import free_port

    port = free_port()
    relay = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}", "--token", "good"], _env(tmp_path))
    try:
        relay.line(lambda l: l.startswith("Relay listening"))
        with http_server(lambda request: Reply(200, [], b"via the relay")) as server:
            (tmp_path / "ngrok.yml").write_text(NGROK_YML.format(port=server.port))
            (tmp_path / "devtunnel.toml").write_text(f'[relay]\nurl = "ws://127.0.0.1:{port}"\n')
            refused = _cli(tmp_path, "start", "web", "--authtoken", "bad", "--config", "ngrok.yml", "--no-tui",
                           "--api-port", "0")
            assert refused.returncode == 3, refused.stderr
            proc = Proc([*DEVTUNNEL, "start", "web", "--authtoken", "good", "--config", "ngrok.yml", "--no-tui",
                         "--api-port", "0"], _env(tmp_path), cwd=tmp_path)
            try:
                proc.line(lambda l: l.startswith("Forwarding"))
                answer = _get(str(port), "web", "/")
                assert (answer.status_code, answer.text) == (200, "via the relay")
                assert not any("note:" in line for line in proc.err)
            finally:
                assert proc.stop(signal.SIGTERM) == 0
    finally:
        relay.stop()
