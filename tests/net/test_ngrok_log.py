"""``devtunnel http PORT --log stdout`` as scripts run ``ngrok http PORT --log stdout``: the CLI as a
subprocess on loopback, its log read line by line until the ``started tunnel`` record, the URL
taken from it as a script takes it, and a request sent there."""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from devtunnel.values.ngrok_log import record
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.kit.servers import Reply, http_server
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def logfmt(line: str) -> dict[str, str]:
    """A logfmt line's keys and values, read as a logfmt library reads them (quoted values unescaped)."""
    fields: dict[str, str] = {}
    for match in re.finditer(r'(\w+)=("(?:[^"\\]|\\.)*"|\S*)', line):
        key, value = match.groups()
        fields[key] = json.loads(value) if value.startswith('"') else value
    return fields


def _get(url: str, path: str) -> httpx.Response:
    """GET ``path`` of a tunnel's URL on the embedded relay (``http://NAME.localhost:PORT``)."""
    parts = urlsplit(url)
    return httpx.get(f"http://127.0.0.1:{parts.port}{path}", headers={"Host": parts.netloc}, trust_env=False, timeout=20)


def test_json_log_on_stdout_gives_the_url_a_script_selects_and_logs_each_request(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--log", "stdout", "--log-format", "json", "--name", "jsonlog",
                  "--api-port", str(api_port))
    agent.line(lambda l: '"started tunnel"' in l)
    records = [json.loads(line) for line in agent.out]  # every line of the log is one JSON record
    [started] = [r for r in records if r["msg"] == "started tunnel"]
    assert (started["lvl"], started["obj"], started["name"], started["addr"]) == (
        "info", "tunnels", "jsonlog", f"http://127.0.0.1:{local[0]}")
    agent.line(lambda l: '"starting web service"' in l)
    [web] = [json.loads(l) for l in agent.out if '"starting web service"' in l]
    assert web["addr"] == f"127.0.0.1:{api_port}"

    assert _get(started["url"], "/echo?q=1").status_code == 200
    assert local[1].seen_targets[-1] == b"/echo?q=1"  # the request reached the service
    joined = json.loads(agent.line(lambda l: '"join connections"' in l))
    assert (joined["method"], joined["path"], joined["status"], joined["l"]) == ("GET", "/echo?q=1", "200",
                                                                               f"127.0.0.1:{local[0]}")
    assert agent.stop(signal.SIGINT) == 0
    assert not any(l.startswith(("Forwarding", "API ")) for l in agent.out)  # nothing a JSON reader chokes on

    if shutil.which("jq"):  # jq -r 'select(.msg=="started tunnel") | .url', as scripts read ngrok's log
        picked = subprocess.run(["jq", "-r", 'select(.msg=="started tunnel") | .url'], input="\n".join(agent.out) + "\n",
                                capture_output=True, text=True, timeout=30)
        assert (picked.returncode, picked.stdout.strip()) == (0, started["url"]), picked.stderr


