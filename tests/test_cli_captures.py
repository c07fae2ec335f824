"""The capture commands (requests, show, export, replay, diff) and their terminal-safe output."""

from __future__ import annotations

import base64
import gzip
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from devtunnel.capture.bodies import DECODE_LIMIT
from devtunnel.capture.model import Exchange, WsMessage
from devtunnel.commands.http import exchange_line
from devtunnel.values import exchange_ids
from devtunnel.values.exchange_ids import stable_short_id
from devtunnel.capture.store import Store
from devtunnel.commands.output import Column, display_width, hex_preview, human_duration, safe, table, truncate
from devtunnel.tui.render import describe_body
from devtunnel.values.sizes import format_size
from tests.net.api_fixtures import HOSTILE_PATH, PNG, Seen, echo_service, make_exchange, sample_exchanges

# -- terminal-safe output ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("/plain/path?q=1", "/plain/path?q=1"),
        ("/\x1b]0;pwned\x07", "/\\x1b]0;pwned\\x07"),
        ("/a\x1b[2J\x1b[H", "/a\\x1b[2J\\x1b[H"),
        ("/\u202eevil", "/\\u202eevil"),
        ("/\x9b31m", "/\\x9b31m"),
        ("line\r\nnext", "line\\r\\nnext"),
        ("back\\x1b", "back\\\\x1b"),
        ("[bold red]markup[/]", "[bold red]markup[/]"),
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("héllo 日本", "héllo 日本"),
    ],
)
def test_safe_escapes_every_control_and_invisible_character(text: str, shown: str) -> None:
    assert safe(text) == shown


def test_safe_can_keep_newlines_of_a_body_but_not_carriage_returns() -> None:
    assert safe("a\n\tb\rc", keep_newlines=True) == "a\n\tb\\rc"


def test_display_width_counts_wide_characters_twice() -> None:
    assert display_width("日本") == 4
    assert display_width("e\u0301") == 1


def test_truncate_cuts_to_width_with_an_ellipsis() -> None:
    assert truncate("abcdef", 4) == "abc…"
    assert truncate("abc", 4) == "abc"
    assert truncate("日本語", 5) == "日本…"
    assert display_width(truncate("日本語日本語", 6)) <= 6


def test_table_fits_the_width_by_truncating_the_flexible_column() -> None:
    cols = [Column("ID"), Column("DUR", align=">"), Column("PATH", flexible=True)]
    rows = [["01AB", "1.0 ms", "/" + "x" * 200], ["01AC", "12.0 ms", "/short"]]
    lines = table(cols, rows, width=40)
    assert all(display_width(line) <= 40 for line in lines)
    assert lines[0].split() == ["ID", "DUR", "PATH"]
    assert lines[1].endswith("…")
    assert lines[2].endswith("/short")
    # right-aligned column: the numbers end in the same column
    assert lines[1].index("1.0 ms") + 6 == lines[2].index("12.0 ms") + 7


def test_table_leaves_out_optional_columns_before_squeezing_the_path_below_its_minimum() -> None:
    cols = [Column("ID"), Column("TUNNEL", optional=1), Column("PATH", flexible=True, min_width=10)]
    rows = [["01ABCDEFGHJK", "a-long-tunnel-name", "/webhooks/stripe/events"]]
    wide = table(cols, rows, width=100)
    narrow = table(cols, rows, width=30)
    assert "TUNNEL" in wide[0]
    assert "TUNNEL" not in narrow[0]
    assert all(display_width(line) <= 30 for line in narrow)


def test_table_fits_a_width_too_narrow_even_for_its_fixed_columns() -> None:
    cols = [Column("ID"), Column("STATUS"), Column("PATH", flexible=True, min_width=8)]
    rows = [["01M8BZ9VWQ135SFT62F2Y641A4", "502 ERR", "/webhooks/stripe"]]
    lines = table(cols, rows, width=30)
    assert all(display_width(line) <= 30 for line in lines), lines
    assert lines[1].startswith("01M8BZ9VWQ135SFT62F2Y641A4")


def test_table_escapes_hostile_cells() -> None:
    lines = table([Column("PATH")], [["/\x1b[31mred"]], width=80)
    assert "\x1b" not in "".join(lines)


def test_human_units() -> None:
    assert format_size(999) == "999 B"
    assert format_size(1536) == "1.5 KiB"
    assert human_duration(None) == "-"
    assert human_duration(0.0123) == "12.3 ms"
    assert human_duration(2.5) == "2.50 s"


def test_hex_preview_shows_offsets_hex_and_printable_ascii() -> None:
    lines = hex_preview(b"\x89PNG\r\n\x1a\n" + bytes(range(20)), limit=16)
    assert lines == ["00000000  89 50 4e 47 0d 0a 1a 0a 00 01 02 03 04 05 06 07  |.PNG............|"]


# -- the commands, run as the installed console script -----------------------------------------

DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")


@dataclass
class Captures:
    db: Path
    exchanges: list[Exchange]
    target: str
    seen: Seen
    cwd: Path


@pytest.fixture
def captures(tmp_path: Path) -> Iterator[Captures]:
    db = tmp_path / "captures.db"
    with echo_service() as (target, seen):
        exchanges = sample_exchanges(target)
        store = Store(db)
        store.put_many(exchanges)
        store.close()
        work = tmp_path / "work"
        work.mkdir()
        yield Captures(db, exchanges, target, seen, work)


