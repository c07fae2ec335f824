"""Where devtunnel keeps its files: the XDG base directory variables, set, unset, empty or relative."""

from __future__ import annotations

from pathlib import Path

import pytest

from devtunnel.values import paths


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
