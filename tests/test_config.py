"""devtunnel.toml: the settings tree, its precedence, bad files, ``devtunnel config`` and its wiring."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import tomllib
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.cli import EXIT_TUNNEL_REFUSED, build_parser
from devtunnel.commands.config import resolve_http, resolve_relay
from devtunnel.commands.relay import settings_from_args
from devtunnel.config import (
    AgentSection,
    Settings,
    load,
    set_value,
    to_toml,
    with_flags,
)
from devtunnel.errors import ConfigError
from devtunnel.values.sizes import parse_size
from devtunnel.values.sizes import size_text
from tests.helpers import free_port
from tests.kit.as_user import main_as_user
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, procs  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)



class Places:
    """A home, a user config dir and a project dir, all under tmp_path."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.home = root / "home"
        self.xdg = root / "xdg"
        self.project = root / "project"
        for d in (self.home, self.xdg, self.project):
            d.mkdir()
        self.env = {"HOME": str(self.home), "XDG_CONFIG_HOME": str(self.xdg), "XDG_STATE_HOME": str(root / "state")}

    @property
    def user_file(self) -> Path:
        return self.xdg / "devtunnel" / "devtunnel.toml"

    @property
    def project_file(self) -> Path:
        return self.project / "devtunnel.toml"

    def write_user(self, text: str) -> Path:
        self.user_file.parent.mkdir(parents=True, exist_ok=True)
        self.user_file.write_text(text)
        self.user_file.chmod(0o600)  # as config add-token writes it: a file holding the token is private
        return self.user_file

    def write_project(self, text: str) -> Path:
        self.project_file.write_text(text)
        self.project_file.chmod(0o600)
        return self.project_file

    def load(self, **env: str) -> Settings:
        return load(environ={**self.env, **env}, cwd=self.project)

    def process_env(self, **extra: str) -> dict[str, str]:
        out = {k: v for k, v in os.environ.items() if not k.startswith("DEVTUNNEL_")}
        return {**out, **self.env, **extra}

    def cli(self, *args: str, stdin: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=30, input=stdin,
                              env=self.process_env(**env), cwd=self.project)


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Places:
    made = Places(tmp_path)
    for name, value in made.env.items():  # the store's default path follows the process's XDG_STATE_HOME
        monkeypatch.setenv(name, value)
    return made


# Precedence ---------------------------------------------------------------------------------


def test_without_files_every_setting_is_its_default(places: Places) -> None:
    settings = places.load()
    assert settings.relay.url is None and settings.relay.token is None
    assert settings.agent == AgentSection(api_port=4040, body_cap=10 << 20, host_header="preserve", insecure=False)
    assert settings.store.path == places.root / "state" / "devtunnel" / "captures.db"
    assert settings.relay_server.listen == "127.0.0.1:8000"
    assert settings.tunnels == ()


def test_each_layer_overrides_the_next_and_keeps_the_keys_it_does_not_set(places: Places) -> None:
    places.write_user('[relay]\nurl = "ws://user.example"\ntoken = "user-token"\n[agent]\napi_port = 4001\n')
    places.write_project('[relay]\nurl = "ws://project.example"\n[agent]\nbody_cap = "1mb"\n')
    pointed = places.root / "pointed.toml"
    pointed.write_text('[relay]\nurl = "ws://pointed.example"\n')
    env_file = {"DEVTUNNEL_CONFIG": str(pointed)}
    env_vars = {"DEVTUNNEL_RELAY": "ws://env.example", "DEVTUNNEL_TOKEN": "env-token"}
    flags = {"relay.url": ("--relay", "ws://flag.example")}

    assert with_flags(places.load(**env_file, **env_vars), flags).relay.url == "ws://flag.example"
    assert places.load(**env_file, **env_vars).relay.url == "ws://env.example"
    assert places.load(**env_file).relay.url == "ws://pointed.example"
    assert places.load().relay.url == "ws://project.example"
    places.project_file.unlink()
    assert places.load().relay.url == "ws://user.example"
    places.user_file.unlink()
    assert places.load().relay.url is None


def test_the_body_budget_comes_from_the_file_and_the_flag_wins(places: Places) -> None:
    assert places.load().agent.body_budget == 64 << 20
    places.write_project('[agent]\nbody_budget = "16mb"\n')
    assert places.load().agent.body_budget == 16 << 20
    flags = {"agent.body_budget": ("--body-budget", "200mb")}
    assert with_flags(places.load(), flags).agent.body_budget == 200 << 20


