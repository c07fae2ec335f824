"""``devtunnel init`` and ``devtunnel up``, as the user runs them: subprocesses in a project folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest

from devtunnel.commands.init import guess_app, render, tunnel_name
from tests.helpers import free_port, process_alive, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc
from tests.kit.servers import Reply, http_server

APP = Path(__file__).parent / "net" / "app_fixture.py"


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> Proc:
    # Config and captures in the test's folder: never the user's own store or files.
    return Proc([*DEVTUNNEL, *args], {**os.environ, "PYTHONUNBUFFERED": "1", "XDG_CONFIG_HOME": str(cwd / ".xdg"),
                                     "XDG_STATE_HOME": str(cwd / ".xdg-state"), **(env or {})}, cwd=cwd)


# -- init ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("files", "run", "port", "source"), [
    ({"manage.py": "#!/usr/bin/env python\n"}, "python manage.py runserver 8000", 8000, "manage.py"),
    ({"pyproject.toml": '[project]\nname = "x"\ndependencies = ["fastapi>=0.110", "uvicorn[standard]"]\n',
      "main.py": "from fastapi import FastAPI\napp = FastAPI()\n"},
     "uvicorn main:app --port 8000 --reload", 8000, "pyproject.toml"),
    ({"pyproject.toml": '[project]\nname = "x"\ndependencies = ["fastapi"]\n',
      "app/main.py": "from fastapi import FastAPI\napp = FastAPI()\n"},
     "uvicorn app.main:app --port 8000 --reload", 8000, "pyproject.toml"),
    # The app is not always called app: uvicorn needs the name the module gives it.
    ({"requirements.txt": "fastapi\n", "main.py": "import fastapi\n\napi: fastapi.FastAPI = fastapi.FastAPI(title='x')\n"},
     "uvicorn main:api --port 8000 --reload", 8000, "requirements.txt"),
    ({"requirements.txt": "fastapi\n", "server.py": "from fastapi import FastAPI\nserver = FastAPI()\n"},
     "uvicorn server:server --port 8000 --reload", 8000, "requirements.txt"),
    # A src layout, and a package named after the project: uvicorn imports them as their import path says.
    ({"requirements.txt": "fastapi\n", "src/shop/__init__.py": "", "src/shop/main.py": "import fastapi\napp = fastapi.FastAPI()\n"},
     "uvicorn shop.main:app --app-dir src --port 8000 --reload", 8000, "requirements.txt"),
    ({"requirements.txt": "fastapi\n", "src/main.py": "from fastapi import FastAPI\nweb = FastAPI()\n"},
     "uvicorn main:web --app-dir src --port 8000 --reload", 8000, "requirements.txt"),
    ({"requirements.txt": "fastapi\n", "shop/__init__.py": "", "shop/api.py": "from fastapi import FastAPI\napp = FastAPI()\n"},
     "uvicorn shop.api:app --port 8000 --reload", 8000, "requirements.txt"),
    ({"requirements.txt": "Flask==3.0\n"}, "flask run --port 5000 --reload", 5000, "requirements.txt"),
    ({"pyproject.toml": '[tool.poetry.dependencies]\npython = "^3.12"\ndjango = "^5"\n'},
     "python manage.py runserver 8000", 8000, "pyproject.toml"),
    ({"package.json": '{"scripts": {"dev": "vite", "start": "node server.js"}}'}, "npm run dev", 5173,
     "package.json scripts.dev"),
    ({"package.json": '{"scripts": {"start": "node server.js"}}', "yarn.lock": ""}, "yarn start", 3000,
     "package.json scripts.start"),
    ({"package.json": '{"scripts": {"dev": "next dev"}}', "pnpm-lock.yaml": ""}, "pnpm run dev", 3000,
     "package.json scripts.dev"),
    ({"package.json": "{not json"}, None, 8000, ""),
    ({"pyproject.toml": "not = [toml"}, None, 8000, ""),
    ({}, None, 8000, ""),
])
def test_init_guesses_the_run_command(tmp_path: Path, files: dict[str, str], run: str | None, port: int,
                                      source: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    guess = guess_app(tmp_path)
    assert (guess.run, guess.port, guess.source) == (run, port, source)
    doc = tomllib.loads(render("web", guess))  # the file is valid TOML whatever the guess
    assert doc["tunnels"]["web"]["target"] == str(port)
    assert doc["tunnels"]["web"].get("run") == run


def test_a_command_with_quotes_is_written_as_valid_toml() -> None:
    from devtunnel.commands.init import Guess

    text = render("web", Guess('sh -c "echo \\"hi\\"" \\ x', 8000, "here"))
    assert tomllib.loads(text)["tunnels"]["web"]["run"] == 'sh -c "echo \\"hi\\"" \\ x'


@pytest.mark.parametrize(("folder", "name"), [("My App", "my-app"), ("___", "app"), ("shop_API.v2", "shop-api-v2")])
def test_the_tunnel_is_named_after_the_folder(tmp_path: Path, folder: str, name: str) -> None:
    assert tunnel_name(tmp_path / folder) == name


def test_init_writes_a_file_config_show_accepts_and_never_overwrites(tmp_path: Path) -> None:
    project = tmp_path / "payments"
    project.mkdir()
    (project / "manage.py").write_text("")
    init = _run(["init"], project)
    assert init.wait() == 0, init.err
    assert "tunnel payments -> 8000" in init.out[0]
    text = (project / "devtunnel.toml").read_text()
    assert text.startswith("# devtunnel.toml")
    show = _run(["config", "show"], project)
    assert show.wait() == 0, show.err
    shown = tomllib.loads("\n".join(show.out))
    assert shown["tunnels"]["payments"] == {"target": "8000", "run": "python manage.py runserver 8000", "hold": "30s"}

    (project / "devtunnel.toml").write_text("# mine\n")
    again = _run(["init"], project)
    assert again.wait() == 2
    assert len(again.err) == 1 and "already exists" in again.err[0]
    assert (project / "devtunnel.toml").read_text() == "# mine\n"


# -- config keys ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("line", "message"), [
    ('run = ""', "tunnels.web.run: expected a command line"),
    ("run = 3", "tunnels.web.run: expected a command line"),
    ('health = "healthz"', "tunnels.web.health: expected a path on the target"),
    ('health = "/a b"', "tunnels.web.health: expected a path without spaces"),
    ('hold = "forever"', "tunnels.web.hold: expected a duration such as 30s"),
    ("hold = -1", "tunnels.web.hold: expected a duration"),
    ("hold = true", "tunnels.web.hold: expected a duration"),
])
def test_bad_app_keys_are_one_line_naming_the_key(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "devtunnel.toml").write_text(f'[tunnels.web]\ntarget = 8000\n{line}\n')
    show = _run(["config", "show"], tmp_path)
    assert show.wait() == 2
    assert len(show.err) == 1 and message in show.err[0], show.err


def test_config_set_takes_the_app_keys(tmp_path: Path) -> None:
    for key, value in (("target", "8000"), ("run", "python app.py"), ("health", "/healthz"), ("hold", "1m30s")):
        proc = _run(["config", "set", f"tunnels.web.{key}", value, "--project"], tmp_path)
        assert proc.wait() == 0, proc.err
    doc = tomllib.loads((tmp_path / "devtunnel.toml").read_text())
    assert doc["tunnels"]["web"]["run"] == "python app.py" and doc["tunnels"]["web"]["health"] == "/healthz"
    show = _run(["config", "show"], tmp_path)
    assert show.wait() == 0
    assert tomllib.loads("\n".join(show.out))["tunnels"]["web"]["hold"] == "1m30s"


# -- up -----------------------------------------------------------------------------------------------

def _project(tmp_path: Path) -> tuple[Path, int, int]:
    web, api = free_port(), free_port()
    (tmp_path / "devtunnel.toml").write_text(f"""\
