"""The command line's own words: help for every command, ``devtunnel help TOPIC``, bad usage exits 2 in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devtunnel.capture.filters import FILTER_HELP
from devtunnel.exit_codes import EXIT_USAGE, HELP_TABLE

DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")
COMMANDS = ["relay", "http", "requests", "show", "export", "replay", "diff", "agent", "inspect", "config", "help"]


def run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               COLUMNS="100")
    for name in ("DEVTUNNEL_RELAY", "DEVTUNNEL_TOKEN", "DEVTUNNEL_DB", "DEVTUNNEL_CONFIG"):
        env.pop(name, None)
    return subprocess.run([DEVTUNNEL, *args], capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path,
                          stdin=subprocess.DEVNULL)


def description(help_text: str) -> str:
    """The paragraph between the usage block and the first argument section."""
    body = help_text.split("\n\n", 1)[1]
    first = body.split("\n\n", 1)[0]
    return "" if first.startswith(("positional arguments:", "options:")) else first


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_says_what_it_does_in_its_own_help(command: str, tmp_path: Path) -> None:
    done = run(command, "--help", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(description(done.stdout)) > 30, done.stdout


@pytest.mark.parametrize("action", ["path", "show", "set", "add-token", "add-authtoken", "import-ngrok"])
def test_every_config_action_says_what_it_does_in_its_own_help(action: str, tmp_path: Path) -> None:
    """``devtunnel config show --help`` printed only its usage line."""
    done = run("config", action, "--help", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(description(done.stdout)) > 30, done.stdout


def test_the_main_help_lists_every_command_with_a_line_and_the_exit_statuses(tmp_path: Path) -> None:
    done = run("--help", tmp_path=tmp_path)
    assert done.returncode == 0
    for command in COMMANDS:
        assert re.search(rf"^    {command} +\S", done.stdout, re.MULTILINE), command
    assert HELP_TABLE in done.stdout


def test_diff_help_explains_both_ids_and_side(tmp_path: Path) -> None:
    text = run("diff", "--help", tmp_path=tmp_path).stdout
    assert re.search(r"^  ID1 +the first exchange", text, re.MULTILINE), text
    assert re.search(r"^  ID2 +the second exchange", text, re.MULTILINE), text
    assert re.search(r"--side \{request,response,both\}\n +compare only the requests", text), text


def test_export_help_names_every_format_the_registry_has(tmp_path: Path) -> None:
    """--format's help said "curl, har, raw or httpie": pytest, documented in docs/webhooks.md, was missing."""
    from devtunnel.export import EXPORTERS

    done = run("export", "--help", tmp_path=tmp_path)
    assert done.returncode == 0
    format_help = " ".join(done.stdout.split("--format FORMAT, -F FORMAT", 1)[1].split("--filter EXPR", 1)[0].split())
    assert [name for name in sorted(EXPORTERS) if name not in format_help] == []


def test_requests_help_points_at_a_reference_the_installed_package_has(tmp_path: Path) -> None:
    text = run("requests", "--help", tmp_path=tmp_path).stdout
    assert "docs/filters.md" not in text
    assert "devtunnel help filters" in text


