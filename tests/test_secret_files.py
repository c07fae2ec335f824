"""Secrets on a command line or in a file other users can read: said, never shown.

A flag whose value is a secret says in its help that other users see it in ``ps``, and where
the value can live instead. A settings file that holds secrets in clear (a basic-auth password,
the value of a request header a rule adds) while its group or everyone can read it is used,
with one note on stderr naming the file, the kind of secret and ``chmod 600 FILE``: a project's
devtunnel.toml is often 0644, and refusing it would stop every command. Real files on disk, read
by the loaders the commands use, and the CLI as a child process.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from devtunnel.config import load
from devtunnel.ngrok_config import load_ngrok_files
from devtunnel.rules import load_rules_file
from tests.kit.procs import DEVTUNNEL, Proc

PASSWORD = "Pw-0123456789abcdef"
TOKEN = "Tok-fedcba9876543210"
HASHED = "sha256:" + hashlib.sha256(b"open sesame").hexdigest()
SAID = "other users see it in `ps`"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"), COLUMNS="400", **extra)
    return env


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=30, env=_env(tmp_path),
                          stdin=subprocess.DEVNULL, cwd=tmp_path)


def _file(path: Path, text: str, mode: int) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _notes(err: str) -> list[str]:
    return [line for line in err.splitlines() if "note:" in line]


def _help_of(text: str, argument: str) -> str:
    """The help of one argument (``--flag`` or a positional's METAVAR), joined into one line:
    from its line to the next argument's (argparse puts a long one's text below it)."""
    blocks = re.split(r"\n  (?=\S)", text)
    (said,) = [block for block in blocks if block.startswith(argument + " ")]
    return " ".join(said.split())


@pytest.mark.parametrize(("command", "argument", "instead"), [
    (["http"], "--request-header-add", "a headers rule (request.set) in devtunnel.toml or a --rules FILE"),
    (["config", "add-token"], "TOKEN", "prefer -"),
    # Those that said it already, kept saying it.
    (["http"], "--token", "--token-file"),
    (["http"], "--basic-auth", "sha256:HEX"),
    (["start"], "--authtoken", "devtunnel config add-token -"),
    (["relay"], "--token", "--tokens-file"),
])
def test_each_argument_that_takes_a_secret_says_in_its_help_that_ps_shows_it(
        tmp_path: Path, command: list[str], argument: str, instead: str) -> None:
    done = subprocess.run([*DEVTUNNEL, *command, "--help"], capture_output=True, text=True, timeout=30,
                          env=_env(tmp_path))
    assert done.returncode == 0, done
    said = _help_of(done.stdout, argument)
    assert SAID in said and instead in said, said


def test_a_response_header_added_is_no_secret_and_its_flag_says_nothing_of_ps(tmp_path: Path) -> None:
    # Every client of the tunnel gets it.
    done = _run(tmp_path, "http", "--help")
    for flag in ("--response-header-add", "--request-header-remove"):
        assert SAID not in _help_of(done.stdout, flag)


# -- devtunnel.toml ------------------------------------------------------------------------------

_PROJECT = f"""\
[tunnels.web]
target = 3000

[[tunnels.web.rules]]
action = "basic-auth"
users = ["admin:{PASSWORD}", "ops:{HASHED}"]