[tunnels.web]
target = {web}
run = "{sys.executable} {APP} {web}"
health = "/healthz"
hold = "10s"

[tunnels.api]
target = {api}
run = "{sys.executable} {APP} {api} --exit-after 2"
hold = "10s"

[tunnels.spare]
target = 1
""")
    return tmp_path, web, api


def test_up_starts_the_named_tunnels_with_their_apps_in_one_agent(tmp_path: Path) -> None:
    project, web, api = _project(tmp_path)
    api_port = free_port()
    up = _run(["up", "web", "api", "--no-tui", "--api-port", str(api_port), "--db", str(tmp_path / "c.db")], project)
    try:
        lines = [up.line(lambda l, p=p: FORWARDING.match(l) is not None and f":{p}" in l) for p in (web, api)]
        names = [FORWARDING.match(l).group(2) for l in lines]  # type: ignore[union-attr]
        assert names == ["web", "api"]
        relay = FORWARDING.match(lines[0]).group(3)  # type: ignore[union-attr]
        assert relay == FORWARDING.match(lines[1]).group(3)  # type: ignore[union-attr]  # one embedded relay
        up.line(lambda l: l.startswith("API "))
        tunnels = lambda: {t["name"]: t for t in httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels").json()["tunnels"]}
        assert set(tunnels()) == {"web", "api"}  # spare was not named
        wait_for(lambda: all(t["app"]["state"] == "ready" for t in tunnels().values()), what="both apps ready")
        assert tunnels()["web"]["app"]["health"] == "/healthz"
        with httpx.Client(timeout=20) as client:
            for i in range(5):  # api's app exits after every 2nd request: held, never lost
                response = client.get(f"http://127.0.0.1:{relay}/x{i}", headers={"Host": f"api.localhost:{relay}"})
                assert response.status_code == 200, (response.text, up.out[-20:], up.err[-20:])
            assert client.get(f"http://127.0.0.1:{relay}/w", headers={"Host": f"web.localhost:{relay}"}).status_code == 200
        assert tunnels()["api"]["app"]["restarts"] >= 2
        # Several tunnels in one agent: each request's line names its tunnel, after the id.
        request_line = re.compile(r"^\d\d:\d\d:\d\d  \w{13}  (\w+)  GET     (/\S+)  200  ")
        lines = [up.line(lambda l, path=path: f"GET     {path}  200" in l) for path in ("/x4", "/w")]
        assert [request_line.match(line).groups() for line in lines] == [("api", "/x4"), ("web", "/w")]  # type: ignore[union-attr]
        pids = [t["app"]["pid"] for t in tunnels().values()]
    finally:
        code = up.stop(signal.SIGTERM)
    assert code == 0
    wait_for(lambda: not any(os.path.exists(f"/proc/{pid}") and process_alive(pid) for pid in pids if pid),
             what="the apps stopped with devtunnel")



def test_a_tunnel_with_record_false_is_forwarded_and_logged_but_not_recorded(tmp_path: Path) -> None:
    """ngrok's `inspect: false`, imported as `record = false`, was left out: the tunnel recorded everything."""
    with http_server(lambda request: Reply(200, [("Content-Type", "text/plain")], b"ok")) as server:
        port = server.url.rsplit(":", 1)[1]
        (tmp_path / "devtunnel.toml").write_text(
            f"[tunnels.quiet]\ntarget = {port}\nrecord = false\n\n[tunnels.loud]\ntarget = {port}\n")
        db = tmp_path / "c.db"
        up = _run(["up", "--no-tui", "--api-port", "0", "--db", str(db)], tmp_path)
        try:
            relay = FORWARDING.match(up.line(lambda l: FORWARDING.match(l) is not None)).group(3)  # type: ignore[union-attr]
            with httpx.Client(timeout=20, trust_env=False) as client:
                for name in ("quiet", "loud"):
                    answer = client.get(f"http://127.0.0.1:{relay}/{name}", headers={"Host": f"{name}.localhost:{relay}"})
                    assert answer.status_code == 200
            up.line(lambda l: "quiet  GET     /quiet  200" in l)  # logged all the same
            up.line(lambda l: "loud   GET     /loud  200" in l)
        finally:
            assert up.stop(signal.SIGTERM) == 0
        alone = _run(["http", "quiet", "--no-tui", "--api-port", "0", "--db", str(db)], tmp_path)
        try:
            relay = FORWARDING.match(alone.line(lambda l: FORWARDING.match(l) is not None)).group(3)  # type: ignore[union-attr]
            answer = httpx.get(f"http://127.0.0.1:{relay}/alone", headers={"Host": f"quiet.localhost:{relay}"},
                               trust_env=False, timeout=20)
            assert answer.status_code == 200
            alone.line(lambda l: "GET     /alone  200" in l)
        finally:
            assert alone.stop(signal.SIGTERM) == 0
    listed = subprocess.run([*DEVTUNNEL, "requests", "--db", str(db), "--json"], capture_output=True, text=True,
                            timeout=60)
    assert listed.returncode == 0, listed.stderr
    assert [(r["tunnel"], r["path"]) for r in json.loads(listed.stdout)] == [("loud", "/loud")]