def test_a_higher_layer_changes_only_the_keys_it_names(places: Places) -> None:
    places.write_user('[relay]\nurl = "ws://user.example"\ntoken = "user-token"\n[agent]\napi_port = 4001\n')
    places.write_project('[relay]\nurl = "ws://project.example"\n[agent]\nbody_cap = "1mb"\n')
    settings = places.load()
    assert (settings.relay.url, settings.relay.token) == ("ws://project.example", "user-token")
    assert (settings.agent.api_port, settings.agent.body_cap) == (4001, 1 << 20)
    assert places.load(DEVTUNNEL_TOKEN="env-token").relay.token == "env-token"


def test_devtunnel_db_names_the_store_and_an_empty_variable_counts_as_unset(places: Places) -> None:
    places.write_user('[store]\npath = "~/from-file.db"\n')
    assert places.load().store.path == Path("~/from-file.db").expanduser()
    assert places.load(DEVTUNNEL_DB=str(places.root / "env.db")).store.path == places.root / "env.db"
    assert places.load(DEVTUNNEL_RELAY="").relay.url is None


def test_a_relative_path_in_a_file_is_relative_to_that_files_folder(places: Places) -> None:
    places.write_user('[store]\npath = "captures.db"\n[relay_server]\ntokens_file = "/etc/tokens"\n')
    settings = places.load()
    assert settings.store.path == places.user_file.parent / "captures.db"
    assert settings.relay_server.tokens_file == Path("/etc/tokens")


def test_config_set_stores_a_relative_path_as_seen_from_where_it_ran(places: Places) -> None:
    assert places.cli("config", "set", "store.path", "sub/c.db").returncode == 0
    assert tomllib.loads(places.user_file.read_text()) == {"store": {"path": str(places.project / "sub" / "c.db")}}


def test_a_tunnel_in_the_project_file_replaces_the_user_files_tunnel_of_that_name(places: Places) -> None:
    places.write_user('[tunnels.web]\ntarget = 3000\nhost_header = "rewrite"\n[tunnels.api]\ntarget = "8080"\n')
    places.write_project('[tunnels.web]\ntarget = "localhost:5000"\n')
    settings = places.load()
    web, api = settings.tunnel("web"), settings.tunnel("API")
    assert web is not None and (web.target, web.host_header) == ("localhost:5000", None)
    assert api is not None and api.target == "8080"


def test_flags_that_were_not_given_leave_the_settings_alone() -> None:
    settings = Settings()
    assert with_flags(settings, {"agent.api_port": ("--api-port", None)}) == settings
    assert with_flags(settings, {"agent.api_port": ("--api-port", 0)}).agent.api_port == 0


def test_a_bad_flag_value_names_the_flag() -> None:
    with pytest.raises(ConfigError, match=r"^--body-cap: 'lots' is not a size"):
        with_flags(Settings(), {"agent.body_cap": ("--body-cap", "lots")})


# Bad files ----------------------------------------------------------------------------------

BAD_FILES = [
    pytest.param('[relay]\nurl = "ws://x"\n[agent\n', r":? not valid TOML: .*\(at line 3, column 7\)", id="corrupt"),
    pytest.param('[agent]\n\napi_port = "x"\n', r":3: agent\.api_port: expected a port, got 'x'", id="wrong-type"),
    pytest.param("[agent]\napi_port = 70000\n", r":2: agent\.api_port: expected a port of 0-65535, got 70000", id="port-range"),
    pytest.param("[agent]\nbody_cap = -5\n", r":2: agent\.body_cap: a size cannot be negative", id="negative-size"),
    pytest.param('[store]\nmax_bytes = "-1mb"\n', r":2: store\.max_bytes: a size cannot be negative", id="negative-size-text"),
    pytest.param('[agent]\nbody_cap = "lots"\n', r":2: agent\.body_cap: 'lots' is not a size", id="not-a-size"),
    pytest.param('[agent]\ninsecure = "yes"\n', r":2: agent\.insecure: expected true or false, got 'yes'", id="bool"),
    pytest.param("[agent]\nbody_cap = 1\napi_prot = 1\n", r":3: agent\.api_prot: unknown setting; did you mean agent\.api_port\?", id="unknown-key"),
    pytest.param("[relai]\nurl = 1\n", r":1: relai: unknown setting; did you mean relay\?", id="unknown-section"),
    pytest.param('relay.urll = "ws://x"\n', r":1: relay\.urll: unknown setting; did you mean relay\.url\?", id="unknown-dotted-key"),
    pytest.param('relay = "ws://x"\n', r":1: relay: expected a table \(\[relay\]\), got text \(not shown: it may be a secret\)", id="not-a-table"),
    pytest.param('[relay]\nurl = "ftp://x"\n', r":2: relay\.url: invalid relay URL 'ftp://x'", id="relay-url"),
    pytest.param('[relay]\nurl = "ws://a b"\n', r":2: relay\.url: invalid relay URL 'ws://a b': 'a b' is not a host name",
                 id="relay-url-host"),
    pytest.param("[relay_server]\nhead_timeout = 0\n", r":2: relay_server\.head_timeout: expected more than 0 seconds", id="timeout"),
    pytest.param('[relay_server]\nlisten = "0.0.0.0:99999"\n', r":2: relay_server\.listen: expected HOST:PORT", id="listen"),
    pytest.param('[tunnels.web]\nrelay = "ws://x"\n', r":1: tunnels\.web: target is missing", id="tunnel-without-target"),
    pytest.param('[tunnels.web]\ntarget = "localhost"\n', r":2: tunnels\.web\.target: .*the port is missing", id="tunnel-target"),
    pytest.param('[tunnels.Bad_Name]\ntarget = 1\n', r":1: tunnels\.Bad_Name: not a tunnel name", id="tunnel-name"),
    pytest.param('[tunnels.web]\ntarget = 1\nhost = "x"\n', r":3: tunnels\.web\.host: unknown setting; did you mean tunnels\.web\.host_header\?", id="tunnel-key"),
]


