"""The docs' commands stay true: every flag a page gives a ``devtunnel`` command is one its --help lists."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = {"relay", "http", "requests", "show", "export", "replay", "diff", "agent", "up", "init", "logs", "inspect",
            "send", "help", "config path", "config show", "config set", "config add-token", "config add-authtoken",
            "config import-ngrok", "config check", "config edit", "start"}
_USE = re.compile(r"devtunnel ((?:config )?[a-z][a-z-]*)([^`\n|#]*)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def documented() -> list[tuple[str, str, str]]:
    """(page, command, flag) for each flag written after ``devtunnel COMMAND`` in a page."""
    found: set[tuple[str, str, str]] = set()
    for page in PAGES:
        for command, rest in _USE.findall(page.read_text()):
            if command in COMMANDS:
                found.update((page.name, command, flag) for flag in _FLAG.findall(rest))
    return sorted(found)


@functools.cache
def help_of(command: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTUNNEL_")}
    done = subprocess.run([DEVTUNNEL, *command.split(), "--help"], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_pages_give_flags_to_commands() -> None:
    assert len(documented()) > 50  # the pattern still finds what the pages write


@pytest.mark.parametrize(("page", "command", "flag"), documented())
def test_a_flag_the_docs_give_a_command_is_in_its_help(page: str, command: str, flag: str) -> None:
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_of(command)), f"{page}: devtunnel {command} {flag}"


# --- every command line the docs give parses -------------------------------------------------------

_FENCE = re.compile(r"^```(\w*)")
_PROGRAM = re.compile(r"""(?:[A-Z_]+=(?:"[^"]*"|'[^']*'|[^\s"']+) +)*((?:[\w.$/-]*/)?devtunnel(?: .*)?)$""")


def command_lines() -> list[tuple[str, int, str]]:
    """(page, line, command) for each ``devtunnel ...`` run in a ``sh`` block, or after ``$ `` in an output block.

    A line ending in ``\\`` goes on with the next; ``a && b`` and ``a; b`` are two commands.
    """
    found = []
    for page in PAGES:
        lang: str | None = None
        held = ""
        for number, line in enumerate(page.read_text().splitlines(), 1):
            fence = _FENCE.match(line)
            if fence:
                lang = None if lang is not None else fence.group(1) or "-"
                continue
            if lang not in ("sh", "-"):
                continue
            line, held = f"{held} {line.strip()}" if held else line, ""
            if line.endswith("\\"):
                held = line[:-1]
                continue
            if lang == "-":
                if not line.startswith("$ "):
                    continue
                line = line[2:]
            for part in re.split(r"\s(?:&&|;)\s", line):
                run = _PROGRAM.match(part.strip())
                if run:
                    found.append((page.name, number, run.group(1)))
    return found


def test_the_pages_give_command_lines() -> None:
    assert len(command_lines()) > 50  # the pattern still finds what the pages write


@pytest.mark.parametrize(("page", "line", "command"), command_lines())
def test_a_command_line_in_the_docs_parses(page: str, line: int, command: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    from devtunnel.cli import build_parser

    command = re.sub(r"\$\([^)]*\)", "WORD", command)  # $(openssl rand -hex 8): one word in the shell
    words = shlex.split(command, comments=True)
    words = words[1:words.index("|")] if "|" in words else words[1:]
    try:
        _, extra = build_parser().parse_known_args(words)
    except SystemExit as exc:
        if exc.code == 0:  # --version, --help
            return
        pytest.fail(f"{page}:{line}: {command}: exit {exc.code}: {capsys.readouterr().err.strip()}")
    assert not extra, f"{page}:{line}: {command}: unrecognized {extra}"


def _parsers(parser: argparse.ArgumentParser, name: str = "devtunnel") -> list[tuple[str, argparse.ArgumentParser]]:
    found = [(name, parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                found += _parsers(subparser, f"{name} {sub}")
    return found


def help_examples() -> list[tuple[str, str]]:
    """(command, example) for each ``devtunnel ...`` line in the examples of a command's --help."""
    from devtunnel.cli import build_parser

    found = []
    for name, parser in _parsers(build_parser()):
        held = ""
        for line in (parser.epilog or "").splitlines():
            line, held = f"{held} {line.strip()}" if held else line, ""
            if line.endswith("\\"):
                held = line[:-1]
                continue
            example = re.match(r"\s+(?:[A-Z_]+=\S+ )*(devtunnel\b.*?)(?:\s{2,}.*)?$", line)  # then 2 spaces and what it does
            if example:
                found += [(name, part) for part in re.split(r"\s&&\s", example.group(1))]
    return found


def test_the_help_texts_give_examples() -> None:
    assert len(help_examples()) > 40


@pytest.mark.parametrize(("command", "example"), help_examples())
def test_an_example_in_a_help_text_parses(command: str, example: str, capsys: pytest.CaptureFixture[str]) -> None:
    from devtunnel.cli import build_parser

    words = shlex.split(example, comments=True)
    words = words[1:words.index("|")] if "|" in words else words[1:]
    try:
        _, extra = build_parser().parse_known_args(words)
    except SystemExit as exc:
        assert exc.code == 0, f"{command} --help: {example}: {capsys.readouterr().err.strip()}"
        return
    assert not extra, f"{command} --help: {example}: unrecognized {extra}"


# --- and the reverse: what the code takes, a page tells -------------------------------------------

def _docs_text() -> str:
    return "\n".join(page.read_text() for page in PAGES)


def _options(parser: argparse.ArgumentParser, name: str = "") -> list[tuple[str, str]]:
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, subparser in action.choices.items():
                found += _options(subparser, f"{name} {sub}".strip())
        else:
            found += [(name, o) for o in action.option_strings if o.startswith("--") and o != "--help"]
    return found


def test_every_flag_of_every_command_is_in_the_docs() -> None:
    from devtunnel.cli import build_parser

    text = _docs_text()
    missing = [f"devtunnel {c} {f}" for c, f in _options(build_parser())
               if not re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)]
    assert not missing, f"flags no page mentions: {missing}"


_KEY_ROW = re.compile(r"^\| `([a-z_]+(?:\.[A-Za-z_*]+)+)` \|", re.M)


def _settings_keys() -> set[str]:
    """Every key of the settings tree, spelled as config.md's tables spell them."""
    from devtunnel.config.settings import Settings, TunnelSection, WebhookSection

    tables: dict[str, tuple[str, type]] = {"tunnels": ("tunnels.NAME", TunnelSection),
                                           "webhooks": ("webhooks.PROVIDER", WebhookSection)}
    keys: set[str] = set()
    for section in dataclasses.fields(Settings):
        if section.name not in tables and not dataclasses.is_dataclass(getattr(Settings(), section.name)):
            continue  # not a section of the file (``given``: which keys were set)
        prefix, cls = tables.get(section.name, (section.name, type(getattr(Settings(), section.name))))
        keys.update(f"{prefix}.{f.name}" for f in dataclasses.fields(cls)
                    if f.name not in ("name", "origin", "webhooks", "secrets"))
    return keys


def test_every_config_key_in_config_md_exists_and_every_key_is_there() -> None:
    page = (ROOT / "docs" / "config.md").read_text()
    documented = set(_KEY_ROW.findall(page))
    keys = _settings_keys()
    # secrets are written `secret` or `secrets`; a tunnel's own webhook tables take the same keys
    real = keys | {"webhooks.PROVIDER.secret", "webhooks.PROVIDER.secrets", "tunnels.NAME.webhooks.PROVIDER.*"}
    assert documented - real == set(), "keys config.md lists that the settings tree lacks"
    custom = set(re.findall(r"^([a-z_]+) = ", page, re.M))  # the [webhooks.acme] example names the scheme keys
    undocumented = {k for k in keys if k not in documented and not (k.startswith("webhooks.") and k.split(".")[-1] in custom)}
    assert undocumented == set(), "settings config.md does not list"


def test_every_filter_field_and_code_is_in_filters_md() -> None:
    from devtunnel.capture.filters import CODES, FIELDS, FLAGS

    page = (ROOT / "docs" / "filters.md").read_text()
    missing = [word for word in [*FIELDS, *FLAGS, *CODES] if f"`{word}" not in page]
    assert not missing, f"filter words filters.md does not give: {missing}"


def _headed_routes(page: str) -> set[tuple[str, str]]:
    """(method, path) for each ``METHOD[|METHOD] PATH[?query]`` in backquotes in a heading of ``page``."""
    found = set()
    for heading in re.findall(r"^#+ (.*)$", page, re.M):
        for methods, path in re.findall(r"`(?:([A-Z|]+) )?(/api[^`?\s]*)[^`]*`", heading):
            for method in methods.split("|") if methods else ["WebSocket"] if "(WebSocket)" in heading else []:
                found.add((method, path))
    return found


class _Idle:
    """What ``create_app`` asks of a service before any request."""

    def subscribe(self, _callback: object) -> None:
        return None


def test_every_api_route_is_in_api_md() -> None:
    from starlette.routing import Route, WebSocketRoute

    from devtunnel.api.app import create_app

    documented = _headed_routes((ROOT / "docs" / "api.md").read_text())
    routes = create_app(_Idle()).routes  # type: ignore[arg-type]
    sockets = {r.path for r in routes if isinstance(r, WebSocketRoute)}
    served = set()
    for route in routes:
        if isinstance(route, WebSocketRoute):
            served.add(("WebSocket", route.path))
        elif isinstance(route, Route) and route.path not in sockets:  # a plain GET of a WebSocket's route says how to connect
            served.update((method, route.path) for method in (route.methods or set()) - {"HEAD"})
    assert served - documented == set(), "routes api.md has no heading for"
    assert documented - served == set(), "routes api.md gives that the agent does not serve"


@pytest.mark.parametrize(("command", "says"), [("http", "0 disables"), ("up", "0 disables"), ("agent", "0: any free port")])
def test_the_help_of_api_port_says_what_0_does_as_config_md_does(command: str, says: str) -> None:
    assert says in " ".join(help_of(command).split()), f"devtunnel {command} --help: --api-port"
    assert f"`{command}" in (ROOT / "docs" / "config.md").read_text().split("| `agent.api_port` |")[1].split("\n")[0]


# --- links and paths ----------------------------------------------------------------------------

def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def links() -> list[tuple[str, str]]:
    """(page, target) of each relative Markdown link in the pages."""
    return sorted({(page.name, target) for page in PAGES
                   for target in re.findall(r"\]\(([^)\s:]+)\)", page.read_text())})


@pytest.mark.parametrize(("page", "target"), links())
def test_a_link_between_pages_leads_to_a_page_and_a_heading(page: str, target: str) -> None:
    base = ROOT if page == "README.md" else ROOT / "docs"
    path, _, anchor = target.partition("#")
    found = (base / path).resolve() if path else base / page
    assert found.is_file(), f"{page}: {target}"
    if anchor:
        headings = re.findall(r"^#+ (.*)$", found.read_text(), re.M)
        assert anchor in {_slug(h) for h in headings}, f"{page}: {target}: no such heading"


def test_a_file_of_the_project_a_page_names_exists() -> None:
    named = {p for page in PAGES for p in re.findall(r"`((?:devtunnel|tests|bench|docs|snapshots)/[\w./-]+)`", page.read_text())}
    assert len(named) > 10
    assert sorted(p for p in named if not (ROOT / p).exists()) == []


def config_flags() -> list[tuple[str, str, str]]:
    """(key, command, flag) for each flag the Keys table of config.md gives a setting (``http --relay``)."""
    found = []
    for row in re.findall(r"^\| `([a-z_.A-Z]+)` \|.*\| ([^|]*) \|$", (ROOT / "docs" / "config.md").read_text(), re.M):
        key, flags = row
        command = "http"
        for word in re.findall(r"`([^`]+)`", flags):
            parts = word.split()
            if parts[0] in COMMANDS:
                command, parts = parts[0], parts[1:]
            found += [(key, command, p) for p in parts if p.startswith("--")]
    return found


def test_the_keys_table_gives_flags() -> None:
    assert len(config_flags()) > 25


@pytest.mark.parametrize(("key", "command", "flag"), config_flags())
def test_a_flag_config_md_gives_a_setting_is_in_its_commands_help(key: str, command: str, flag: str) -> None:
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_of(command)), f"config.md {key}: {command} {flag}"


def test_every_export_format_is_in_export_md_the_api_page_and_the_help() -> None:
    from devtunnel.export import EXPORTERS

    table = re.findall(r"^\| `(\w+)` \|", (ROOT / "docs" / "export.md").read_text(), re.M)
    api = (ROOT / "docs" / "api.md").read_text().split("/export?format=")[1].split("###")[0]
    for fmt in EXPORTERS:
        assert fmt in table, f"export.md has no row for {fmt}"
        assert f"`{fmt}`" in api, f"api.md's export route does not give {fmt}"
        assert fmt in help_of("export"), f"devtunnel export --help does not give {fmt}"


def test_a_relay_example_with_tokens_says_where_it_listens() -> None:
    """A relay for agents elsewhere listens beyond loopback: without --listen it would serve 127.0.0.1 only."""
    examples = [e for _, e in help_examples()] + [c for _, _, c in command_lines()]
    relays = [e for e in examples if re.match(r"(?:\S*/)?devtunnel relay\b", e) and "--token" in e]
    assert relays
    assert [e for e in relays if "--listen" not in e] == []


def test_every_error_kind_is_in_filters_md() -> None:
    from typing import get_args

    from devtunnel.capture.model import ErrorKind

    row = next(line for line in (ROOT / "docs" / "filters.md").read_text().splitlines() if line.startswith("| `error` |"))
    assert [kind for kind in get_args(ErrorKind) if f"`{kind}`" not in row and f"`error:{kind}`" not in row] == []


def test_every_rule_action_has_a_row_and_its_keys_in_policy_md() -> None:
    from devtunnel.rules import ACTIONS

    page = (ROOT / "docs" / "policy.md").read_text()
    rows = set(re.findall(r"^\| `([a-z-]+)` \|", page, re.M))
    keys = set(re.findall(r"^- `([a-z-]+)`:", page, re.M))
    assert [a for a in ACTIONS if a not in rows or a not in keys] == []


def test_every_key_of_a_rule_is_in_its_entry_of_policy_md() -> None:
    from devtunnel.rules.model import _KEYS

    page = (ROOT / "docs" / "policy.md").read_text()
    missing = []
    for action, keys in _KEYS.items():
        entry = re.search(rf"^- `{action}`:(.*?)(?=^- `|^#)", page, re.M | re.S)
        assert entry, action
        missing += [f"{action}.{key}" for key in keys if not re.search(rf"`{key}(?:[`.])", entry.group(1))]
    assert missing == []


def test_the_json_summary_export_md_shows_has_the_keys_requests_json_prints() -> None:
    import json

    from devtunnel.capture.model import Exchange, Request

    page = (ROOT / "docs" / "export.md").read_text().split("### JSON from the command line")[1]
    shown = json.loads(page.split("```json")[1].split("```")[0])
    exchange = Exchange(id="01M8V2JDA09PAEG7EYM73KXD0Q", tunnel="payments", started_at=0.0, request=Request())
    assert list(shown) == list(exchange.summary())


def test_the_exchange_api_md_shows_has_the_keys_the_api_answers() -> None:
    import json

    from devtunnel.capture.model import Exchange, Request, Response
    from devtunnel.export.agent_json import capture_json

    page = (ROOT / "docs" / "api.md").read_text().split("### `GET /api/requests/http/{id}`")[1]
    shown = json.loads(page.split("```json")[1].split("```")[0])
    exchange = Exchange(id="01M8V2JDA09PAEG7EYM73KXD0Q", tunnel="payments", started_at=0.0, request=Request(),
                        response=Response(status=200))
    assert sorted(shown) == sorted(capture_json(exchange))


def test_replay_of_a_request_a_rule_answered_asks_for_to_as_policy_md_says(tmp_path: Path) -> None:
    """policy.md: `r` on such a row sends it to the tunnel's target; ``devtunnel replay`` asks for ``--to``."""
    from devtunnel.capture.model import RuleMark
    from devtunnel.capture.store import Store
    from tests.kit.exchanges import make_exchange, make_response

    assert "`devtunnel replay` asks\nfor `--to`" in (ROOT / "docs" / "policy.md").read_text()
    db = tmp_path / "c.db"
    store = Store(db)
    answered = make_exchange("POST", b"/webhooks/stripe", response=make_response(500, [], b""), target_url="",
                             rule=RuleMark(1, "respond"))
    store.put_many([answered])
    store.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTUNNEL_")}
    done = subprocess.run([DEVTUNNEL, "replay", answered.id, "--db", str(db)], capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"devtunnel: exchange {answered.id} has no target URL to replay to (a rule at the relay answered it, "
        "so it reached no local service): give a destination URL with --to URL"]


def test_a_page_a_help_text_names_exists() -> None:
    from devtunnel.cli import build_parser

    named = {page for _, parser in _parsers(build_parser()) for page in re.findall(r"docs/[\w-]+\.md", parser.format_help())}
    assert named
    assert sorted(page for page in named if not (ROOT / page).is_file()) == []


def test_every_frame_type_flag_and_error_code_is_in_protocol_md_with_its_number() -> None:
    from devtunnel.protocol.connection import ErrorCode
    from devtunnel.protocol.frames import Flag, FrameType

    page = (ROOT / "docs" / "protocol.md").read_text()
    rows = {name: int(number, 0) for number, name in re.findall(r"^\| (0x[0-9A-Fa-f]+|\d+) \| ([A-Z_]+) \|", page, re.M)}
    assert {n.name: int(n.value) for n in [*FrameType, *Flag, *ErrorCode] if n.name} == rows


def config_defaults() -> list[tuple[str, str]]:
    """(key, default) for each row of config.md's Keys table whose default is a value (not "unset", a path ...)."""
    found = []
    for key, default in re.findall(r"^\| `([a-z_]+\.[a-z_]+)` \|[^|]*\| `([^`]+)`", (ROOT / "docs" / "config.md").read_text(), re.M):
        if not default.startswith("$"):  # store.path: where $XDG_STATE_HOME says
            found.append((key, default))
    return found


def test_the_keys_table_gives_defaults() -> None:
    assert len(config_defaults()) > 15


@pytest.mark.parametrize(("key", "default"), config_defaults())
def test_a_default_config_md_gives_is_the_settings_default(key: str, default: str) -> None:
    import tomllib

    from devtunnel.config import to_toml
    from devtunnel.config.settings import Settings

    section, name = key.split(".")
    defaults = tomllib.loads(to_toml(Settings()))
    assert defaults[section].get(name, "unset") == tomllib.loads(f"v = {default}")["v"], f"config.md: {key}"