def test_logfmt_is_the_default_and_url_is_read_as_grep_and_a_logfmt_parser_read_it(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    agent = start(procs, env, "http", str(local[0]), "--log=stdout", "--log-level=info", "--api-port", "0",
                  "--no-record")
    line = agent.line(lambda l: 'msg="started tunnel"' in l)
    assert re.match(r'^t=\S+ lvl=info msg="started tunnel" obj=tunnels name=\S+ addr=\S+ url=\S+$', line), line
    grepped = re.search(r"url=(\S+)", line)  # grep -o 'url=[^ ]*' | cut -d= -f2
    assert grepped is not None
    url = logfmt(line)["url"]
    assert url == grepped.group(1) and url.startswith("http://")

    # A path with a quote, an equals sign, a backslash and a space (escaped %20 on the wire, kept as sent).
    with socket.create_connection(("127.0.0.1", urlsplit(url).port or 80), timeout=20) as sock:
        sock.sendall(f'GET /a"b=c\\d%20e HTTP/1.1\r\nHost: {urlsplit(url).netloc}\r\nConnection: close\r\n\r\n'.encode())
        assert sock.recv(12).startswith(b"HTTP/1.1 404")  # the local app's answer to a path it does not know
    assert local[1].seen_targets[-1] == b'/a"b=c\\d%20e'
    joined = agent.line(lambda l: "join connections" in l)
    assert logfmt(joined)["path"] == '/a"b=c\\d%20e'  # quoted and escaped: the value does not end early
    assert logfmt(joined)["status"] == "404"
    assert agent.stop(signal.SIGTERM) == 0


def test_log_to_a_file_appends_records_there_and_keeps_stdout_for_nothing_else(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    log = tmp_path / "ngrok.log"
    log.write_text("earlier line\n")
    agent = start(procs, env, "http", str(local[0]), "--log", str(log), "--api-port", "0", "--no-record")

    def started() -> str | None:
        return next((l for l in log.read_text().splitlines() if 'msg="started tunnel"' in l), None)

    line = wait_for(started, timeout=20, what=f"a started tunnel record; err={agent.err}")
    assert _get(logfmt(line)["url"], "/echo?from=file").status_code == 200
    wait_for(lambda: any(logfmt(l).get("path") == "/echo?from=file" for l in log.read_text().splitlines()), timeout=20, what="the request's record")
    assert agent.stop(signal.SIGINT) == 0
    assert log.read_text().startswith("earlier line\n")  # appended, as ngrok does
    assert agent.out == []


def test_term_format_writes_devtunnel_s_own_lines_to_stderr(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    agent = start(procs, env, "http", str(local[0]), "--log", "stderr", "--log-format", "term", "--api-port", "0",
                  "--no-record")
    agent.line(lambda l: l.startswith("Forwarding http://"), lines="err")
    assert agent.stop(signal.SIGINT) == 0
    assert agent.out == []


def test_a_log_level_above_info_leaves_out_the_info_records(
    env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--log", "stdout", "--log-level", "warn", "--api-port",
                  str(api_port), "--no-record")

    def online() -> bool:
        try:
            tunnels = httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels", trust_env=False, timeout=5).json()["tunnels"]
        except httpx.TransportError:
            return False  # the API listens once the tunnel started
        return bool(tunnels)

    wait_for(online, timeout=20, what="the tunnel online")
    assert agent.stop(signal.SIGINT) == 0
    assert agent.out == []


def test_log_false_is_no_log_as_ngrok_s_default(env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]) -> None:
    # No terminal here: the inspector cannot open, so the headless lines come, as without --log.
    agent = start(procs, env, "http", str(local[0]), "--log", "false", "--log-format", "json", "--api-port", "0",
                  "--no-record")
    agent.line(lambda l: l.startswith("Forwarding http://"))
    assert agent.stop(signal.SIGINT) == 0
    assert not any("started tunnel" in l for l in agent.out + agent.err)


@pytest.mark.parametrize(("args", "says"), [
    (["--log", "stdout", "--log-format", "yaml"],
     "devtunnel http: argument --log-format: expected logfmt, json, term, not 'yaml' (see: devtunnel http --help)"),
    (["--log", "stdout", "--log-level", "loud"],
     "devtunnel http: argument --log-level: expected debug, info, warn, error, crit, not 'loud' (see: devtunnel http --help)"),
    (["--log", "/nonexistent-dir/ngrok.log"], "devtunnel: --log '/nonexistent-dir/ngrok.log': cannot write there: "
                                               "No such file or directory"),
])
def test_a_bad_log_flag_is_one_line_and_exit_2(env: dict[str, str], args: list[str], says: str) -> None:
    done = subprocess.run([*DEVTUNNEL, "http", "8080", *args, "--api-port", "0"], capture_output=True, text=True,
                          timeout=60, env=env)
    assert (done.returncode, done.stderr, done.stdout) == (2, says + "\n", "")


def test_up_takes_log_stdout_as_http_does(tmp_path: Path) -> None:
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as server:
        port = server.url.rsplit(":", 1)[1]
        (tmp_path / "devtunnel.toml").write_text(f"[tunnels.web]\ntarget = {port}\n")
        up = Proc([*DEVTUNNEL, "up", "--log", "stdout", "--log-format", "json", "--api-port", "0", "--no-record"],
                  {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / ".xdg"), "XDG_STATE_HOME": str(tmp_path / ".state")},
                  cwd=tmp_path)
        try:
            started = json.loads(up.line(lambda l: '"started tunnel"' in l))
            assert started["name"] == "web"
            assert _get(started["url"], "/up").text == "ok"
            assert json.loads(up.line(lambda l: '"join connections"' in l))["path"] == "/up"
        finally:
            assert up.stop(signal.SIGTERM) == 0


# -- the records themselves -----------------------------------------------------------------------------

HOSTILE = 'a "quoted" =\\ value\x1b[31m\nforged lvl=crit msg=x\u00e9'


def test_a_hostile_value_stays_one_escaped_logfmt_value() -> None:
    line = record("started tunnel", [("obj", "tunnels"), ("url", HOSTILE)], now=0)
    assert "\n" not in line and "\x1b" not in line and line.isascii()
    assert logfmt(line)["url"] == HOSTILE
    assert "crit" not in logfmt(line)["lvl"]


def test_a_hostile_value_stays_one_escaped_json_value() -> None:
    line = record("started tunnel", [("obj", "tunnels"), ("url", HOSTILE)], fmt="json", now=0)
    assert "\n" not in line and "\x1b" not in line and line.isascii()
    assert json.loads(line)["url"] == HOSTILE
    assert list(json.loads(line)) == sorted(json.loads(line))  # keys sorted, as ngrok (Go) writes them


def test_plain_values_are_bare_in_logfmt() -> None:
    line = record("started tunnel", [("url", "https://a.example.com"), ("empty", "")], now=0)
    assert line.endswith(' msg="started tunnel" url=https://a.example.com empty=""')
    assert shlex.split(line)[2] == "msg=started tunnel"


def test_devtunnel_s_own_messages_are_records_with_the_network_s_text_escaped() -> None:
    from devtunnel.commands.log_target import NgrokFormatter

    rec = logging.LogRecord("devtunnel.agent", logging.WARNING, __file__, 1, "the relay is going away: %s",
                            ("brb\nForwarding https://evil.example\x1b]0;owned\x07",), None)
    line = NgrokFormatter("json").format(rec)
    assert "\n" not in line and "\x1b" not in line and line.isascii()
    assert json.loads(line)["msg"] == "the relay is going away: brb\nForwarding https://evil.example\x1b]0;owned\x07"
    assert (json.loads(line)["lvl"], json.loads(line)["obj"]) == ("warn", "devtunnel.agent")
    line = NgrokFormatter("logfmt").format(rec)
    assert "\n" not in line and "\x1b" not in line and logfmt(line)["lvl"] == "warn"