@pytest.mark.parametrize(("text", "message"), BAD_FILES)
def test_a_bad_file_is_one_error_naming_the_file_the_line_and_the_key(places: Places, text: str, message: str) -> None:
    path = places.write_project(text)
    with pytest.raises(ConfigError) as caught:
        places.load()
    assert "\n" not in str(caught.value)
    assert re.fullmatch(re.escape(str(path)) + message + ".*", str(caught.value)), str(caught.value)


@pytest.mark.parametrize(("text", "message"), BAD_FILES[:3])
def test_a_bad_file_stops_every_command_with_exit_2_and_one_line(places: Places, text: str, message: str) -> None:
    path = places.write_user(text)
    for args in (["requests"], ["http", "8080", "--no-tui"], ["relay"], ["config", "show"]):
        done = places.cli(*args)
        assert done.returncode == 2, (args, done.stderr)
        [line] = done.stderr.splitlines()
        assert str(path) in line and "Traceback" not in done.stderr
    assert places.cli("config", "path").returncode == 0  # still tells where the broken file is


def test_a_file_that_cannot_be_read_is_named_with_the_reason(places: Places) -> None:
    places.project_file.mkdir()  # a directory where the file should be: reading fails for root too
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(places.project_file))}: cannot read it \(Is a directory\)$"):
        places.load()


def test_a_file_that_is_not_utf8_is_refused(places: Places) -> None:
    places.project_file.write_bytes(b'[relay]\ntoken = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match=r"not valid TOML: not UTF-8 text at byte 17$"):
        places.load()


def test_devtunnel_config_naming_a_missing_file_is_an_error(places: Places) -> None:
    missing = places.root / "nope.toml"
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(missing))}: no such file \(named by DEVTUNNEL_CONFIG\)$"):
        places.load(DEVTUNNEL_CONFIG=str(missing))


def test_a_bad_environment_variable_is_named(places: Places) -> None:
    with pytest.raises(ConfigError, match=r"^environment variable DEVTUNNEL_RELAY: relay\.url: invalid relay URL 'ftp://x'"):
        places.load(DEVTUNNEL_RELAY="ftp://x")


# Writing ------------------------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=1 << 50))
def test_size_text_reads_back_as_the_same_size(n: int) -> None:
    text = size_text(n)
    assert (parse_size(text) if isinstance(text, str) else text) == n


def test_shown_settings_load_back_as_the_same_settings(places: Places) -> None:
    places.write_user('[relay]\nurl = "wss://t.example.com"\ntoken = "t0ken"\n[agent]\nbody_cap = 123457\n'
                      '[tunnels.web]\ntarget = 3000\nrelay = "ws://other"\n')
    settings = places.load()
    places.user_file.write_text(to_toml(settings, mask_token=False))
    assert places.load() == settings


def test_set_value_refuses_a_bad_value_and_leaves_the_file_as_it_was(places: Places) -> None:
    path = places.write_user('# my relay\n[relay]\nurl = "ws://kept"\n')
    for key, value, message in [
        ("agent.api_port", "x", r"^agent\.api_port: expected a port, got 'x'$"),
        ("agent.body_cap", "-1", r"^agent\.body_cap: a size cannot be negative"),
        ("relay.urll", "ws://x", r"^relay\.urll: unknown setting; did you mean relay\.url\?$"),
        ("tunnels.web.relay", "ws://x", r"tunnels\.web: target is missing"),
        ("relay", "x", r"^relay: keys are SECTION\.KEY, e.g\. relay\.url$"),
    ]:
        with pytest.raises(ConfigError, match=message):
            set_value(path, key, value)
    assert path.read_text() == '# my relay\n[relay]\nurl = "ws://kept"\n'


