"""Where devtunnel keeps its files: the XDG base directory variables, set, unset, empty or relative."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from devtunnel.values import paths
from tests.kit.as_user import main_as_user


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    return tmp_path / "home"


def test_an_absolute_value_is_the_base(home: Path) -> None:
    env = {"XDG_STATE_HOME": "/srv/state", "XDG_CONFIG_HOME": "/srv/config"}
    assert paths.state_home(env) == Path("/srv/state")
    assert paths.config_home(env) == Path("/srv/config")
    assert paths.state_dir(env) == Path("/srv/state/devtunnel")
    assert paths.config_dir(env) == Path("/srv/config/devtunnel")


def test_unset_falls_back_to_the_home_directory(home: Path) -> None:
    assert paths.state_dir({}) == home / ".local" / "state" / "devtunnel"
    assert paths.config_dir({}) == home / ".config" / "devtunnel"


@pytest.mark.parametrize("value", ["", "state", "./state", "~/state", "../state"])
def test_an_empty_or_relative_value_is_ignored(home: Path, value: str) -> None:
    # The spec: these paths must be absolute; a relative one is invalid and is to be ignored.
    env = {"XDG_STATE_HOME": value, "XDG_CONFIG_HOME": value}
    assert paths.state_dir(env) == home / ".local" / "state" / "devtunnel"
    assert paths.config_dir(env) == home / ".config" / "devtunnel"


def test_each_variable_is_read_on_its_own(home: Path) -> None:
    env = {"XDG_STATE_HOME": "/srv/state", "XDG_CONFIG_HOME": "relative"}
    assert paths.state_dir(env) == Path("/srv/state/devtunnel")
    assert paths.config_dir(env) == home / ".config" / "devtunnel"


def test_the_files_live_in_the_state_directory(home: Path) -> None:
    env = {"XDG_STATE_HOME": "/srv/state"}
    state = Path("/srv/state/devtunnel")
    assert paths.db_path(env) == state / "captures.db"
    assert paths.ports_file(env) == state / "ports.json"
    assert paths.agent_log(env) == state / "agent.log"
    assert paths.filter_history(env) == state / "filter_history"


def test_without_a_mapping_the_process_environment_is_read(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert paths.db_path() == home / ".local" / "state" / "devtunnel" / "captures.db"
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    monkeypatch.setenv("XDG_CONFIG_HOME", "/srv/config")
    assert paths.db_path() == Path("/srv/state/devtunnel/captures.db")
    assert paths.config_dir() == Path("/srv/config/devtunnel")
    monkeypatch.setenv("XDG_STATE_HOME", "relative")
    assert paths.db_path() == home / ".local" / "state" / "devtunnel" / "captures.db"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to become a user id with no home")
def test_with_no_home_at_all_nothing_is_written_in_the_current_folder() -> None:
    # HOME unset and a user id without an entry in /etc/passwd: expanduser("~") gives "~" back,
    # and `devtunnel config set` (like the capture store) made ./~/.config/devtunnel/ here.
    import devtunnel.commands.config  # noqa: F401 (imported here: the other user may not read every module)

    with tempfile.TemporaryDirectory() as folder:  # in /tmp: pytest's tmp_path is root's alone
        work = Path(folder)
        work.chmod(0o777)
        said, code = _as_a_user_with_no_home(work, ["config", "set", "relay.url", "wss://tunnel.example.com"])
        assert list(work.iterdir()) == []
    assert said.splitlines() == [
        "devtunnel config: /nonexistent/.config/devtunnel/devtunnel.toml: cannot write it (Permission denied)"]
    assert code == 2


def _as_a_user_with_no_home(work: Path, argv: list[str]) -> tuple[str, int]:
    """``devtunnel ARGV`` run in a child process as user id 54321 (no passwd entry), HOME unset, in ``work``."""
    unset: dict[str, str | None] = dict.fromkeys(("HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME", "DEVTUNNEL_CONFIG"))
    return main_as_user(54321, argv, cwd=work, env=unset)


def test_with_no_home_the_folders_are_under_nonexistent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os.path, "expanduser", lambda path: path)  # what it does with no HOME and no passwd entry
    assert paths.state_dir({}) == Path("/nonexistent/.local/state/devtunnel")
    assert paths.config_dir({}) == Path("/nonexistent/.config/devtunnel")