[[tunnels.web.rules]]
action = "headers"
request.set = {{ Authorization = "Bearer {TOKEN}" }}
"""


def _load(tmp_path: Path) -> None:
    load(environ={"HOME": str(tmp_path / "home"), "XDG_CONFIG_HOME": str(tmp_path / "config")}, cwd=tmp_path)


def test_a_project_file_other_users_can_read_with_a_password_and_a_header_value_is_said_once_and_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = _file(tmp_path / "devtunnel.toml", _PROJECT, 0o644)
    _load(tmp_path)
    _load(tmp_path)  # read again by the same process (config check reads the files twice): said once
    err = capsys.readouterr().err
    assert _notes(err) == [
        f"devtunnel: note: {project} holds basic-auth passwords in clear and values of request headers to add, and "
        f"other users can read it (mode 644): run chmod 600 {project}, or write the passwords as sha256:HEX "
        "(docs/policy.md)"], err
    assert PASSWORD not in err and TOKEN not in err


@pytest.mark.parametrize(("mode", "said"), [(0o640, "mode 640"), (0o604, "mode 604"), (0o444, "mode 444")])
def test_a_group_or_everyone_reading_it_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               mode: int, said: str) -> None:
    _file(tmp_path / "devtunnel.toml", _PROJECT, mode)
    _load(tmp_path)
    (note,) = _notes(capsys.readouterr().err)
    assert f"({said})" in note


@pytest.mark.parametrize(("text", "mode"), [
    (_PROJECT, 0o600),
    (_PROJECT, 0o400),
    # No secret in clear: a hashed password, a response header (every client gets it), a header removed.
    (f'[tunnels.web]\ntarget = 3000\n[[tunnels.web.rules]]\naction = "basic-auth"\nusers = ["ops:{HASHED}"]\n', 0o644),
    ('[tunnels.web]\ntarget = 3000\n[[tunnels.web.rules]]\naction = "headers"\nresponse.set = { X-Env = "dev" }\n'
     'request.remove = ["Cookie"]\n', 0o644),
    ('[tunnels.web]\ntarget = 3000\n[agent]\nbody_cap = "1mb"\n', 0o644),
])
def test_a_private_file_or_one_without_a_secret_in_clear_says_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, mode: int) -> None:
    _file(tmp_path / "devtunnel.toml", text, mode)
    _load(tmp_path)
    assert capsys.readouterr().err == ""


def test_the_user_file_is_said_as_the_project_file_is(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "config" / "devtunnel").mkdir(parents=True)
    user = _file(tmp_path / "config" / "devtunnel" / "devtunnel.toml", _PROJECT, 0o644)
    _load(tmp_path)
    (note,) = _notes(capsys.readouterr().err)
    assert note.startswith(f"devtunnel: note: {user} holds ")


# -- rules files, users files --------------------------------------------------------------------


def test_a_rules_file_other_users_can_read_is_said_and_its_rules_are_used(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rules = _file(tmp_path / "rules.toml", f'[[rules]]\naction = "headers"\nrequest.set = {{ X-Api-Key = "{TOKEN}" }}\n',
                  0o640)
    (rule,) = load_rules_file(rules)
    assert rule.request_set == (("X-Api-Key", TOKEN),)
    err = capsys.readouterr().err
    assert _notes(err) == [f"devtunnel: note: {rules} holds values of request headers to add, and other users can "
                           f"read it (mode 640): run chmod 600 {rules}"], err
    os.chmod(rules, 0o600)
    private = _file(tmp_path / "private.toml", rules.read_text(), 0o600)
    load_rules_file(private)
    assert capsys.readouterr().err == ""


def test_a_users_file_is_said_by_its_own_name(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    users = _file(tmp_path / "users.txt", f"# the team\nadmin:{PASSWORD}\n", 0o644)
    hashed = _file(tmp_path / "hashed.txt", f"ops:{HASHED}\n", 0o644)
    rules = _file(tmp_path / "rules.toml", '[[rules]]\naction = "basic-auth"\nmatch = "path:/admin"\nusers_file = "users.txt"\n'
                                          '[[rules]]\naction = "basic-auth"\nmatch = "path:/ops"\nusers_file = "hashed.txt"\n',
                  0o644)
    load_rules_file(rules)
    err = capsys.readouterr().err
    # The rules file names a file and holds no password itself; the hashed users file holds none in clear.
    assert _notes(err) == [f"devtunnel: note: {users} holds basic-auth passwords in clear, and other users can read "
                           f"it (mode 644): run chmod 600 {users}, or write the passwords as sha256:HEX "
                           "(docs/policy.md)"], err
    assert PASSWORD not in err and str(hashed) not in err


def test_a_path_with_a_space_is_quoted_in_the_command_to_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "my rules").mkdir()
    rules = _file(tmp_path / "my rules" / "r.toml", f'[[rules]]\naction = "basic-auth"\nusers = ["a:{PASSWORD}"]\n', 0o644)
    load_rules_file(rules)
    assert f"run chmod 600 '{rules}'," in capsys.readouterr().err


# -- ngrok.yml -----------------------------------------------------------------------------------

_NGROK = f"""\
version: "2"
authtoken: not-said-here
tunnels:
  web:
    proto: http
    addr: 8080
    basic_auth: ["me:{PASSWORD}"]
  api:
    proto: http
    addr: 8081
    request_header:
      add: ["Authorization: Bearer {TOKEN}"]
  sso:
    proto: http
    addr: 8082
    auth: "admin:{PASSWORD}"
    oauth: {{provider: google}}