def cli(c: Captures | None, *args: str, columns: int = 100, db: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "40"}
    path = db if db is not None else c.db if c is not None else Path("/nonexistent")
    return subprocess.run(
        [DEVTUNNEL, *args, "--db", str(path)],
        capture_output=True,
        text=True,
        errors="surrogateescape",
        env=env,
        cwd=c.cwd if c is not None else None,
        timeout=60,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("devtunnel: ")
    return lines[0]


def assert_short_ids(shown: list[str], exchanges: list[Exchange]) -> None:
    """``shown`` are short ids of ``exchanges``, in order: prefixes of 8 characters or more."""
    assert len(shown) == len(exchanges)
    for short, ex in zip(shown, exchanges):
        assert 8 <= len(short) < len(ex.id) and ex.id.startswith(short), (short, ex.id)


def test_requests_piped_keeps_every_path_whole(captures: Captures) -> None:
    """``devtunnel requests | grep PATH`` found no long path: piped, lines were cut at 100 columns."""
    from tests.kit import exchanges as kit

    path = "/webhooks/stripe/" + "x" * 150
    ex = kit.make_exchange("POST", path, [(b"Host", b"shop.localhost")], b"{}", kit.make_response(200))
    store = Store(captures.db)
    store.put(ex)
    store.close()
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    proc = subprocess.run([DEVTUNNEL, "requests", "--db", str(captures.db)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].endswith(" " + path), proc.stdout
    assert "…" not in proc.stdout


def test_requests_lists_oldest_first_in_a_table_that_fits_the_terminal(captures: Captures) -> None:
    proc = cli(captures, "requests", columns=80)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:2] == ["ID", "TIME"] or lines[0].split()[0] == "ID"
    assert_short_ids([line.split()[0] for line in lines[1:]], captures.exchanges)
    assert all(len(line) <= 80 for line in lines), lines


@pytest.mark.parametrize("columns", [40, 60])
def test_requests_fits_a_narrow_terminal(captures: Captures, columns: int) -> None:
    proc = cli(captures, "requests", columns=columns)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert all(display_width(line) <= columns for line in lines), lines
    assert_short_ids([line.split()[0] for line in lines[1:]], captures.exchanges)


def test_requests_escapes_hostile_paths_so_the_terminal_is_never_driven(captures: Captures) -> None:
    proc = cli(captures, "requests", columns=200)
    assert "\x1b" not in proc.stdout and "\x07" not in proc.stdout
    assert "\\x1b]0;pwned\\x07" in proc.stdout
    assert "[bold red]boom[/]" in proc.stdout  # shown as text, never interpreted


def test_requests_limit_keeps_the_newest(captures: Captures) -> None:
    proc = cli(captures, "requests", "--limit", "2", "--json")
    assert [r["id"] for r in json.loads(proc.stdout)] == [ex.id for ex in captures.exchanges[-2:]]


def test_requests_limit_past_any_integer_the_database_holds_lists_everything(captures: Captures) -> None:
    proc = cli(captures, "requests", "--json", "--limit", str(10**20))
    assert proc.returncode == 0, proc.stderr
    assert [row["id"] for row in json.loads(proc.stdout)] == [ex.id for ex in captures.exchanges]


def test_requests_json_is_an_array_of_summaries(captures: Captures) -> None:
    rows = json.loads(cli(captures, "requests", "--json").stdout)
    assert len(rows) == len(captures.exchanges)
    assert set(rows[0]) >= {"id", "method", "path", "status", "duration_ms", "tunnel"}
    assert rows[0]["duration_ms"] == 12.3
    assert rows[1]["path"] == HOSTILE_PATH
    assert rows[4]["status"] is None and rows[4]["error"] == "local_refused"


def test_requests_filter_narrows(captures: Captures) -> None:
    rows = json.loads(cli(captures, "requests", "--filter", "status:>=500 or tunnel:uploads", "--json").stdout)
    assert [r["id"] for r in rows] == [captures.exchanges[2].id, captures.exchanges[3].id]


def test_a_number_past_64_bits_in_a_filter_is_compared_not_a_traceback(captures: Captures) -> None:
    huge = "9" * 30
    sized = [r["id"] for r in json.loads(cli(captures, "requests", "--json").stdout) if r["size"] is not None]
    assert sized
    for expression, expected in ((f"size:<{huge}gb", sized), (f"size:>{huge}", []), (f"rule:{huge}", [])):
        proc = cli(captures, "requests", "--filter", expression, "--json")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, (expression, proc.stderr)
        assert [r["id"] for r in json.loads(proc.stdout)] == expected, expression


def test_a_bad_filter_is_bad_usage_in_one_line_with_its_column(captures: Captures) -> None:
    line = assert_one_line_error(cli(captures, "requests", "--filter", "status:>=abc \x1b[2J"), code=2)
    assert "column" in line
    assert "\x1b" not in line


def test_a_filter_regex_that_backtracks_is_stopped_and_said_in_one_line(captures: Captures) -> None:
    # With re, this search ran for ever on the body below (the command never ended).
    store = Store(captures.db)
    store.put(make_exchange(req_body=b"a" * 5000 + b"!"))
    store.close()
    started = time.monotonic()
    line = assert_one_line_error(cli(captures, "requests", "--filter", '~b "(a|a)+$"'), code=2)
    assert time.monotonic() - started < 20
    assert line.startswith("devtunnel: filter regex took too long: '(?s)(a|a)+$'")


@pytest.mark.parametrize("expression", ["path:~[[:alpha:]]", "~u [a&&b]"])
def test_a_posix_class_in_a_filter_regex_prints_no_python_warning(captures: Captures, expression: str) -> None:
    # docs/filters.md lists POSIX classes as accepted; re's FutureWarning about them reached
    # stderr with a line of our source (and would draw over the inspector).
    proc = cli(captures, "requests", "--filter", expression, "--json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""


def test_a_stopped_filter_regex_is_escaped_once_on_the_error_line(captures: Captures) -> None:
    # The message escaped the pattern and err() escaped it again: an ESC showed as \\x1b.
    store = Store(captures.db)
    store.put(make_exchange(req_body=b"a" * 5000 + b"!"))
    store.close()
    line = assert_one_line_error(cli(captures, "requests", "--filter", '~b "(?:\x1b]0;\\d)?(a|a)+$"'), code=2)
    assert "filter regex took too long: '(?s)(?:\\x1b]0;\\\\d)?(a|a)+$' (it ran" in line, line
    assert "\x1b" not in line and "\\\\x1b" not in line


def test_a_missing_database_says_there_are_no_captures_yet(tmp_path: Path) -> None:
    missing = tmp_path / "none" / "captures.db"
    line = assert_one_line_error(cli(None, "show", "01M8", db=missing))
    assert f"no captures yet at {missing}" in line
    assert not missing.exists()


def test_requests_before_any_capture_is_an_empty_list_not_an_error(tmp_path: Path) -> None:
    # It exited 1 with no JSON: 'devtunnel requests --json | jq length' failed on a fresh machine,
    # while an empty database printed [] and exited 0.
    missing = tmp_path / "none" / "captures.db"
    listed = cli(None, "requests", "--json", db=missing)
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, "[]\n", "")
    table_ = cli(None, "requests", db=missing)
    assert (table_.returncode, table_.stderr) == (0, "")
    assert table_.stdout == f"no requests captured yet (no capture database at {missing})\n"
    assert not missing.exists()


def test_an_unreadable_database_is_one_line(tmp_path: Path) -> None:
    junk = tmp_path / "captures.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    assert_one_line_error(cli(None, "requests", db=junk))


def test_show_prints_the_whole_exchange_readably(captures: Captures) -> None:
    ex = captures.exchanges[0]
    out = cli(captures, "show", ex.id).stdout
    assert "POST /webhooks/stripe HTTP/1.1" in out
    assert "Stripe-Signature: t=1700000000" in out
    assert '"type": "invoice.paid"' in out  # JSON body pretty-printed
    assert "HTTP/1.1 200 OK" in out
    assert "12.3 ms" in out


def test_show_summarises_a_binary_body_with_a_hex_preview(captures: Captures) -> None:
    out = cli(captures, "show", captures.exchanges[2].id).stdout
    assert f"binary body, {len(PNG)} bytes" in out
    assert "89 50 4e 47 0d 0a 1a 0a" in out
    assert "\x00" not in out


def test_show_escapes_hostile_headers_and_paths(captures: Captures) -> None:
    out = cli(captures, "show", captures.exchanges[1].id).stdout
    assert "\x1b" not in out and "\x07" not in out
    assert "X-Evil: \\x1b[31mred\\x1b[0m" in out


def test_show_says_why_an_exchange_failed(captures: Captures) -> None:
    out = cli(captures, "show", captures.exchanges[4].id).stdout
    assert "local_refused: connection refused" in out


def test_show_json_has_ngrok_shape(captures: Captures) -> None:
    data = json.loads(cli(captures, "show", captures.exchanges[0].id, "--json").stdout)
    assert data["id"] == captures.exchanges[0].id
    assert data["duration"] == 12_300_000
    assert base64.b64decode(data["request"]["raw"]).startswith(b"POST /webhooks/stripe HTTP/1.1\r\n")


def test_show_unknown_or_ambiguous_ids_are_one_line_errors(captures: Captures) -> None:
    assert "no exchange" in assert_one_line_error(cli(captures, "show", "01ZZZZZZZZ"))
    assert "ambiguous" in assert_one_line_error(cli(captures, "show", captures.exchanges[0].id[:2]))


def test_export_curl_to_stdout(captures: Captures) -> None:
    proc = cli(captures, "export", captures.exchanges[0].id, "--format", "curl")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("curl")
    assert "/webhooks/stripe" in proc.stdout


def test_export_writes_binary_bodies_as_side_files_and_names_them(captures: Captures) -> None:
    ex = captures.exchanges[2]
    proc = cli(captures, "export", ex.id, "--format", "curl")
    assert proc.returncode == 0, proc.stderr
    written = [p for p in captures.cwd.iterdir()]
    assert [p.read_bytes() for p in written] == [PNG]
    assert written[0].name in proc.stdout and written[0].name in proc.stderr


def test_export_to_a_file_puts_side_files_next_to_it(captures: Captures, tmp_path: Path) -> None:
    out = tmp_path / "out" / "upload.sh"
    out.parent.mkdir()
    proc = cli(captures, "export", captures.exchanges[2].id, "--format", "curl", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert out.read_text().startswith("curl")
    side = [p for p in out.parent.iterdir() if p != out]
    assert [p.read_bytes() for p in side] == [PNG]
    assert list(captures.cwd.iterdir()) == []


def test_export_to_dash_writes_to_stdout_not_a_file_named_dash(captures: Captures) -> None:
    proc = cli(captures, "export", captures.exchanges[0].id, "--format", "curl", "-o", "-")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("curl") and "/webhooks/stripe" in proc.stdout
    assert list(captures.cwd.iterdir()) == [] and proc.stderr == ""


def test_export_har_of_a_filter(captures: Captures, tmp_path: Path) -> None:
    out = tmp_path / "hooks.har"
    proc = cli(captures, "export", "--filter", "path:/webhooks", "--format", "har", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(out.read_text())["log"]["entries"]
    assert len(entries) == 2


def test_export_limit_takes_the_newest_matches_oldest_first(captures: Captures, tmp_path: Path) -> None:
    out = tmp_path / "hooks.har"
    proc = cli(captures, "export", "--filter", "path:/webhooks", "--limit", "1", "--format", "har", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    matches = [ex.id for ex in captures.exchanges if ex.request.path.startswith("/webhooks")]
    assert [e["_id"] for e in json.loads(out.read_text())["log"]["entries"]] == matches[-1:]
    bad = cli(captures, "export", "--filter", "path:/webhooks", "--limit", "-1")
    assert bad.returncode == 2 and "--limit" in bad.stderr and "Traceback" not in bad.stderr


def test_export_redact_hides_signatures(captures: Captures) -> None:
    out = cli(captures, "export", captures.exchanges[0].id, "--format", "httpie", "--redact").stdout
    assert "5257a869" not in out


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["--format", "pdf", "ID0"], 2),  # bad usage
        (["--format", "curl"], 2),
        (["--format", "curl", "-o", "/nonexistent-dir/x.sh", "ID0"], 1),  # an error
        (["--format", "curl", "--filter", "method:NOPE"], 1),
    ],
)
def test_bad_exports_are_one_line_errors(captures: Captures, args: list[str], code: int) -> None:
    args = [captures.exchanges[0].id if a == "ID0" else a for a in args]
    assert_one_line_error(cli(captures, "export", *args), code=code)


@pytest.mark.parametrize(("fmt", "header", "says"), [
    ("curl", (b"X Bad\x1b[31m", b"1"), "header name 'X Bad\\x1b[31m' is not an HTTP token; curl cannot send it"),
    ("httpie", (b"X Bad\x1b[31m", b"1"), "header name 'X Bad\\x1b[31m' is not an HTTP token"),
    ("curl", (b"X-Split", b"a\rb"), "header 'X-Split' holds CR, LF or NUL; curl cannot send it"),
])
def test_an_export_refusing_a_header_names_it_as_text_escaped_once(
    captures: Captures, fmt: str, header: tuple[bytes, bytes], says: str
) -> None:
    # The message named the header as Python bytes (b'X Bad\x1b[31m'), whose escapes the error
    # line then escaped again (\\x1b).
    from tests.kit import exchanges as kit

    ex = kit.make_exchange("GET", "/x", [(b"Host", b"shop.localhost"), header], b"", kit.make_response(200))
    store = Store(captures.db)
    store.put(ex)
    store.close()
    line = assert_one_line_error(cli(captures, "export", ex.id, "--format", fmt))
    assert line == f"devtunnel: exchange {ex.id}: {says}", line


def _stored(captures: Captures) -> list[Exchange]:
    store = Store(captures.db, readonly=True)
    try:
        return store.query()
    finally:
        store.close()


def test_replay_sends_again_stores_a_linked_exchange_and_prints_a_line(captures: Captures) -> None:
    ex = captures.exchanges[0]
    proc = cli(captures, "replay", ex.id)
    assert proc.returncode == 0, proc.stderr
    new = [e for e in _stored(captures) if e.replay_of == ex.id]
    assert len(new) == 1
    assert proc.stdout.split()[:4] == [ex.id, "->", new[0].id, "200"]
    assert captures.seen.requests[-1][0::3] == ("POST", ex.request.body)
    assert "differs" in proc.stdout  # the echo service answers differently than the capture


def test_a_replay_sent_but_not_recorded_is_printed_and_said_so_in_one_line(captures: Captures) -> None:
    # Another program holding the file's write lock past the busy timeout: the request went out
    # (a webhook replayed may have charged a card), but only "is locked ...; close it" was printed,
    # as if nothing had been sent.
    import sqlite3

    ex = captures.exchanges[0]
    holder = sqlite3.connect(captures.db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        proc = cli(captures, "replay", ex.id)
    finally:
        holder.close()
    assert proc.returncode == 1
    assert captures.seen.requests[-1][0::3] == ("POST", ex.request.body)  # sent
    assert proc.stdout.split()[:4][0::3] == [ex.id, "200"]
    assert proc.stderr.splitlines()[-1:] == [  # after the line on its signature
        f"devtunnel: 1 replay sent but not recorded: {captures.db} is locked by another process (database is "
        "locked); close it or pass --db"]
    assert [e for e in _stored(captures) if e.replay_of == ex.id] == []


def test_replay_keeps_the_configured_retention_not_the_defaults(captures: Captures, tmp_path: Path) -> None:
    config = tmp_path / "devtunnel.toml"
    config.write_text("[store]\nmax_exchanges = 3\n")
    ex = captures.exchanges[0]
    proc = subprocess.run([DEVTUNNEL, "replay", ex.id, "--db", str(captures.db)], capture_output=True, text=True,
                          env={**os.environ, "DEVTUNNEL_CONFIG": str(config)}, cwd=captures.cwd, timeout=60)
    assert proc.returncode == 0, proc.stderr
    stored = _stored(captures)
    assert len(stored) == 3  # as the agent keeps them: the newest 3, the replay among them
    assert stored[-1].replay_of == ex.id


def test_replay_with_edits(captures: Captures) -> None:
    body = captures.cwd / "event.json"
    body.write_bytes(b'{"type":"invoice.updated"}')
    proc = cli(captures, "replay", captures.exchanges[0].id, "--method", "PUT", "--path", "/other?x=1",
               "--header", "X-Debug: 1", "--header", "Stripe-Signature:", "--body", f"@{body}", "--json")
    assert proc.returncode == 0, proc.stderr
    method, path, headers, sent = captures.seen.requests[-1]
    assert (method, path, sent) == ("PUT", "/other?x=1", b'{"type":"invoice.updated"}')
    assert headers["x-debug"] == "1" and "stripe-signature" not in headers
    summary = json.loads(proc.stdout)
    assert summary[0]["replay_of"] == captures.exchanges[0].id and summary[0]["status"] == 200


def test_replay_of_a_filter_goes_oldest_first(captures: Captures) -> None:
    proc = cli(captures, "replay", "--filter", "path:/webhooks")
    assert proc.returncode == 0, proc.stderr
    assert [line.split()[0] for line in proc.stdout.splitlines()] == [captures.exchanges[0].id, captures.exchanges[3].id]
    assert [r[1] for r in captures.seen.requests] == ["/webhooks/stripe", "/webhooks/stripe?retry=1"]


def test_replay_to_a_closed_port_fails_with_a_line_and_nonzero_exit(captures: Captures) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    proc = cli(captures, "replay", captures.exchanges[0].id, "--to", f"http://127.0.0.1:{closed}")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_replay_to_a_development_server_error_page_prints_its_text_not_its_doctype(captures: Captures) -> None:
    # Python's http.server, a real one on loopback, answers the replayed POST with its HTML 501 page.
    import http.server
    import threading

    class Quiet(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        proc = cli(captures, "replay", captures.exchanges[0].id, "--to", f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 1, proc.stderr  # answered 501: an error answer
    lines = proc.stdout.splitlines()
    assert "501 Unsupported method ('POST')" in lines[0]
    assert lines[1].strip().startswith("Error response — Error code: 501 Message: Unsupported method ('POST').")
    assert "DOCTYPE" not in proc.stdout


@pytest.mark.parametrize("args", [["--header", "no colon"], ["--body", "@/nonexistent/file"], ["--to", "ftp://x"], ["--path", "nope"]])
def test_bad_replay_arguments_are_bad_usage_and_send_nothing(captures: Captures, args: list[str]) -> None:
    assert_one_line_error(cli(captures, "replay", captures.exchanges[0].id, *args), code=2)
    assert captures.seen.requests == []


def test_diff_of_identical_exchanges_exits_0(captures: Captures) -> None:
    ex = captures.exchanges[0]
    assert cli(captures, "diff", ex.id, ex.id).returncode == 0


def test_diff_of_different_exchanges_prints_a_unified_diff_and_exits_1(captures: Captures) -> None:
    proc = cli(captures, "diff", captures.exchanges[0].id, captures.exchanges[3].id, "--side", "response")
    assert proc.returncode == 1, proc.stderr
    assert any(line.startswith("+") and "Internal Server Error" in line for line in proc.stdout.splitlines())


def test_diff_with_an_unknown_id_exits_2(captures: Captures) -> None:
    assert_one_line_error(cli(captures, "diff", captures.exchanges[0].id, "01ZZZZZZZZ"), code=2)


def test_show_lists_websocket_messages_escaped(captures: Captures) -> None:
    ex = make_exchange(method="GET", target=b"/socket", req_body=b"", status=101, resp_body=b"")
    ex.websocket = True
    ex.ws_close_code = 1000
    ex.ws_messages = [
        WsMessage(sender="client", opcode=1, time=ex.started_at + 0.1, payload=b'{"subscribe":"\x1b[2Jprices"}'),
        WsMessage(sender="server", opcode=2, time=ex.started_at + 0.2, payload=b"\x00\x01\xff"),
    ]
    store = Store(captures.db)
    store.put(ex)
    store.close()
    out = cli(captures, "show", ex.id).stdout
    assert "2 messages, close code 1000" in out
    assert '→' in out and '{"subscribe":"\\x1b[2Jprices"}' in out
    assert "← " in out and "binary 00 01 ff" in out
    assert "\x1b" not in out


def test_show_says_which_websocket_messages_were_recorded_only_in_part(captures: Captures) -> None:
    ex = make_exchange(method="GET", target=b"/socket", req_body=b"", status=101, resp_body=b"")
    ex.websocket = True
    ex.ws_messages = [  # the body cap spent on the first: the others have their sizes only
        WsMessage(sender="client", opcode=1, time=ex.started_at + 0.1, payload=b"abc", size=20 << 20),
        WsMessage(sender="server", opcode=1, time=ex.started_at + 0.2, payload=b"", size=17),
        WsMessage(sender="server", opcode=2, time=ex.started_at + 0.3, payload=b"", size=3),
        WsMessage(sender="client", opcode=1, time=ex.started_at + 0.4, payload=b"whole"),
    ]
    store = Store(captures.db)
    store.put(ex)
    store.close()
    lines = cli(captures, "show", ex.id).stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "4 messages" in line)
    assert lines[at + 1].endswith("abc  (recorded 3 of 20971520 bytes)")
    assert lines[at + 2].endswith("17 B    (recorded 0 of 17 bytes)")  # (it read as an empty message)
    assert lines[at + 3].endswith("binary   (recorded 0 of 3 bytes)")
    assert lines[at + 4].endswith("whole")


def test_show_links_a_replay_and_its_original_both_ways(captures: Captures) -> None:
    original = captures.exchanges[0]
    assert cli(captures, "replay", original.id).returncode == 0
    new = next(e for e in _stored(captures) if e.replay_of == original.id)
    assert f"replayed  {new.id}  200" in cli(captures, "show", original.id).stdout
    assert f"replay of {original.id}  (devtunnel diff {original.id} {new.id})" in cli(captures, "show", new.id).stdout


@pytest.mark.parametrize("fmt", ["curl", "httpie", "raw", "har"])
def test_export_of_a_hostile_exchange_never_prints_control_characters(captures: Captures, fmt: str) -> None:
    proc = cli(captures, "export", captures.exchanges[1].id, "--format", fmt)
    if proc.returncode != 0:  # a format that cannot carry the bytes says so in one line
        assert_one_line_error(proc)
    assert not any(ord(ch) < 0x20 and ch not in "\n\t" for ch in proc.stdout + proc.stderr)


def test_show_says_when_only_part_of_a_body_was_recorded(captures: Captures) -> None:
    ex = make_exchange(resp_body=b"x" * 1024, resp_headers=[("Content-Type", "text/plain")])
    assert ex.response is not None
    ex.response.body_size = 50 * 1024 * 1024
    ex.response.body_truncated = True
    store = Store(captures.db)
    store.put(ex)
    store.close()
    assert "[body cut (first 1 KiB of 50 MiB recorded)]" in cli(captures, "show", ex.id).stdout


def _stored_response(captures: Captures, body: bytes, headers: list[tuple[str, str]]) -> Exchange:
    ex = make_exchange(resp_body=body, resp_headers=headers)
    store = Store(captures.db)
    store.put(ex)
    store.close()
    return ex


def _shown_response(captures: Captures, ex: Exchange) -> list[str]:
    """The lines ``devtunnel show`` prints for ``ex``'s response, checked to end without a word on stderr."""
    proc = cli(captures, "show", ex.id)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.split("── response", 1)[1].splitlines()


def test_show_prints_a_gzip_body_decoded_and_reformatted_as_the_inspector_shows_it(captures: Captures) -> None:
    payload = json.dumps({"items": [{"id": n, "name": f"item {n}"} for n in range(200)]}).encode()
    packed = gzip.compress(payload)
    ex = _stored_response(captures, packed, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")])
    lines = _shown_response(captures, ex)
    assert ex.response is not None
    inspector = describe_body(ex.response).label  # json · 6.2 KiB · decoded from gzip (980 B)
    assert inspector.endswith(f" · decoded from gzip ({format_size(len(packed))})")
    assert f"[decoded from gzip ({format_size(len(packed))})]" in lines
    assert '      "name": "item 199"' in lines
    assert not any("binary body" in line for line in lines)


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw-deflate"])
def test_show_prints_a_deflate_body_decoded_and_still_escaped(captures: Captures, wbits: int) -> None:
    packer = zlib.compressobj(wbits=wbits)
    packed = packer.compress(b"hello \x1b[31mred\x07\n") + packer.flush()
    ex = _stored_response(captures, packed, [("Content-Type", "text/plain"), ("Content-Encoding", "deflate")])
    lines = _shown_response(captures, ex)
    at = lines.index(f"[decoded from deflate ({len(packed)} B)]")
    assert lines[at + 1] == "hello \\x1b[31mred\\x07"
    assert not any(ord(ch) < 0x20 for line in lines for ch in line)


def test_show_of_a_gzip_body_that_does_not_inflate_says_so_and_shows_its_bytes(captures: Captures) -> None:
    packed = gzip.compress(b'{"a": "' + os.urandom(600).hex().encode() + b'"}')
    broken = packed[:12] + b"\xff" * 32 + packed[44:]
    with pytest.raises(zlib.error):
        zlib.decompress(broken, wbits=16 + zlib.MAX_WBITS)
    ex = _stored_response(captures, broken, [("Content-Type", "application/json"), ("Content-Encoding", "gzip")])
    lines = _shown_response(captures, ex)
    at = lines.index("[not valid gzip: shown as received]")
    assert lines[at + 1] == f"[binary body, {len(broken)} bytes; first 64 bytes:]"
    assert lines[at + 2].startswith("00000000  1f 8b 08")


def test_show_inflates_a_gzip_bomb_only_up_to_the_inspectors_limit(captures: Captures) -> None:
    packed = gzip.compress(b"\0" * (DECODE_LIMIT * 4), 9)  # 128 MiB of zeros in about 128 KiB
    ex = _stored_response(captures, packed, [("Content-Type", "application/octet-stream"), ("Content-Encoding", "gzip")])
    lines = _shown_response(captures, ex)
    at = lines.index(f"[decoded from gzip ({format_size(len(packed))})]")
    assert lines[at + 1 : at + 3] == [f"[decoded only the first {format_size(DECODE_LIMIT)}]",
                                      f"[binary body, {DECODE_LIMIT} bytes; first 64 bytes:]"]


def test_show_says_a_body_in_a_coding_it_does_not_decode_is_shown_as_received(captures: Captures) -> None:
    ex = _stored_response(captures, b"\x1b\xff\x00br", [("Content-Type", "text/plain"), ("Content-Encoding", "br")])
    lines = _shown_response(captures, ex)
    at = lines.index("[shown as received: only gzip and deflate bodies are decoded]")
    assert lines[at + 1] == "[binary body, 5 bytes; first 5 bytes:]"


def test_requests_json_has_exactly_the_summary_of_each_exchange(captures: Captures) -> None:
    rows = json.loads(cli(captures, "requests", "--json").stdout)
    assert rows == [json.loads(json.dumps(ex.summary())) for ex in captures.exchanges]


def _run_unprivileged(argv: list[str], env: dict[str, str]) -> tuple[int, str]:
    """``devtunnel ARGV`` in a forked child without root rights (root may write anywhere).

    The interpreter lives where an unprivileged user cannot read, so the command runs in-process
    from modules the parent has already imported. Returns the exit code and stderr.
    """
    import devtunnel.cli
    import devtunnel.commands.captures  # noqa: F401 - imported here, before rights are dropped
    import devtunnel.config  # noqa: F401

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            os.close(read_end)
            sys.stderr = os.fdopen(write_end, "w")  # pytest's capture object is not fd 2
            sys.stdout = open(os.devnull, "w")
            os.environ.update(env)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            code = devtunnel.cli.main(argv)
            sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001
            os.write(write_end, f"child failed: {exc!r}".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        err = pipe.read().decode(errors="replace")
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), err


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")
def test_a_read_only_database_is_read_by_requests_and_refused_by_replay_in_one_line(captures: Captures) -> None:
    folder = Path(tempfile.mkdtemp(prefix="devtunnel-ro-"))
    try:
        folder.chmod(0o755)
        db = folder / "captures.db"
        Store(captures.db).put_many(captures.exchanges)
        shutil.copy(captures.db, db)
        db.chmod(0o444)
        folder.chmod(0o555)
        env = {"XDG_CONFIG_HOME": str(folder / "config"), "HOME": str(folder), "COLUMNS": "120"}

        code, err = _run_unprivileged(["--db", str(db), "requests", "--json"], env)
        assert (code, err) == (0, "")
        before = db.read_bytes()
        code, err = _run_unprivileged(["--db", str(db), "replay", captures.exchanges[0].id], env)
        assert code == 1
        assert err == f"devtunnel: {db} is read-only; fix its permissions or pass --db\n"
        assert db.read_bytes() == before
        assert captures.seen.requests == []
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("chattr") is None, reason="needs root and chattr")
def test_a_database_on_a_read_only_file_system_is_read_by_requests_show_and_export(captures: Captures) -> None:
    """EROFS, not a permission: SQLite said 'unable to open database file' (it cannot make the -shm
    file), and every reading command refused the file as if its folder were missing."""
    folder = captures.db.parent / "frozen"
    folder.mkdir()
    db = folder / "captures.db"
    shutil.copy(captures.db, db)
    # An immutable file in an immutable folder: as a read-only mount, even root cannot write there.
    if subprocess.run(["chattr", "+i", str(db), str(folder)], capture_output=True).returncode != 0:
        pytest.skip("this file system has no immutable attribute")
    try:
        first = captures.exchanges[0].id
        listed = cli(captures, "requests", "--json", db=db)
        assert (listed.returncode, listed.stderr) == (0, "")
        assert [r["id"] for r in json.loads(listed.stdout)] == [e.id for e in captures.exchanges]
        for args in (["show", first], ["export", first, "--format", "curl"]):
            done = cli(captures, *args, db=db)
            assert (done.returncode, done.stderr) == (0, ""), args
        replay = cli(captures, "replay", first, db=db)
        assert (replay.returncode, replay.stderr) == (1, f"devtunnel: {db} is read-only; fix its permissions or pass --db\n")
        assert captures.seen.requests == []
    finally:
        subprocess.run(["chattr", "-i", str(db), str(folder)], check=True)


@pytest.mark.parametrize(("flags", "status"), [((), "ERR"), (("--insecure",), "200")])
def test_replay_to_a_self_signed_https_target_needs_insecure(tmp_path: Path, flags: tuple[str, ...], status: str) -> None:
    import trustme

    from tests.net.tunnel_fixtures import local_http

    pem = tmp_path / "server.pem"
    trustme.CA().issue_cert("localhost").private_key_and_cert_chain_pem.write_to_path(str(pem))
    db = tmp_path / "captures.db"
    with local_http(tls_pem=pem) as (port, _):
        ex = make_exchange(target=b"/echo", target_url=f"https://localhost:{port}")
        Store(db).put(ex)
        proc = cli(None, "replay", ex.id, *flags, db=db)
    assert proc.stdout.split()[:4] == [ex.id, "->", proc.stdout.split()[2], status], (proc.stdout, proc.stderr)
    if not flags:
        assert "CERTIFICATE_VERIFY_FAILED" in proc.stdout and proc.returncode == 1
    else:
        assert proc.returncode == 0, proc.stderr


# -- short ids ----------------------------------------------------------------------------------


@pytest.fixture
def one_millisecond(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Exchange]]:
    """A store holding 6 exchanges begun in one millisecond, and one an hour earlier."""
    from devtunnel.capture import model

    monkeypatch.setattr(exchange_ids, "_last_id", (0, 0))  # new_id(at) is then exactly that millisecond
    at = time.time() - 60
    burst = [replace(make_exchange(started_at=at, target=f"/burst/{i}".encode()), id=model.new_id(at)) for i in range(6)]
    earlier = make_exchange(started_at=at - 3600, target=b"/earlier")
    assert len({ex.id[:10] for ex in burst}) == 1
    db = tmp_path / "captures.db"
    store = Store(db)
    store.put_many([earlier, *burst])
    store.close()
    return db, [earlier, *burst]


def test_requests_prints_the_shortest_prefix_that_names_each_exchange(one_millisecond: tuple[Path, list[Exchange]]) -> None:
    db, exchanges = one_millisecond
    proc = cli(None, "requests", db=db, columns=120)
    assert proc.returncode == 0, proc.stderr
    shown = [line.split()[0] for line in proc.stdout.splitlines()[1:]]
    assert_short_ids(shown, exchanges)
    assert len(shown[0]) == 8  # alone in its second: the fewest characters
    assert all(len(short) <= 13 for short in shown[1:])  # one millisecond: still well short of 26
    for short, ex in zip(shown, exchanges):
        done = cli(None, "show", short, db=db)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"exchange  {ex.id}\n")


def test_the_log_lines_fixed_short_id_names_one_exchange_of_a_millisecond(one_millisecond: tuple[Path, list[Exchange]]) -> None:
    db, exchanges = one_millisecond
    for ex in exchanges:
        logged = exchange_line(ex).split()[1]
        assert logged == stable_short_id(ex.id) and len(logged) == 13
        done = cli(None, "show", logged, db=db)
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith(f"exchange  {ex.id}\n")
    a, b = exchanges[1], exchanges[2]
    done = cli(None, "diff", stable_short_id(a.id), stable_short_id(b.id), "--side", "request", db=db)
    assert done.returncode == 1 and "/burst/0" in done.stdout and "/burst/1" in done.stdout


def test_a_prefix_of_many_says_how_many_it_matches(one_millisecond: tuple[Path, list[Exchange]]) -> None:
    db, exchanges = one_millisecond
    millisecond = exchanges[1].id[:10]
    line = assert_one_line_error(cli(None, "show", millisecond, db=db))
    assert f"the id prefix {millisecond} is ambiguous: 6 matches ({exchanges[1].id}, {exchanges[2].id}, " in line
    line = assert_one_line_error(cli(None, "export", millisecond.lower(), "--format", "curl", db=db))
    assert "ambiguous: 6 matches" in line
    assert "ambiguous: 7 matches" in assert_one_line_error(cli(None, "show", "0", db=db))


@pytest.mark.parametrize(
    ("reason", "shown"),
    [("Größe".encode(), "Größe"), (b"Gr\xf6\xdfe", "Gr\\xf6\\xdfe"), (b"caf\xc3\xa9\x1b[2J", "café\\x1b[2J")],
    ids=["utf-8", "not-utf-8", "utf-8-with-escape"],
)
def test_a_reason_phrase_shows_as_utf8_and_is_kept_byte_for_byte(captures: Captures, reason: bytes, shown: str) -> None:
    """The reason came from the network as bytes: ``show`` and ``replay`` read them as UTF-8 where
    they are (they printed latin-1, ``GrÃ¶Ãe``), escaped where not; the capture keeps the bytes."""
    from devtunnel.export.assemble import response_bytes
    from tests.export.rawserver import RawServer

    answer = b"HTTP/1.1 418 " + reason + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ex = captures.exchanges[0]
    with RawServer(answer) as server:
        proc = cli(captures, "replay", ex.id, "--to", server.url)
    assert proc.returncode == 1, proc.stderr  # answered 418: an error answer
    (new,) = [e for e in _stored(captures) if e.replay_of == ex.id]
    assert proc.stdout.split("  ")[1] == f"418 {shown}", proc.stdout
    assert new.response is not None and new.response.reason.encode("latin-1") == reason  # stored as received
    out = cli(captures, "show", new.id).stdout
    assert f"HTTP/1.1 418 {shown}\n" in out, out
    assert "\x1b" not in out
    assert response_bytes(new.response).startswith(b"HTTP/1.1 418 " + reason + b"\r\n")  # exports: as received


def test_show_and_replay_escape_ids_and_error_kinds_read_from_the_database(captures: Captures) -> None:
    """A database is a file: one copied from elsewhere, or written by another program, can hold
    any text in its id, replay_of and error columns; ``show`` and ``replay`` printed those raw."""
    from devtunnel.values.terminal import needs_escape

    hostile = "\x1b]0;pwned\x07\u202e"
    original = replace(captures.exchanges[0], id="01HOSTILE" + hostile, error="local_" + hostile + "kind",
                       error_message="x", replay_of="01PARENT" + hostile, duration=0.01)
    replay_row = replace(captures.exchanges[3], id="01KIDREPLAY" + hostile, replay_of=original.id,
                         error=hostile + "kind", response=None)
    store = Store(captures.db)
    store.put_many([original, replay_row])
    store.close()
    for args in (["show", "01HOSTILE"], ["replay", "01HOSTILE"]):
        proc = cli(captures, *args)
        out = proc.stdout + proc.stderr
        assert "01HOSTILE\\x1b]0;pwned\\x07\\u202e" in out, out
        assert not [ch for ch in out if ch != "\n" and needs_escape(ch)], out
    shown = cli(captures, "show", "01HOSTILE").stdout
    assert "replay of 01PARENT\\x1b]0;pwned\\x07\\u202e" in shown
    assert "replayed  01KIDREPLAY\\x1b]0;pwned\\x07\\u202e  ERR \\x1b]0;pwned\\x07\\u202ekind" in shown, shown
    assert "error     local_\\x1b]0;pwned\\x07\\u202ekind: x" in shown, shown


def test_a_warning_of_a_command_without_its_own_log_setup_is_escaped(tmp_path: Path) -> None:
    """The capture database's upgrade notice quotes its path (``--db``, ``DEVTUNNEL_DB``): in a
    command that sets up no logging (``replay`` opens the file writable) logging's last resort
    printed it raw."""
    import sqlite3

    from devtunnel.values.terminal import needs_escape
    from tests.capture.test_store_webhooks import TO_SCHEMA_7

    folder = tmp_path / "db\x1b]0;pwned\x07\nforged line"
    folder.mkdir()
    path = folder / "old.db"
    store = Store(path)
    ex = make_exchange()
    store.put(ex)
    store.close()
    with sqlite3.connect(path) as conn:  # back to the layout of schema 7
        conn.executescript(TO_SCHEMA_7 + "PRAGMA user_version = 7;")
    with socket.socket() as closed:  # a port nothing listens on: the replay fails, after the upgrade
        closed.bind(("127.0.0.1", 0))
        proc = cli(None, "replay", ex.id, "--to", f"http://127.0.0.1:{closed.getsockname()[1]}", db=path)
    assert "db\\x1b]0;pwned\\x07\\nforged line/old.db: upgrading the capture database" in proc.stderr, proc.stderr
    assert not any(line.startswith("forged line") for line in proc.stderr.splitlines()), proc.stderr
    assert not [ch for ch in proc.stderr if ch != "\n" and needs_escape(ch)], proc.stderr


def test_diff_prints_each_hidden_character_escaped_once_as_the_inspector_shows_it(tmp_path: Path) -> None:
    """The diff's own rule let a bidi override or a BOM through, and the command line escaped its
    escapes again (``\\\\x1b`` where the inspector and ``show`` print ``\\x1b``)."""
    a = make_exchange(target=b"/d", req_body=b'{"k": "x"}', resp_body=b"plain\n",
                      resp_headers=[("Content-Type", "text/plain")], started_at=time.time() - 2)
    b = make_exchange(target=b"/d", req_body=b'{"k": "\\u202ey"}', resp_body=b"red\x1b[31m \xe2\x80\xae\n",
                      resp_headers=[("Content-Type", "text/plain")], started_at=time.time() - 1)
    db = tmp_path / "captures.db"
    store = Store(db)
    store.put_many([a, b])
    store.close()
    done = cli(None, "diff", a.id, b.id, db=db)
    assert done.returncode == 1, done.stderr
    assert '+  "k": "\\u202ey"\n' in done.stdout, done.stdout
    assert "+red\\x1b[31m \\u202e\n" in done.stdout, done.stdout
    assert "\x1b" not in done.stdout and "\u202e" not in done.stdout


# A reason phrase and a header value holding the same bytes: UTF-8, not UTF-8 (latin-1 letters),
# UTF-8 with ESC. Shown: read as UTF-8, other bytes \xNN; in JSON: other bytes U+FFFD.
SAME_BYTES = [("Größe".encode(), "Größe", "Größe"), (b"Gr\xf6\xdfe", "Gr\\xf6\\xdfe", "Gr\ufffd\ufffde"),
              (b"caf\xc3\xa9\x1b[2J", "café\\x1b[2J", "café\x1b[2J")]


@pytest.mark.parametrize(("raw", "shown", "in_json"), SAME_BYTES, ids=["utf-8", "not-utf-8", "utf-8-with-escape"])
def test_a_reason_and_a_header_value_read_the_same_everywhere_and_json_always_encodes(
        captures: Captures, raw: bytes, shown: str, in_json: str) -> None:
    """``show`` read the reason as UTF-8 (``\\xNN`` for other bytes) but a header value as latin-1
    when not UTF-8 (``Größe``), the diff's status line and HAR's ``statusText`` and ``show --json``'s
    ``status`` read the reason as latin-1 (``GrÃ¶Ãe``). One reading now for a person, and for JSON
    the same with U+FFFD for a byte that is not UTF-8; the raw response keeps the bytes."""
    from devtunnel.export.assemble import response_bytes
    from tests.export.rawserver import RawServer

    answer = b"HTTP/1.1 418 " + raw + b"\r\nX-Reason: " + raw + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    ex = captures.exchanges[0]
    with RawServer(answer) as server:
        assert cli(captures, "replay", ex.id, "--to", server.url).returncode == 1  # answered 418
    (new,) = [e for e in _stored(captures) if e.replay_of == ex.id]
    assert new.response is not None
    assert response_bytes(new.response).startswith(answer.split(b"\r\nContent-Length")[0])  # as received

    out = cli(captures, "show", new.id).stdout
    assert f"HTTP/1.1 418 {shown}\n" in out and f"X-Reason: {shown}\n" in out, out
    diff = cli(captures, "diff", ex.id, new.id, "--side", "response")
    assert diff.returncode == 1, diff.stderr
    assert f"+HTTP/1.1 418 {shown}\n" in diff.stdout and f"+X-Reason: {shown}\n" in diff.stdout, diff.stdout
    for text in (out, diff.stdout):
        assert "\x1b" not in text and "Ã" not in text

    har = cli(captures, "export", new.id, "--format", "har")
    assert har.returncode == 0, har.stderr
    har.stdout.encode("utf-8")  # strict: no lone surrogate went out
    (entry,) = json.loads(har.stdout)["log"]["entries"]
    assert entry["response"]["statusText"] == in_json
    (header,) = [h for h in entry["response"]["headers"] if h["name"] == "X-Reason"]
    assert header["value"] == in_json
    if "_valueBase64" in header:  # a value that is not UTF-8 keeps its bytes there
        assert base64.b64decode(header["_valueBase64"]) == raw
    shown_json = cli(captures, "show", new.id, "--json")
    assert shown_json.returncode == 0, shown_json.stderr
    assert "\\ud" not in shown_json.stdout  # no lone surrogate escaped into the JSON either
    assert json.loads(shown_json.stdout)["response"]["status"] == f"418 {in_json}"


def test_show_names_the_rule_that_answered_at_the_relay_and_requests_marks_it(captures: Captures) -> None:
    from devtunnel.capture.model import RuleMark

    denied = replace(make_exchange(target=b"/admin", status=403), rule=RuleMark(2, "deny"))
    store = Store(captures.db)
    store.put(denied)
    store.close()
    shown = cli(captures, "show", denied.id)
    assert shown.returncode == 0, shown.stderr
    assert "rule      rule 2 deny (at the relay)" in shown.stdout.splitlines()
    assert "EVENT" not in cli(captures, "requests").stdout  # no delivery listed: no EVENT column
    assert any(line.endswith("⊘ /admin") for line in cli(captures, "requests").stdout.splitlines())



def test_requests_after_devtunnel_was_upgraded_upgrades_the_file_and_lists_it(captures: Captures) -> None:
    # A file the previous devtunnel wrote (schema 8), read before any agent of the new one opened it.
    import sqlite3

    from devtunnel.capture.schema import SCHEMA_VERSION
    from tests.capture.test_store_webhooks import TO_SCHEMA_8

    with sqlite3.connect(captures.db) as conn:
        conn.executescript(TO_SCHEMA_8 + "PRAGMA user_version = 8;")
    proc = cli(captures, "requests", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [r["id"] for r in json.loads(proc.stdout)] == [ex.id for ex in captures.exchanges]
    assert "upgrading the capture database from schema 8" in proc.stderr and "Traceback" not in proc.stderr
    with sqlite3.connect(captures.db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_requests_while_another_devtunnel_upgrades_the_file_says_so_in_one_line_and_exits_1(captures: Captures) -> None:
    # The agent of the new devtunnel upgrading a large file from the previous one holds its write
    # lock for the one transaction of the upgrade (25 s for 1 GB of schema 1): a reader that meets
    # the old schema meanwhile cannot upgrade it itself. It said "locked by another process; close it".
    import sqlite3

    from devtunnel.capture.schema import SCHEMA_VERSION
    from tests.capture.test_store_webhooks import TO_SCHEMA_8

    with sqlite3.connect(captures.db) as conn:
        conn.executescript(TO_SCHEMA_8 + "PRAGMA user_version = 8;")
    conn.close()
    upgrading = sqlite3.connect(captures.db, isolation_level=None)
    try:
        upgrading.execute("BEGIN IMMEDIATE")
        proc = cli(captures, "requests")
    finally:
        upgrading.close()
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"devtunnel: {captures.db} is being upgraded to schema {SCHEMA_VERSION} by another devtunnel (a large file "
        "takes a while); try again when it is done, or pass --db"]
    assert cli(captures, "requests").returncode == 0  # and then it is


def test_a_hostile_event_type_and_reason_are_escaped_in_requests_and_show(captures: Captures) -> None:
    # The event type and delivery id come from the delivery's body, the reason quotes its header.
    from devtunnel.capture.verdict import Signature, Verdict

    verdict = Verdict("stripe", "\x1b]0;pwned\x07[bold]x[/]", "evt_\x1b[2J", Signature.INVALID, "bad \x1b[31mheader")
    hook = replace(make_exchange(target=b"/hook"), webhook=verdict)
    store = Store(captures.db)
    store.put(hook)
    store.close()
    listed = cli(captures, "requests", columns=200).stdout
    shown = cli(captures, "show", hook.id).stdout
    for out in (listed, shown):
        assert "\x1b" not in out and "\x07" not in out
        assert "\\x1b]0;pwned\\x07[bold]x[/]" in out
    assert "✗ stripe \\x1b]0;pwned\\x07[bold]x[/]" in listed
    assert "webhook   stripe \\x1b]0;pwned\\x07[bold]x[/]  (delivery evt_\\x1b[2J)" in shown.splitlines()
    assert "signature ✗ invalid: bad \\x1b[31mheader" in shown.splitlines()


def test_one_delivery_with_a_long_event_type_does_not_hide_every_deliverys_event_column(captures: Captures) -> None:
    """The event type comes from a delivery's body: anyone who can POST to the public URL picks
    it. One of 3,000 characters made EVENT (and TUNNEL) too wide for any terminal, so ``requests``
    left both out for every row listed: no signature mark on any delivery. A long method (an
    edited replay's) did the same to every column but METHOD. Each is cut with ``…``, as the
    inspector cuts them."""
    from devtunnel.capture.verdict import Signature, Verdict

    good = replace(make_exchange(target=b"/webhooks/stripe"),
                   webhook=Verdict("stripe", "invoice.paid", "evt_1", Signature.VALID, ""))
    long = replace(make_exchange(target=b"/webhooks/stripe"),
                   webhook=Verdict("stripe", "E" * 3000, "evt_2", Signature.INVALID, "no"))
    wide = make_exchange(method="M" * 3000, target=b"/edited")
    store = Store(captures.db)
    store.put_many([good, long, wide])
    store.close()
    done = cli(captures, "requests", "--limit", "3", columns=150)
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:4] == ["ID", "TIME", "TUNNEL", "METHOD"] and "EVENT" in header, done.stdout
    assert "✓ stripe invoice.paid" in rows[0] and rows[0].endswith("/webhooks/stripe"), done.stdout
    assert "✗ stripe EEE" in rows[1] and "…" in rows[1] and rows[1].endswith("/webhooks/stripe"), done.stdout
    assert "MMM" in rows[2] and rows[2].endswith("/edited"), done.stdout
    assert all(len(line) <= 150 for line in done.stdout.splitlines()), done.stdout


def test_at_80_columns_a_list_of_deliveries_keeps_their_event_and_cuts_the_path(captures: Captures) -> None:
    """The signature mark and event type say more than the end of a path: PATH is cut and the
    event type after it, while TUNNEL, SIZE and TIME go; a list without a delivery is laid out as before."""
    from devtunnel.capture.verdict import Signature, Verdict

    before = cli(captures, "requests", columns=80).stdout.splitlines()
    assert before[0].split() == ["ID", "TIME", "TUNNEL", "METHOD", "STATUS", "DURATION", "SIZE", "PATH"], before
    assert any(line.endswith("  /health") for line in before), before
    store = Store(captures.db)
    store.put_many([
        replace(make_exchange(target=b"/webhooks/stripe"),
                webhook=Verdict("stripe", "payment_intent.succeeded", "evt_1", Signature.VALID, "")),
        replace(make_exchange(target=b"/webhooks/github?attempt=2"),
                webhook=Verdict("github", "pull_request.opened", "d1", Signature.INVALID, "bad")),
    ])
    store.close()
    for columns in (80, 100):
        done = cli(captures, "requests", columns=columns)
        assert done.returncode == 0, done.stderr
        header, *rows = done.stdout.splitlines()
        assert "EVENT" in header and header.split()[-1] == "PATH", done.stdout
        assert all(len(line) <= columns for line in done.stdout.splitlines()), done.stdout
        assert "✓ stripe payment_intent" in rows[-2] and "✗ github pull_request" in rows[-1], done.stdout
        assert rows[-1].split()[-1].startswith("/webh"), done.stdout


@pytest.mark.parametrize("command", [["show"], ["replay"], ["export"], ["diff", "EVT"]])
def test_a_delivery_id_given_for_an_exchange_id_is_said_to_be_one_with_its_captures(
        captures: Captures, command: list[str]) -> None:
    """Found by use: the delivery line shows `[evt_...]`, and `devtunnel replay evt_...` (as
    `stripe events resend evt_...`) said only "no exchange with id evt_...\""""
    from devtunnel.capture.verdict import Signature, Verdict

    first = replace(make_exchange(target=b"/webhooks/stripe"),
                    webhook=Verdict("stripe", "invoice.paid", "evt_1Q2w3E", Signature.VALID, ""))
    retry = replace(make_exchange(target=b"/webhooks/stripe"),
                    webhook=Verdict("stripe", "invoice.paid", "evt_1Q2w3E", Signature.VALID, ""))
    store = Store(captures.db)
    store.put_many([first, retry])
    short = store.short_ids([first.id, retry.id])
    store.close()
    args = [*command[:1], "evt_1Q2w3E", *(["evt_1Q2w3E"] if command[1:] else [])]
    done = cli(captures, *args)
    assert done.returncode == (2 if command[0] == "diff" else 1)
    assert done.stderr == (f"devtunnel: 'evt_1Q2w3E' is not an exchange id but a webhook delivery id, captured as "
                           f"{short[first.id]}, {short[retry.id]} (devtunnel requests --filter delivery:evt_1Q2w3E "
                           "lists its captures)\n")
    assert captures.seen.requests == []  # nothing sent
    listed = cli(captures, "requests", "--filter", "delivery:evt_1Q2w3E")
    assert listed.returncode == 0 and len(listed.stdout.splitlines()) == 3


# -- a locale that is not UTF-8 ------------------------------------------------------------------


def test_in_a_locale_that_is_not_utf8_the_commands_show_what_it_cannot_write_and_export_writes_utf8(captures: Captures) -> None:
    """``LC_ALL=C`` with ``PYTHONUTF8=0`` (or ``LANG=en_US.ISO-8859-1``): stdout writes ASCII.
    show, diff and replay ended in a UnicodeEncodeError traceback at the first ``✓``, ``—`` or
    captured character it could not write; export to a pipe now writes what ``-o`` writes."""
    body = '{"name": "Zoë ✓ 日本"}'.encode()
    ex = make_exchange(started_at=time.time(), target=b"/webhooks/caf\xc3\xa9", req_body=body, resp_body=body,
                       resp_headers=[("Content-Type", "application/json")], target_url=captures.target)
    store = Store(captures.db)
    store.put_many([ex])
    store.close()
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0"}
    env.pop("PYTHONIOENCODING", None)

    def run(*args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run([DEVTUNNEL, *args, "--db", str(captures.db)], capture_output=True, env=env,
                              cwd=captures.cwd, timeout=60)

    for args in (["show", ex.id], ["diff", captures.exchanges[0].id, ex.id], ["replay", ex.id], ["requests"]):
        done = run(*args)
        assert b"Traceback" not in done.stderr and done.returncode in (0, 1), (args, done.stderr)
        assert done.stdout.isascii(), args
    shown = run("show", ex.id).stdout.decode()
    assert "Zo\\xeb \\u2713 \\u65e5\\u672c" in shown
    piped = run("export", ex.id, "--format", "curl")
    assert piped.returncode == 0, piped.stderr
    assert run("export", ex.id, "--format", "curl", "-o", "hook.sh").returncode == 0
    assert piped.stdout == (captures.cwd / "hook.sh").read_bytes()
    assert "Zoë ✓ 日本" in piped.stdout.decode("utf-8")


def test_requests_json_of_every_row_holds_a_page_at_a_time_not_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``requests --json --limit 0`` of a million rows built the list and its text whole: 3.9 GB."""
    import tracemalloc

    from devtunnel import cli as cli_module
    from devtunnel.commands import captures as captures_module

    monkeypatch.setattr(captures_module, "_PAGE", 100, raising=False)
    monkeypatch.setattr(sys.stdout, "write", lambda text: len(text))  # the output is checked below, not held
    peaks: list[int] = []
    for n in (300, 3000):
        db = tmp_path / f"{n}.db"
        exs = [make_exchange(target=f"/p/{i}".encode(), status=200 + i % 2) for i in range(n)]
        Store(db).put_many(exs)
        tracemalloc.start()
        try:
            assert cli_module.main(["--db", str(db), "requests", "--json", "--limit", "0"]) == 0
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0]  # a page of rows, whatever the store holds
    monkeypatch.undo()
    monkeypatch.setattr(captures_module, "_PAGE", 7, raising=False)
    for expression in ("", "status:201"):
        assert cli_module.main(["--db", str(tmp_path / "300.db"), "requests", "--json", "-n", "0",
                                "--filter", expression]) == 0
        out = capsys.readouterr().out
        assert out == json.dumps(json.loads(out), indent=2) + "\n"
        rows = Store(tmp_path / "300.db").rows(expression)
        assert [r["id"] for r in json.loads(out)] == [r.id for r in rows]


def test_show_reads_the_rows_of_its_own_replays_not_every_replay(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``show ID`` read the row of every replay in the store and kept those of ID in Python."""
    from devtunnel import cli as cli_module
    from devtunnel.capture import store as store_module

    db = tmp_path / "c.db"
    original, other = make_exchange(target=b"/a"), make_exchange(target=b"/b")
    replays = [replace(make_exchange(target=b"/b", status=201 + i % 2), replay_of=other.id) for i in range(200)]
    mine = replace(make_exchange(target=b"/a", status=202), replay_of=original.id)
    Store(db).put_many([original, other, *replays, mine])
    read: list[object] = []
    to_row = store_module.to_row
    monkeypatch.setattr(store_module, "to_row", lambda r: read.append(r) or to_row(r))
    assert cli_module.main(["--db", str(db), "show", original.id]) == 0
    assert f"replayed  {mine.id}  202" in capsys.readouterr().out
    assert len(read) == 1


@pytest.mark.parametrize("fmt", ["curl", "raw"])
def test_an_export_that_cannot_be_written_whole_leaves_nothing_and_can_be_run_again(
    tmp_path: Path, fmt: str
) -> None:
    # A full disk (here the file size limit, ``ulimit -f``) cut the side file short after the
    # script naming it was written: the script sent a truncated body without a word, and the
    # export run again once there was room refused to replace the cut side file.
    from tests.kit.exchanges import make_exchange

    db, work = tmp_path / "captures.db", tmp_path / "work"
    work.mkdir()
    body = bytes(range(256)) * 1200  # 300 KiB, not text: a side file
    ex = make_exchange("POST", "/upload", [(b"Content-Type", b"application/octet-stream")], body)
    with Store(db) as store:
        store.put(ex)
    out = work / "upload.txt"
    out.write_text("kept\n")
    out.chmod(0o600)  # the user's choice for a file that will hold credentials
    args = [DEVTUNNEL, "export", ex.id, "--format", fmt, "-o", str(out), "--db", str(db)]
    cut = subprocess.run(["prlimit", "--fsize=100000", "--", *args], capture_output=True, text=True, timeout=60)
    assert cut.returncode == 1, cut.stderr
    [line] = cut.stderr.splitlines()
    assert line.startswith("devtunnel: cannot write ") and line.endswith(": File too large"), line
    assert sorted(p.name for p in work.iterdir()) == ["upload.txt"]
    assert out.read_text() == "kept\n"
    again = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    [side] = [p for p in work.iterdir() if p != out]
    assert body in side.read_bytes() and side.name in out.read_text()
    assert out.stat().st_mode & 0o777 == 0o600


def test_an_export_to_a_link_writes_the_file_it_points_to(captures: Captures, tmp_path: Path) -> None:
    # Written whole through FILE.part, a link given as -o was replaced by a file of its own.
    real = tmp_path / "scripts" / "upload.sh"
    real.parent.mkdir()
    real.write_text("old\n")
    link = captures.cwd / "upload.sh"
    link.symlink_to(real)
    for fmt, args in (("curl", [captures.exchanges[0].id]), ("har", ["--filter", "method:POST"])):
        done = cli(captures, "export", *args, "--format", fmt, "-o", str(link))
        assert done.returncode == 0, done.stderr
        assert link.is_symlink() and real.read_text() != "old\n", fmt
        assert sorted(p.name for p in real.parent.iterdir()) == ["upload.sh"]