def test_set_value_refuses_to_rewrite_a_corrupt_file(places: Places) -> None:
    path = places.write_user("[relay\nurl = 1\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        set_value(path, "relay.url", "ws://x")
    assert path.read_text() == "[relay\nurl = 1\n"


# devtunnel config, as a user runs it ----------------------------------------------------------


def test_config_path_lists_the_files_in_the_order_they_are_read(places: Places) -> None:
    places.write_project("")
    pointed = places.root / "pointed.toml"
    done = places.cli("config", "path", DEVTUNNEL_CONFIG=str(pointed))
    assert done.returncode == 0, done.stderr
    rows = [line.split(None, 2) for line in done.stdout.splitlines()[1:]]
    assert rows == [
        ["user", "missing", str(places.user_file)],
        ["project", "found", str(places.project_file)],
        ["DEVTUNNEL_CONFIG", "missing", str(pointed)],
    ]


def test_config_set_writes_the_user_file_and_show_prints_it_back(places: Places) -> None:
    assert places.cli("config", "set", "relay.url", "wss://t.example.com").returncode == 0
    done = places.cli("config", "set", "agent.body_cap", "512k")
    assert done.returncode == 0 and done.stdout == f"saved agent.body_cap in {places.user_file}\n"
    assert tomllib.loads(places.user_file.read_text()) == {"relay": {"url": "wss://t.example.com"},
                                                           "agent": {"body_cap": "512kb"}}
    shown = places.cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    doc = tomllib.loads(shown.stdout)
    assert doc["relay"] == {"url": "wss://t.example.com"}
    assert doc["agent"]["body_cap"] == "512kb" and doc["agent"]["api_port"] == 4040
    assert shown.stdout.startswith(f"# effective settings; files read: {places.user_file}\n")


def test_config_set_of_a_tunnel_the_project_file_defines_says_to_add_project(places: Places) -> None:
    places.write_project('[tunnels.web]\ntarget = "8000"\n')
    done = places.cli("config", "set", "tunnels.web.via", "cloudflared")
    assert done.returncode == 2
    assert done.stderr == (f"devtunnel config: {places.user_file}: tunnels.web: target is missing, e.g. target = \"3000\";"
                           f" tunnels.web is in {places.project_file}: add --project to change it there\n")
    assert not places.user_file.exists()
    assert places.cli("config", "set", "tunnels.web.via", "cloudflared", "--project").returncode == 0
    assert tomllib.loads(places.project_file.read_text())["tunnels"]["web"] == {"target": "8000", "via": "cloudflared"}
    # A tunnel the project file does not define: the error alone, as before.
    other = places.cli("config", "set", "tunnels.api.via", "cloudflared")
    assert other.returncode == 2 and "--project" not in other.stderr


def test_config_set_project_writes_the_project_file_which_wins_over_the_user_file(places: Places) -> None:
    places.cli("config", "set", "agent.api_port", "4001")
    done = places.cli("config", "set", "agent.api_port", "4002", "--project")
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(places.project_file.read_text()) == {"agent": {"api_port": 4002}}
    assert tomllib.loads(places.cli("config", "show").stdout)["agent"]["api_port"] == 4002


def test_config_set_says_when_a_later_file_or_the_environment_hides_what_it_saved(places: Places) -> None:
    places.write_project('[tunnels.web]\ntarget = "8000"\n\n[agent]\napi_port = 4100\n')
    # The project file defines the tunnel whole: a key saved for it in the user file is not used.
    done = places.cli("config", "set", "tunnels.web.target", "9000")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"saved tunnels.web.target in {places.user_file}\n"
    assert done.stderr == (f"devtunnel config: note: {places.project_file} defines [tunnels.web] too (a tunnel is "
                           f"replaced whole), and wins over {places.user_file}: what was saved does not take effect "
                           "here (--project saves it in ./devtunnel.toml)\n")
    assert tomllib.loads(places.cli("config", "show").stdout)["tunnels"]["web"]["target"] == "8000"
    # A key of a section: the same, named.
    done = places.cli("config", "set", "agent.api_port", "4200")
    assert f"note: {places.project_file} sets agent.api_port too, and wins over {places.user_file}" in done.stderr
    # Saved where it wins, or for a key nothing later sets: no note.
    assert places.cli("config", "set", "tunnels.web.target", "9000", "--project").stderr == ""
    assert tomllib.loads(places.cli("config", "show").stdout)["tunnels"]["web"]["target"] == "9000"
    assert places.cli("config", "set", "tunnels.api.target", "9001").stderr == ""
    assert places.cli("config", "set", "agent.body_cap", "1mb").stderr == ""
    # The environment wins over every file.
    done = places.cli("config", "set", "relay.url", "wss://a.example.com", "--project", DEVTUNNEL_RELAY="wss://b.example.com")
    assert done.returncode == 0
    assert done.stderr == ("devtunnel config: note: the environment variable DEVTUNNEL_RELAY is set, and wins over "
                           f"{places.project_file}: what was saved does not take effect here\n")
    done = places.cli("config", "add-token", "tok-1234567890", DEVTUNNEL_TOKEN="other")
    assert "note: the environment variable DEVTUNNEL_TOKEN is set" in done.stderr and "other" not in done.stderr
    # A file named by DEVTUNNEL_CONFIG is read after the project file.
    pointed = places.root / "pointed.toml"
    pointed.write_text('[agent]\nbody_cap = "2mb"\n')
    done = places.cli("config", "set", "agent.body_cap", "3mb", "--project", DEVTUNNEL_CONFIG=str(pointed))
    assert f"note: {pointed} sets agent.body_cap too, and wins over {places.project_file}" in done.stderr


def test_config_import_ngrok_says_which_imported_tunnels_the_project_file_hides(places: Places) -> None:
    places.write_project('[tunnels.web]\ntarget = "8000"\n')
    ngrok = places.root / "ngrok.yml"
    ngrok.write_text('version: "2"\ntunnels:\n  web:\n    proto: http\n    addr: 3000\n  api:\n    proto: http\n    addr: 3001\n')
    done = places.cli("config", "import-ngrok", str(ngrok))
    assert done.returncode == 0, done.stderr
    assert f"note: {places.project_file} defines [tunnels.web] too" in done.stderr
    assert "[tunnels.api]" not in done.stderr


def test_config_set_with_a_bad_value_exits_2_and_writes_nothing(places: Places) -> None:
    done = places.cli("config", "set", "agent.api_port", "x")
    assert done.returncode == 2
    assert done.stderr == "devtunnel config: agent.api_port: expected a port, got 'x'\n"
    assert not places.user_file.exists()


def test_config_add_token_saves_it_readable_only_by_its_owner_and_show_masks_it(places: Places) -> None:
    token = "tok-0123456789-abcdef"
    done = places.cli("config", "add-token", token)
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(places.user_file.read_text()) == {"relay": {"token": token}}
    assert stat.S_IMODE(places.user_file.stat().st_mode) == 0o600
    shown = places.cli("config", "show").stdout
    assert token not in shown
    assert tomllib.loads(shown)["relay"]["token"] == "********cdef"


def test_config_add_token_reads_the_token_from_stdin_when_given_a_dash(places: Places) -> None:
    assert places.cli("config", "add-token", "-", stdin="from-stdin\n").returncode == 0
    assert places.load().relay.token == "from-stdin"
    done = places.cli("config", "add-token", "-", stdin="\n")
    assert (done.returncode, done.stderr) == (2, "devtunnel config: the token is empty\n")


def test_capture_commands_use_the_store_path_from_the_file(places: Places) -> None:
    db = places.root / "elsewhere" / "c.db"
    places.write_project(f'[store]\npath = "{db}"\n')
    done = places.cli("requests")
    assert done.returncode == 0
    assert done.stdout.strip().endswith(f"no capture database at {db})")
    flag_db = places.root / "flag.db"
    assert places.cli("requests", "--db", str(flag_db)).stdout.strip().endswith(f"no capture database at {flag_db})")
    assert places.cli("show", "01M8").stderr.strip().endswith(f"no captures yet at {db}")


# Commands taking their settings ---------------------------------------------------------------


def test_http_flags_win_and_unset_flags_come_from_the_settings(places: Places) -> None:
    places.write_project('[relay]\nurl = "ws://file.example"\ntoken = "file-token"\n'
                         '[agent]\napi_port = 5000\nbody_cap = "1mb"\nhost_header = "rewrite"\ninsecure = true\n'
                         f'[store]\npath = "{places.root / "file.db"}"\n')
    args = build_parser().parse_args(["http", "8080", "--api-port", "6000", "--token", "flag-token"])
    args.settings = places.load()
    out = resolve_http(args)
    assert (out.relay, out.token, out.api_port, out.body_cap) == ("ws://file.example", "flag-token", 6000, str(1 << 20))
    assert (out.host_header, out.insecure, out.db, out.target) == ("rewrite", True, str(places.root / "file.db"), "8080")


def test_http_name_starts_the_tunnel_defined_under_that_name(places: Places) -> None:
    places.write_project('[relay]\nurl = "ws://default.example"\n'
                         '[tunnels.web]\ntarget = "localhost:3000"\nrelay = "ws://web.example"\nhost_header = "rewrite"\n')
    settings = places.load()
    args = build_parser().parse_args(["http", "web"])
    args.settings = settings
    out = resolve_http(args)
    assert (out.target, out.name, out.relay, out.host_header) == ("localhost:3000", "web", "ws://web.example", "rewrite")
    args = build_parser().parse_args(["http", "web", "--relay", "ws://flag.example", "--name", "other", "--host-header", "preserve"])
    args.settings = settings
    out = resolve_http(args)
    assert (out.target, out.name, out.relay, out.host_header) == ("localhost:3000", "other", "ws://flag.example", "preserve")


def test_http_with_a_name_no_file_defines_says_so(places: Places) -> None:
    done = places.cli("http", "web", "--no-tui")
    assert done.returncode == 2  # bad usage
    assert done.stderr.endswith("invalid target 'web': the port is missing; use a port (8080), HOST:PORT (127.0.0.1:8080)"
                                " or a URL (http://localhost:8080); no tunnel named 'web' is defined either"
                                " (devtunnel config show)\n"), done.stderr


def test_relay_takes_its_server_settings_from_relay_server_unless_flags_say_otherwise(places: Places) -> None:
    tokens = places.root / "tokens"
    tokens.write_text("# agents\nalpha\n")
    places.write_project(f'[relay_server]\nlisten = "0.0.0.0:9000"\ndomain = "T.Example.com"\n'
                         f'tokens_file = "{tokens}"\nmax_body = "1mb"\nhead_timeout = 3\n')
    args = build_parser().parse_args(["relay"])
    args.settings = places.load()
    relay = settings_from_args(resolve_relay(args))
    assert (relay.host, relay.port, relay.domain, relay.tokens) == ("0.0.0.0", 9000, "t.example.com", ["alpha"])
    assert (relay.max_body, relay.head_timeout) == (1 << 20, 3.0)
    args = build_parser().parse_args(["relay", "--listen", "127.0.0.1:9001", "--max-body", "0", "--head-timeout", "5"])
    args.settings = places.load()
    relay = settings_from_args(resolve_relay(args))
    assert (relay.port, relay.max_body, relay.head_timeout) == (9001, 0, 5.0)


# End to end: a real relay configured by file, an agent configured by file -----------------------


def _relay_from_file(places: Places, procs: list[Proc], token: str) -> int:
    port = free_port()
    tokens = places.root / "relay-tokens"
    tokens.write_text(f"{token}\n")
    server_file = places.root / "server.toml"
    server_file.write_text(f'[relay_server]\nlisten = "127.0.0.1:{port}"\ntokens_file = "{tokens}"\n')
    relay = Proc([*DEVTUNNEL, "relay"], places.process_env(DEVTUNNEL_CONFIG=str(server_file)))
    procs.append(relay)
    assert relay.line(lambda l: l.startswith("Relay listening")).startswith(f"Relay listening on http://127.0.0.1:{port} ")
    return port


def test_http_connects_to_the_relay_with_the_token_from_the_user_file(
    places: Places, procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    port = _relay_from_file(places, procs, "file-token")
    assert places.cli("config", "set", "relay.url", f"ws://127.0.0.1:{port}").returncode == 0
    assert places.cli("config", "add-token", "file-token").returncode == 0
    agent = Proc([*DEVTUNNEL, "http", str(local[0]), "--no-tui", "--name", "filed", "--api-port", "0", "--no-record"],
                 places.process_env())
    procs.append(agent)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None and match.groups()[1:] == ("filed", str(port), f"http://127.0.0.1:{local[0]}")
    r = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": f"filed.localhost:{port}"}, trust_env=False)
    assert r.status_code == 200
    assert agent.stop() == 0


def test_http_with_a_wrong_token_in_the_file_is_refused_by_the_relay(places: Places, procs: list[Proc]) -> None:
    port = _relay_from_file(places, procs, "right-token")
    places.write_user(f'[relay]\nurl = "ws://127.0.0.1:{port}"\ntoken = "wrong-token"\n')
    agent = Proc([*DEVTUNNEL, "http", "9", "--no-tui", "--api-port", "0", "--no-record"], places.process_env())
    procs.append(agent)
    assert agent.wait(20) == EXIT_TUNNEL_REFUSED
    assert any("refused the token" in line for line in agent.err)


def test_http_name_starts_a_tunnel_defined_in_the_file_through_a_real_relay(
    places: Places, procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    port = _relay_from_file(places, procs, "file-token")
    places.write_user(f'[relay]\nurl = "ws://127.0.0.1:{port}"\ntoken = "file-token"\n'
                      f'[tunnels.payments]\ntarget = {local[0]}\n')
    agent = Proc([*DEVTUNNEL, "http", "payments", "--no-tui", "--api-port", "0", "--no-record"], places.process_env())
    procs.append(agent)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None and match.groups()[1:] == ("payments", str(port), f"http://127.0.0.1:{local[0]}")
    r = httpx.post(f"http://127.0.0.1:{port}/echo", headers={"Host": f"payments.localhost:{port}"}, content=b"hi",
                   trust_env=False)
    assert r.status_code == 200
    assert agent.stop() == 0


# What a devtunnel.toml says reaches the terminal escaped (a cloned project brings its own file) ----


def _hidden(text: str) -> list[str]:
    from devtunnel.values.terminal import needs_escape

    return [ch for ch in text if ch != "\n" and needs_escape(ch)]


def test_config_show_writes_characters_a_terminal_acts_on_or_hides_as_toml_escapes(places: Places) -> None:
    run = "make dev \x1b]0;pwned\x07 \u202eevil \u3164 \x9b31m \u2028"
    places.write_project(f"[tunnels.shop]\ntarget = \"8080\"\nrun = {json.dumps(run)}\n")
    shown = places.cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert not _hidden(shown.stdout), _hidden(shown.stdout)
    assert tomllib.loads(shown.stdout)["tunnels"]["shop"]["run"] == run  # the same value, written visibly


@pytest.mark.parametrize("args", [["config", "show"], ["send", "stripe", "invoice.paid", "--to", "http://127.0.0.1:9"]])
def test_a_config_error_quoting_the_file_is_escaped(places: Places, args: list[str]) -> None:
    places.write_project('[tunnels."bad\\u001b]0;pwned\\u0007\\u009b2J"]\ntarget = "8080"\n')
    done = places.cli(*args)
    assert done.returncode == 2, done.stderr
    assert "bad\\x1b]0;pwned\\x07\\x9b2J" in done.stderr or "bad\\\\x1b]0;pwned\\\\x07\\\\x9b2J" in done.stderr, done.stderr
    assert not _hidden(done.stderr), done.stderr


def test_config_import_ngrok_escapes_what_the_ngrok_file_says(places: Places) -> None:
    ngrok = places.project / "ngrok.yml"
    ngrok.write_text('version: "2"\ntunnels:\n  shop:\n    proto: http\n    addr: "8080"\n'
                     '  "w\\e]0;pwned\\a\\u202e":\n    proto: tcp\n    addr: 22\n')
    done = places.cli("config", "import-ngrok", str(ngrok), "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "skipped w\\x1b]0;pwned\\x07\\u202e: tcp tunnels" in done.stdout, done.stdout
    assert not _hidden(done.stdout), done.stdout


# A folder name from the environment: ESC and BEL (an OSC title), a newline (a line of its own),
# a bidi override and a byte that is not UTF-8.
HOSTILE_DIR = "d\x1b]0;pwned\x07\nforged line\u202e\udcff"
HOSTILE_SHOWN = "d\\x1b]0;pwned\\x07\\nforged line\\u202e\\xff"


@pytest.mark.parametrize(
    ("args", "lines"),
    [(["config", "path"], 4), (["config", "show"], None), (["config", "set", "agent.api_port", "4041"], 1),
     (["config", "add-token", "tok_1"], 1)],
)
def test_every_config_command_prints_paths_from_the_environment_escaped(
        places: Places, args: list[str], lines: int | None) -> None:
    """``XDG_CONFIG_HOME`` and ``DEVTUNNEL_CONFIG`` name folders the user did not necessarily
    choose (a shell rc, a direnv file): ``config`` printed them raw, so they could retitle the
    window or print a line of their own."""
    xdg = places.root / HOSTILE_DIR
    pointed = places.root / HOSTILE_DIR / "pointed.toml"
    pointed.parent.mkdir()
    pointed.write_text("[agent]\napi_port = 4042\n")
    done = subprocess.run([*DEVTUNNEL, *args], capture_output=True, timeout=30, cwd=places.project,
                          env=places.process_env(XDG_CONFIG_HOME=str(xdg), DEVTUNNEL_CONFIG=str(pointed)))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8")  # strict: a raw byte that is not UTF-8 would fail here
    assert not _hidden(out) and b"Traceback" not in done.stderr, out
    assert HOSTILE_SHOWN in out, out
    if lines is not None:
        assert len(out.splitlines()) == lines, out
    else:
        assert tomllib.loads(out)["agent"]["api_port"] == 4042  # the comment line stayed one line


def test_config_show_stays_valid_toml_when_a_path_holds_a_byte_that_is_not_utf8(places: Places) -> None:
    """``DEVTUNNEL_DB`` naming ``d<0xFF>`` came out as ``path = "...d\\udcff..."``, which tomllib
    refuses (not a Unicode scalar value): TOML cannot write such a byte. The line is printed as a
    comment, the byte shown as ``\\xff``, and the rest of the document loads."""
    places.write_project('[relay_server]\ndomain = "t.example"\n')
    db = str(places.root / "d\udcff\u202e" / "c.db")
    done = subprocess.run([*DEVTUNNEL, "config", "show"], capture_output=True, timeout=30, cwd=places.project,
                          env=places.process_env(DEVTUNNEL_DB=db))
    assert done.returncode == 0, done.stderr
    out = done.stdout.decode("utf-8")  # strict
    loaded = tomllib.loads(out)
    assert "path" not in loaded["store"] and loaded["relay_server"]["domain"] == "t.example"
    assert loaded["store"]["max_exchanges"] == 100000  # the lines after it are kept
    (line,) = [x for x in out.splitlines() if "c.db" in x]
    assert line.startswith("# path = ") and "d\\xff\\u202e" in line and "not UTF-8" in line, line
    assert not _hidden(out), out


def test_config_set_refuses_a_value_holding_a_byte_that_is_not_utf8(places: Places) -> None:
    """``config set store.path $'/tmp/d\\xff/c.db'`` ended in a UnicodeEncodeError traceback (a
    byte of the command line that is not UTF-8 becomes a lone surrogate, and a TOML file is UTF-8).
    Now: one line naming the byte, exit 2, and no file written (an existing one is untouched)."""
    bad = str(places.root / "d\udcff" / "c.db")
    done = subprocess.run([*DEVTUNNEL, "config", "set", "store.path", bad], capture_output=True, timeout=30,
                          cwd=places.project, env=places.process_env())
    assert done.returncode == 2, done.stderr
    err = done.stderr.decode("utf-8")
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "the byte 0xff, which is not UTF-8" in err and "not written" in err, err
    assert not places.user_file.exists()
    ok = subprocess.run([*DEVTUNNEL, "config", "set", "store.path", "/tmp/fine.db"], capture_output=True, timeout=30,
                        cwd=places.project, env=places.process_env())
    assert ok.returncode == 0, ok.stderr
    before = places.user_file.read_bytes()
    again = subprocess.run([*DEVTUNNEL, "config", "set", "store.path", bad], capture_output=True, timeout=30,
                           cwd=places.project, env=places.process_env())
    assert again.returncode == 2 and places.user_file.read_bytes() == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop to another user")
def test_a_user_file_in_a_folder_this_user_cannot_search_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # ``sudo -u other devtunnel ...`` keeping HOME: ~/.config of the first user cannot be searched,
    # and looking for the file raised PermissionError out of ``load()`` as a traceback.
    import devtunnel.commands.captures  # noqa: F401 (imported here: the other user may not read every module)
    config = tmp_path / "private" / "devtunnel"  # tmp_path: searchable by its owner only
    config.mkdir(parents=True)
    said, code = main_as_user(65534, ["requests", "--db", "/nonexistent/captures.db"],
                              env={"XDG_CONFIG_HOME": str(tmp_path / "private")})
    assert said.splitlines() == [f"devtunnel: {config / 'devtunnel.toml'}: cannot read it (Permission denied)"]
    assert code == 2


@pytest.mark.parametrize("action", [["set", "relay.url", "wss://tunnel.example.com"], ["add-token", "s3cret"]])
def test_saving_where_xdg_config_home_names_a_file_is_one_line_not_a_traceback(places: Places, action: list[str]) -> None:
    # The failed write's clean-up unlinked its temporary file with missing_ok=True, which lets
    # only "no such file" through: "not a directory" came out as a traceback.
    a_file = places.root / "not-a-folder"
    a_file.write_text("")
    done = places.cli("config", *action, XDG_CONFIG_HOME=str(a_file))
    target = a_file / "devtunnel" / "devtunnel.toml"
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [f"devtunnel config: {target}: cannot write it (Not a directory)"]