def test_help_filters_prints_every_filter_from_the_filter_classes(tmp_path: Path) -> None:
    done = run("help", "filters", tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    flat = " ".join(done.stdout.split())
    for syntax, text in FILTER_HELP:
        assert syntax in done.stdout
        assert " ".join(text.split()) in flat
    assert all(len(line) <= 100 for line in done.stdout.splitlines())


def test_help_of_a_command_is_its_own_help(tmp_path: Path) -> None:
    assert run("help", "replay", tmp_path=tmp_path).stdout == run("replay", "--help", tmp_path=tmp_path).stdout
    assert run("help", tmp_path=tmp_path).stdout == run("--help", tmp_path=tmp_path).stdout


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["help", "nope"], "no help on 'nope'"),
        (["http", "99999"], "port 99999 is not between 1 and 65535"),
        (["http", "0"], "port 0 is not between 1 and 65535"),
        (["http", "8080", "--api-port", "70000"], "--api-port: expected a port number of 0-65535, not '70000'"),
        (["http", "8080", "--port", "-1"], "--port: expected a port number of 0-65535, not '-1'"),
        (["http", "8080", "--port", "\u0668\u0660"], "--port: expected a port number of 0-65535"),  # Arabic-Indic 80
        # str.isdigit() takes "²", which int() refuses: these were ValueError tracebacks.
        (["http", "\u00b2"], "invalid target '\u00b2': the port is missing"),
        (["http", "localhost:\u00b2"], "invalid target 'localhost:\u00b2': port '\u00b2' is not a number"),
        (["relay", "--listen", "\u00b2"], "--listen '\u00b2': expected HOST:PORT"),
        (["http", "8080", "--name", "No Spaces"], "is not a valid DNS label"),
        (["http", "8080", "--relay", "ftp://relay"], "invalid relay URL"),
        (["http", "8080", "--body-cap", "lots"], "'lots' is not a size"),
        (["http", "8080", "--host-header", "nope"], "invalid choice: 'nope'"),
        (["agent", "--local-timeout", "-3"], "--local-timeout: expected a positive number of seconds"),
        (["relay", "--listen", "nowhere"], "--listen 'nowhere'"),
        (["relay", "--head-timeout", "0"], "--head-timeout: expected a positive number of seconds"),
        (["requests", "--limit", "-1"], "--limit/-n: expected a whole number of 0 or more"),
        (["requests", "--filter", "status:>>"], "invalid filter"),
        (["show"], "the following arguments are required: ID"),
        (["diff", "ID1"], "the following arguments are required: ID2"),
        (["diff", "A", "B", "--side", "left"], "argument --side: invalid choice: 'left'"),
        (["nonsense"], "invalid choice: 'nonsense'"),
        (["requests", "--bogus"], "unrecognized arguments: --bogus"),
        # URLs urlsplit cannot split (or whose port it refuses) ended in a ValueError traceback.
        (["relay", "--public-url", "http://[bad"], "--public-url 'http://[bad': not a valid URL (Invalid IPv6 URL)"),
        (["relay", "--public-url", "https://t.example:99999"], "--public-url 'https://t.example:99999': the port is not a number of 0-65535"),
        (["send", "github", "ping", "--to", "http://[bad"], "--to 'http://[bad': not a valid URL (Invalid IPv6 URL)"),
        (["logs", "web", "--api", "http://[bad"], "--api 'http://[bad': not a valid URL (Invalid IPv6 URL)"),
        (["logs", "web", "--api", "[::1"], "--api 'http://[::1': not a valid URL (Invalid IPv6 URL)"),
        (["http", "8080", "--relay", "http://[bad"], "invalid relay URL 'http://[bad': Invalid IPv6 URL"),
        # Saved, checked and dialled for ever ("Name or service not known" each time).
        (["http", "8080", "--relay", "ws://a b"], "invalid relay URL 'ws://a b': 'a b' is not a host name or address"),
        # --domain took any text: a relay served "NAME.a/b".
        (["relay", "--domain", "a/b"], "--domain: 'a/b' is not a host name: only letters a-z, digits, '-' and '.' are allowed"),
        (["relay", "--domain=-a.example"], "its label '-a' starts or ends with '-'"),
        (["relay", "--domain", "a..example"], "it has an empty label (two dots in a row)"),
        # A value starting with - is taken for a flag: it said "expected one argument" alone,
        # though the filter language's own examples start with - (not status:2xx).
        (["requests", "--filter", "-status:2xx"], "expected one argument (-status:2xx starts with -, which reads as a"
                                                  " flag: join it, --filter=-status:2xx)"),
        (["export", "-f", "-status:2xx"], "join it, --filter=-status:2xx)"),
        (["http", "8080", "--hold", "-1s"], "join it, --hold=-1s)"),
        (["replay", "01M8V2JD", "--body", "-x"], "join it, --body=-x)"),
        (["requests", "--filter"], "argument --filter/-f: expected one argument (see: devtunnel requests --help)"),
    ],
)
def test_bad_usage_exits_2_with_one_clear_line(args: list[str], says: str, tmp_path: Path) -> None:
    done = run(*args, tmp_path=tmp_path)
    assert done.returncode == EXIT_USAGE, (done.stdout, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("devtunnel"), done.stderr
    assert says in lines[0]
    assert done.stdout == ""


@pytest.mark.parametrize("args", [["show", "01M8V2JD", "--bogus"], ["replay", "--bogus", "01M8V2JD"], ["send", "--list", "--bogus"]])
def test_an_unknown_flag_sends_to_the_commands_own_help(args: list[str], tmp_path: Path) -> None:
    """It said "devtunnel: ... (see: devtunnel --help)", whose page lists no flag of the command."""
    done = run(*args, tmp_path=tmp_path)
    assert done.returncode == EXIT_USAGE and done.stdout == ""
    assert done.stderr == f"devtunnel {args[0]}: unrecognized arguments: --bogus (see: devtunnel {args[0]} --help)\n"


def test_the_inspectors_supervisor_takes_exit_codes_without_loading_the_command_line() -> None:
    code = "import sys, devtunnel.tui.supervisor as s; print('devtunnel.cli' in sys.modules, s.EXIT_TUNNEL_REFUSED)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.split() == ["False", "3"]


def test_a_filter_error_quotes_at_most_a_part_of_a_long_expression(tmp_path: Path) -> None:
    # A 50 KB --filter printed a 50 KB error line: the expression whole, then again in the message.
    for expression, column, shown in [
        ("~u " + "a" * 50_000 + ")", 50_004, "'\u2026" + "a" * 39 + ")'"),  # around the column, not the start
        ("~zz" + "a" * 50_000, 1, "unknown filter ~zz" + "a" * 37 + "\u2026;"),
        ("foo" + "a" * 50_000 + ":x", 1, "unknown field 'foo" + "a" * 37 + "\u2026'"),
    ]:
        done = run("requests", "--filter", expression, tmp_path=tmp_path)
        assert done.returncode == EXIT_USAGE, done.stderr[:300]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and len(lines[0]) < 500, done.stderr[:300]
        assert lines[0].startswith("devtunnel: invalid filter ") and f"at column {column}" in lines[0], lines[0]
        assert shown in lines[0], lines[0]


HOSTILE = "a\x1b[31m'b"
"""A value that holds an ESC and a quote: each error names it escaped once, ESC as ``\\x1b``."""


@pytest.mark.parametrize(("args", "named"), [
    (["http", f"{HOSTILE}:80"], "invalid target \"a\\x1b[31m'b:80\""),
    (["help", HOSTILE], "no help on \"a\\x1b[31m'b\""),
    (["http", "8080", "--relay", f"ftp://{HOSTILE}"], "invalid relay URL \"ftp://a\\x1b[31m'b\""),
    (["requests", "--filter", f"foo:{HOSTILE}"], "invalid filter \"foo:a\\x1b[31m'b\""),
    (["http", "8080", "--body-cap", HOSTILE], "\"a\\x1b[31m'b\" is not a size"),
    (["http", "8080", "--health", f"/{HOSTILE}", "--run", "true"], "got \"/a\\x1b[31m'b\""),
])
def test_an_error_names_a_hostile_value_escaped_once(args: list[str], named: str, tmp_path: Path) -> None:
    done = run(*args, tmp_path=tmp_path)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "\x1b" not in done.stderr and "\\\\" not in done.stderr, done.stderr  # escaped, and only once
    assert named in done.stderr, done.stderr


@pytest.mark.parametrize("buffered", [True, False])
@pytest.mark.parametrize("command", [["config", "path"], ["config", "show"], ["help", "filters"]])
def test_a_reader_that_goes_away_ends_the_command_quietly(command: list[str], buffered: bool, tmp_path: Path) -> None:
    """``devtunnel config show | head -1`` ended in a BrokenPipeError traceback and exit 1; with
    stdout buffered (no PYTHONUNBUFFERED, as typed in a shell) a short output is written only at
    exit, where it printed "Exception ignored ... BrokenPipeError"."""
    env = dict(os.environ, XDG_STATE_HOME=str(tmp_path / "state"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    for name in ("DEVTUNNEL_RELAY", "DEVTUNNEL_TOKEN", "DEVTUNNEL_DB", "DEVTUNNEL_CONFIG", "PYTHONUNBUFFERED"):
        env.pop(name, None)
    if not buffered:
        env["PYTHONUNBUFFERED"] = "1"
    reader, writer = os.pipe()
    os.close(reader)  # the reader has gone before the command writes its first line
    try:
        done = subprocess.run([DEVTUNNEL, *command], stdout=writer, stderr=subprocess.PIPE, text=True, timeout=60,
                              env=env, cwd=tmp_path, stdin=subprocess.DEVNULL)
    finally:
        os.close(writer)
    assert done.stderr == ""
    assert done.returncode == 0


def _option_blocks(help_text: str) -> dict[str, str]:
    """Each option of a ``--help``, by its first spelling: its lines (the flag line and those under it)."""
    options = help_text.split("\noptions:\n", 1)[1].split("\n\n", 1)[0]
    blocks: dict[str, str] = {}
    name = ""
    for line in options.splitlines():
        if line.startswith("  -"):
            name = line.split()[0].rstrip(",")
            blocks[name] = ""
        blocks[name] += " " + line
    return {name: " ".join(block.split()) for name, block in blocks.items()}  # as wrapped at any width


def test_http_up_and_start_say_their_agent_flags_alike(tmp_path: Path) -> None:
    """``--no-tui``, the log flags, ``--port``, ``--api-port``, ``--no-record`` and ``--db`` are one
    definition for the three commands that run an agent (cli._add_agent_flags): one help, one default."""
    shared = ["--no-tui", "--log", "--log-format", "--log-level", "--port", "--api-port", "--no-record", "--db"]
    helps = {command: _option_blocks(run(command, "--help", tmp_path=tmp_path).stdout) for command in ("http", "up", "start")}
    for command, blocks in helps.items():
        assert [name for name in blocks if name in shared] == shared, command
    assert all(helps["up"][name] == helps["http"][name] == helps["start"][name] for name in shared)


def test_up_gives_resolve_http_every_flag_http_has() -> None:
    """``up`` and ``start`` resolve their settings as ``http``'s (``up._as_http`` sets each of
    ``http``'s flags it has not, unset): a flag added to ``http`` and not there would break them
    with an AttributeError only when run."""
    from types import SimpleNamespace

    from devtunnel.cli import build_parser
    from devtunnel.commands.up import _as_http

    parser = build_parser()
    http = vars(parser.parse_args(["http", "8080"]))
    for command in (["up"], ["start", "--all"]):
        shaped = vars(_as_http(parser.parse_args(command), SimpleNamespace(name="web")))  # type: ignore[arg-type]
        assert set(http) <= set(shaped), (command, sorted(set(http) - set(shaped)))