def test_up_without_a_file_or_with_an_unknown_name_says_so(tmp_path: Path) -> None:
    none = _run(["up", "--no-tui", "--api-port", "0"], tmp_path)
    assert none.wait() == 2
    assert "no tunnels are defined: run devtunnel init" in none.err[0]
    project, _, _ = _project(tmp_path)
    unknown = _run(["up", "shop", "--no-tui"], project)
    assert unknown.wait() == 2
    assert unknown.err == ["devtunnel: no tunnel named 'shop' is defined (defined: web, api, spare)"]


def test_health_without_run_is_refused(tmp_path: Path) -> None:
    (tmp_path / "devtunnel.toml").write_text('[tunnels.web]\ntarget = 8000\nhealth = "/healthz"\n')
    up = _run(["up", "--no-tui", "--api-port", "0"], tmp_path)
    assert up.wait() == 2
    assert up.err == ["devtunnel: tunnels.web.health needs tunnels.web.run: it tells when the app devtunnel runs is ready"]
    http = _run(["http", "web", "--no-tui", "--api-port", "0"], tmp_path)
    assert http.wait() == 2
    assert "health needs run in devtunnel.toml" in http.err[0]


def test_http_name_takes_run_health_hold_from_the_file_and_flags_win(tmp_path: Path) -> None:
    project, web, _ = _project(tmp_path)
    api_port = free_port()
    proc = _run(["http", "web", "--hold", "2s", "--no-tui", "--api-port", str(api_port), "--db", str(tmp_path / "c.db")],
                project)
    try:
        proc.line(lambda l: l.startswith("API "))
        [tunnel] = httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels").json()["tunnels"]
        assert tunnel["app"]["command"].endswith(f"{APP} {web}")
        assert (tunnel["app"]["health"], tunnel["app"]["hold"]) == ("/healthz", 2.0)
    finally:
        assert proc.stop(signal.SIGTERM) == 0


def test_the_inspectors_agent_gets_the_app_settings(tmp_path: Path) -> None:
    import argparse

    from devtunnel.commands.inspect import http_agent_argv, up_agent_argv

    common = dict(api_port=4040, db=str(tmp_path / "c.db"), relay=None, token=None, port=5555, no_record=False)
    http = http_agent_argv(argparse.Namespace(target="8000", name="shop", host_header="preserve", body_cap="10mb",
                                              body_budget="64mb", insecure=False, run="uvicorn app:app --reload",
                                              health="/healthz", hold=30.0, **common))()
    assert http[http.index("--body-budget") + 1] == "64mb"
    assert http[http.index("--run") + 1] == "uvicorn app:app --reload"
    assert http[http.index("--health") + 1] == "/healthz" and http[http.index("--hold") + 1] == "30"
    up = up_agent_argv(argparse.Namespace(**common), ["web", "api"])()
    assert up[up.index("up"):up.index("up") + 4] == ["up", "web", "api", "--no-tui"]
    assert up[-2:] == ["--port", "5555"]
