"""``devtunnel config check`` and ``config edit``, as ngrok's ``config check`` and ``config edit`` are used.

Before: both only said which devtunnel commands stand in for them (exit 2).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.kit.procs import DEVTUNNEL


def _cli(root: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``devtunnel ARGS`` in ``root/project`` with its user file under ``root``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_")) and k not in ("VISUAL", "EDITOR")}
    project = root / "project"
    project.mkdir(exist_ok=True)
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=60, cwd=project,
                          env={**base, "HOME": str(root), "XDG_CONFIG_HOME": str(root / ".config"),
                               "XDG_STATE_HOME": str(root / ".state"), **env}, stdin=subprocess.DEVNULL)


def test_a_valid_file_is_said_in_ngrok_s_words(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "devtunnel.toml").write_text('[agent]\napi_port = 4041\n\n[tunnels.web]\ntarget = 3000\n')
    done = _cli(tmp_path, "config", "check")
    assert (done.returncode, done.stdout, done.stderr) == (
        0, f"Valid configuration file at {tmp_path}/project/devtunnel.toml\n", "")


def test_each_problem_is_said_with_its_file_line_and_key(tmp_path: Path) -> None:
    (tmp_path / "project").mkdir()
    path = tmp_path / "project" / "devtunnel.toml"
    path.write_text('[agent]\napi_port = "x"\napi_prot = 3\n\n[tunnels.web]\ntarget = 3000\nhost_header = "bad"\n'
                    'hold = "zz"\n\n[tunnels.api]\nrun = "uvicorn app:app"\n\n[relay]\nurl = "ftp://x"\n')
    done = _cli(tmp_path, "config", "check")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"devtunnel config: {path}:2: agent.api_port: expected a port, got 'x'",
        f"devtunnel config: {path}:3: agent.api_prot: unknown setting; did you mean agent.api_port?",
        f"devtunnel config: {path}:7: tunnels.web.host_header: expected one of 'preserve', 'rewrite', got 'bad'",
        f"devtunnel config: {path}:8: tunnels.web.hold: expected a duration such as 30s, 500ms or 2m, got 'zz'",
        f"devtunnel config: {path}:10: tunnels.api: target is missing, e.g. target = \"3000\"",
        f"devtunnel config: {path}:14: relay.url: invalid relay URL 'ftp://x': use ws://, wss://, http:// or https://",
    ]


def test_a_health_without_run_is_said_as_up_refuses_it(tmp_path: Path) -> None:
    """``up`` refuses a tunnel whose health has no run: ``config check`` says so too, with file, line and key.

    Before: the file was "valid" for ``config check``, and ``up`` then refused it.
    """
    (tmp_path / "project").mkdir()
    path = tmp_path / "project" / "devtunnel.toml"
    path.write_text('[tunnels.web]\ntarget = 3000\nhealth = "/healthz"\n\n'
                    '[tunnels.api]\ntarget = 3001\nhold = "30s"\n\n'  # hold without run: requests wait for the port
                    '[tunnels.app]\ntarget = 3002\nrun = "uvicorn app:app"\nhealth = "/healthz"\nvia = "nowhere"\n\n'
                    '[tunnels.bad]\nhealth = "/ready"\nhost_header = "x"\n')
    done = _cli(tmp_path, "config", "check")
    assert done.returncode == 2 and done.stdout == ""
    why = "it tells when the app devtunnel runs is ready"
    lines = done.stderr.splitlines()
    assert lines[0] == f"devtunnel config: {path}:3: tunnels.web.health: needs tunnels.web.run: {why}"
    assert [line for line in lines if "needs" in line] == [
        f"devtunnel config: {path}:3: tunnels.web.health: needs tunnels.web.run: {why}",
        f"devtunnel config: {path}:16: tunnels.bad.health: needs tunnels.bad.run: {why}",
    ]  # app's health has its run, whatever its via says; api's hold needs none
    assert any(":13: tunnels.app.via:" in line for line in lines) and any(":17: tunnels.bad.host_header:" in line for line in lines)
    up = subprocess.run([*DEVTUNNEL, "up", "web", "--no-tui", "--api-port", "0"], capture_output=True, text=True,
                        timeout=60, cwd=tmp_path / "project", stdin=subprocess.DEVNULL,
                        env={**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / ".config"),
                             "XDG_STATE_HOME": str(tmp_path / ".state")})
    assert up.returncode == 2  # up refuses the file's other problems first, as before
    path.write_text('[tunnels.web]\ntarget = 3000\nhealth = "/healthz"\n')
    done = _cli(tmp_path, "config", "check")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == f"devtunnel config: {path}:3: tunnels.web.health: needs tunnels.web.run: {why}\n"
    path.write_text('[tunnels.web]\ntarget = 3000\nrun = "uvicorn app:app"\nhealth = "/healthz"\nhold = "30s"\n')
    done = _cli(tmp_path, "config", "check")
    assert (done.returncode, done.stderr) == (0, "")


def test_an_invalid_file_exits_2_as_up_exits_on_it_and_as_the_readme_says(tmp_path: Path) -> None:
    """Exit status 2 is "bad usage or config file" (README, ``exit_codes.EXIT_USAGE``).

    Before: ``config check`` exited 1 on the file ``up`` refused with 2."""
    (tmp_path / "project").mkdir()
    (tmp_path / "project" / "devtunnel.toml").write_text('[tunnels.web]\ntarget = 3000\nhost_header = "bad"\n')
    check = _cli(tmp_path, "config", "check")
    up = _cli(tmp_path, "up", "web", "--no-tui", "--api-port", "0")
    assert (check.returncode, up.returncode) == (2, 2), (check.stderr, up.stderr)
    assert "tunnels.web.host_header" in check.stderr and "tunnels.web.host_header" in up.stderr


def test_every_file_read_is_checked_and_none_is_said(tmp_path: Path) -> None:
    none = _cli(tmp_path, "config", "check")
    assert none.returncode == 1 and none.stdout == ""
    assert none.stderr.startswith("devtunnel config: no devtunnel.toml to check: none at ")
    (tmp_path / ".config" / "devtunnel").mkdir(parents=True)
    (tmp_path / ".config" / "devtunnel" / "devtunnel.toml").write_text('[relay]\nurl = "wss://t.example.com"\n')
    (tmp_path / "project" / "devtunnel.toml").write_text("[tunnels.web\n")
    done = _cli(tmp_path, "config", "check")
    assert done.returncode == 2
    assert done.stdout == f"Valid configuration file at {tmp_path}/.config/devtunnel/devtunnel.toml\n"
    assert done.stderr.startswith(f"devtunnel config: {tmp_path}/project/devtunnel.toml: not valid TOML: ")


def test_config_names_an_ngrok_yml_checked_as_start_reads_it(tmp_path: Path) -> None:
    good = tmp_path / "ngrok.yml"
    good.write_text("version: 2\nauthtoken: x\ntunnels:\n  web:\n    addr: 8080\n  sso:\n    addr: 8081\n"
                    "    oauth: {provider: google}\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 2\ntunnels:\n  web:\n    addr: 1\n  web:\n    addr: 2\n")
    done = _cli(tmp_path, "config", "check", "--config", str(good))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.splitlines() == [f"Valid configuration file at {good}",
                                        "not started: sso: it has OAuth, which devtunnel cannot enforce yet: "
                                        "importing it would expose the service without it"]
    done = _cli(tmp_path, "config", "check", "--config", str(good), "--config", str(bad))
    assert done.returncode == 2
    assert done.stderr == f"devtunnel config: {bad}: not valid YAML (line 5, column 3): 'web' is given twice in the same mapping\n"


EDITOR = """\
import sys
path = sys.argv[1]
text = open(path).read()
open(path, "w").write(text + {addition!r})
"""


def _editor(tmp_path: Path, addition: str) -> str:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR.format(addition=addition))
    return f"{sys.executable} {script}"


def test_edit_writes_the_template_opens_the_editor_and_checks_the_result(tmp_path: Path) -> None:
    done = _cli(tmp_path, "config", "edit", EDITOR=_editor(tmp_path, "\n[tunnels.edited]\ntarget = 4000\n"))
    path = tmp_path / "project" / "devtunnel.toml"
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"wrote {path} from devtunnel init's template",
                                        f"Valid configuration file at {path}"]
    tunnels = tomllib.loads(path.read_text())["tunnels"]
    assert set(tunnels) == {"project", "edited"}  # init's tunnel, named after the folder, and the edit
    # Again: the file is kept, edited again; VISUAL wins over EDITOR; what the edit broke is said.
    done = _cli(tmp_path, "config", "edit", VISUAL=_editor(tmp_path, '\n[agent]\nbody_cap = "lots"\n'),
                EDITOR="false")
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith(f"devtunnel config: {path}:") and "agent.body_cap" in done.stderr
    assert "[tunnels.edited]" in path.read_text()


@pytest.mark.parametrize(("env", "says"), [
    ({}, "devtunnel config: no editor is set (VISUAL or EDITOR): open {path} in yours\n"),
    ({"EDITOR": "no-such-editor-here -w"}, "devtunnel config: the editor 'no-such-editor-here -w' ($EDITOR) cannot be "
                                          "run (No such file or directory): open {path} in yours\n"),
])
def test_edit_without_an_editor_says_which_file(tmp_path: Path, env: dict[str, str], says: str) -> None:
    done = _cli(tmp_path, "config", "edit", **env)
    path = tmp_path / "project" / "devtunnel.toml"
    assert done.returncode == 1
    assert done.stderr == says.format(path=path)
    assert path.is_file()  # written from the template, for the user's editor