"""


def test_an_ngrok_yml_other_users_can_read_is_said_with_what_it_holds(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ngrok = _file(tmp_path / "ngrok.yml", _NGROK, 0o644)
    result = load_ngrok_files([ngrok, ngrok])
    assert [t.name for t in result.tunnels] == ["web", "api"]
    err = capsys.readouterr().err
    # ngrok takes no hash: no other fix than the mode.
    assert _notes(err) == [f"devtunnel: note: {ngrok} holds basic-auth passwords in clear and values of request "
                           f"headers to add, and other users can read it (mode 644): run chmod 600 {ngrok}"], err
    assert PASSWORD not in err and TOKEN not in err


@pytest.mark.parametrize(("text", "mode"), [
    (_NGROK, 0o600),
    ('version: "2"\nauthtoken: abc\ntunnels:\n  web:\n    proto: http\n    addr: 8080\n'
     '    response_header:\n      add: ["X-Env: dev"]\n    request_header:\n      remove: ["Cookie"]\n', 0o644),
])
def test_a_private_ngrok_yml_or_one_without_such_a_secret_says_nothing(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, mode: int) -> None:
    load_ngrok_files([_file(tmp_path / "ngrok.yml", text, mode)])
    assert capsys.readouterr().err == ""


# -- through the CLI -----------------------------------------------------------------------------


def test_config_show_and_check_say_it_once_on_stderr_and_go_on(tmp_path: Path) -> None:
    project = _file(tmp_path / "devtunnel.toml", _PROJECT, 0o644)
    for args in (["config", "show"], ["config", "check"]):
        done = _run(tmp_path, *args)
        assert done.returncode == 0, (args, done)
        assert _notes(done.stderr) == [
            f"devtunnel: note: {project} holds basic-auth passwords in clear and values of request headers to add, "
            f"and other users can read it (mode 644): run chmod 600 {project}, or write the passwords as sha256:HEX "
            "(docs/policy.md)"], (args, done)
        assert done.stderr.count("\n") == 1, (args, done)
        assert PASSWORD not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr, (args, done)
    assert "[tunnels.web]" in _run(tmp_path, "config", "show").stdout
    os.chmod(project, 0o600)
    for args in (["config", "show"], ["config", "check"]):
        done = _run(tmp_path, *args)
        assert done.returncode == 0 and done.stderr == "", (args, done)


def test_config_check_of_an_ngrok_yml_says_it(tmp_path: Path) -> None:
    ngrok = _file(tmp_path / "ngrok.yml", _NGROK, 0o640)
    done = _run(tmp_path, "config", "check", "--config", str(ngrok))
    assert done.returncode == 0 and f"Valid configuration file at {ngrok}" in done.stdout, done
    assert _notes(done.stderr) == [f"devtunnel: note: {ngrok} holds basic-auth passwords in clear and values of "
                                   f"request headers to add, and other users can read it (mode 640): run chmod 600 "
                                   f"{ngrok}"], done
    assert PASSWORD not in done.stdout + done.stderr and TOKEN not in done.stdout + done.stderr


def test_a_relay_given_a_rules_file_other_users_can_read_says_it_and_serves(tmp_path: Path) -> None:
    rules = _file(tmp_path / "relay-rules.toml", f'[[rules]]\naction = "basic-auth"\nusers = ["team:{PASSWORD}"]\n',
                  0o644)
    proc = Proc([*DEVTUNNEL, "relay", "--listen", "127.0.0.1:0", "--rules", str(rules)], _env(tmp_path), cwd=tmp_path)
    try:
        proc.line(lambda line: line.startswith("Relay listening on http://127.0.0.1:"))
        note = proc.line(lambda line: "note:" in line, lines="err")
    finally:
        assert proc.stop() == 0
    assert note == (f"devtunnel: note: {rules} holds basic-auth passwords in clear, and other users can read it "
                    f"(mode 644): run chmod 600 {rules}, or write the passwords as sha256:HEX (docs/policy.md)")
    assert PASSWORD not in "\n".join(proc.out + proc.err)
