"""``devtunnel export`` as a user runs it: --to another base URL, redaction, raw text on a terminal."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.export import Export
from tests.export.rawserver import RawServer
from tests.export.support import run_shell
from tests.kit.exchanges import make_exchange

DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")

HOOK = make_exchange(
    "POST",
    b"/hooks/stripe?attempt=2&api_key=QK1",
    [(b"Host", b"shop.example"), (b"Content-Type", b"application/json"), (b"Content-Length", b"34")],
    b'{"amount": 2000, "password": "PW1"}'[:34],
    target_url="http://127.0.0.1:9",
)
CR_BODY = make_exchange("POST", b"/cr", [(b"Host", b"h"), (b"Content-Length", b"19")], b"visible\rHIDDEN-TEXT")
TABS = make_exchange("POST", b"/t", [(b"Host", b"h"), (b"X-Tab", b"a\tb"), (b"Content-Length", b"13")], b"col1\tcol2\n'q'")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "captures.db"
    store = Store(path)
    store.put_many([HOOK, CR_BODY, TABS])
    store.close()
    return path


def run(db: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DEVTUNNEL, "export", *args, "--db", str(db)], capture_output=True, text=True, cwd=cwd,
                          timeout=60, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)  # bad usage
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("devtunnel: ") and "Traceback" not in proc.stderr, proc.stderr
    return lines[0]


def test_to_sends_the_captured_path_and_query_to_another_base_url(db: Path, tmp_path: Path) -> None:
    with RawServer() as server:
        proc = run(db, HOOK.id, "--format", "curl", "--to", server.url, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "Content-Length" not in proc.stdout
        # Edited as a person would: a smaller amount, so a shorter body.
        edited = proc.stdout.replace("2000", "20")
        done = run_shell(Export(edited), tmp_path)
        assert done.returncode == 0, done.stderr
    (got,) = server.received
    assert got.target == b"/hooks/stripe?attempt=2&api_key=QK1"
    assert got.body == b'{"amount": 20, "password": "PW1"}'[:32]
    assert (b"Host", b"shop.example") in got.headers


def test_tabs_print_escaped_and_the_printed_command_sends_them(db: Path, tmp_path: Path) -> None:
    """A tab printed raw turns into spaces when the command is copied from the terminal."""
    with RawServer() as server:
        proc = run(db, TABS.id, "--format", "curl", "--to", server.url, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        assert "\t" not in proc.stdout and "$'a\\tb'" not in proc.stdout and "$'X-Tab: a\\tb'" in proc.stdout
        done = run_shell(Export(proc.stdout), tmp_path)
        assert done.returncode == 0, done.stderr
    (got,) = server.received
    assert (b"X-Tab", b"a\tb") in got.headers and got.body == TABS.request.body


def test_to_local_uses_each_exchanges_local_service(db: Path, tmp_path: Path) -> None:
    proc = run(db, HOOK.id, "--format", "httpie", "--to", "local", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "http://127.0.0.1:9/hooks/stripe?attempt=2&api_key=QK1" in proc.stdout


def test_redact_hides_query_and_json_secrets(db: Path, tmp_path: Path) -> None:
    proc = run(db, HOOK.id, "--format", "curl", "--redact", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "QK1" not in proc.stdout and "PW1" not in proc.stdout and "attempt=2" in proc.stdout


@pytest.mark.parametrize(
    ("to", "message"),
    [
        ("ftp://127.0.0.1/", "not an http:// or https:// URL"),
        ("127.0.0.1:8080", "not an http:// or https:// URL"),
        ("http://", "not an http:// or https:// URL"),
        ("http://127.0.0.1:99999", "not a valid URL"),
        ("http://user:pw@127.0.0.1:8080", "user info"),
        ("http://127.0.0.1:8080/?x=1", "query or fragment"),
        ("http://127.0.0.1:8080/\x1b[2J", "control characters"),
    ],
)
def test_a_bad_to_url_is_a_one_line_error(db: Path, tmp_path: Path, to: str, message: str) -> None:
    line = one_line_error(run(db, HOOK.id, "--format", "curl", "--to", to, cwd=tmp_path))
    assert message in line and "\x1b" not in line


def test_to_with_raw_says_it_has_no_url(db: Path, tmp_path: Path) -> None:
    assert "names no URL" in one_line_error(run(db, HOOK.id, "--format", "raw", "--to", "http://127.0.0.1:1", cwd=tmp_path))


def _on_a_terminal(args: list[str], cwd: Path) -> tuple[int, bytes]:
    """Run devtunnel with stdout on a pseudo-terminal; returns the exit code and what the terminal got."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([DEVTUNNEL, *args], stdout=slave, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, cwd=cwd)
    os.close(slave)
    out = bytearray()
    while True:
        ready, _, _ = select.select([master], [], [], 30)
        if not ready:
            proc.kill()
            raise AssertionError("no output from devtunnel within 30 s")
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        out += data
    os.close(master)
    assert proc.stderr is not None
    proc.stderr.read()
    return proc.wait(timeout=30), bytes(out)


def test_raw_on_a_terminal_shows_a_lone_cr_escaped(db: Path, tmp_path: Path) -> None:
    code, shown = _on_a_terminal(["export", CR_BODY.id, "--format", "raw", "--db", str(db)], tmp_path)
    assert code == 0
    text = shown.replace(b"\r\n", b"\n")  # the terminal's own line ends
    assert b"\r" not in text and b"visible\\rHIDDEN-TEXT" in text


def test_raw_to_a_pipe_or_file_keeps_the_exact_bytes(db: Path, tmp_path: Path) -> None:
    proc = subprocess.run([DEVTUNNEL, "export", CR_BODY.id, "--format", "raw", "--db", str(db)], capture_output=True,
                          cwd=tmp_path, timeout=60, check=False)
    assert proc.returncode == 0 and b"visible\rHIDDEN-TEXT" in proc.stdout


BINARY = make_exchange("POST", b"/bin", [(b"Host", b"h"), (b"Content-Length", b"4")], b"\x00\xff\x01\x02")


def test_raw_to_a_pipe_never_replaces_a_file_and_says_where_side_files_went(tmp_path: Path) -> None:
    db = tmp_path / "captures.db"
    store = Store(db)
    store.put_many([BINARY])
    store.close()
    work = tmp_path / "work"
    work.mkdir()
    side = work / f"{BINARY.id}.request.http"
    side.write_bytes(b"the user's own file\n")
    refused = run(db, BINARY.id, "--format", "raw", cwd=work)
    assert refused.returncode == 1 and refused.stdout == "", refused.stdout
    (line,) = refused.stderr.strip().splitlines()
    assert line.startswith("devtunnel: refusing to replace ") and str(side) in line, line
    assert side.read_bytes() == b"the user's own file\n"  # left as it was
    side.unlink()
    first = run(db, BINARY.id, "--format", "raw", cwd=work)
    assert first.returncode == 0, first.stderr
    assert f"wrote {side} (" in first.stderr  # the full path: piped, it went to the current directory
    assert side.read_bytes().endswith(b"\r\n\r\n\x00\xff\x01\x02") and side.name in first.stdout
    again = run(db, BINARY.id, "--format", "raw", cwd=work)  # the same bytes: kept, not an error
    assert again.returncode == 0 and f"kept (same bytes) {side} (" in again.stderr, again.stderr


@pytest.mark.parametrize("fmt", ["curl", "httpie"])
def test_a_filter_that_matches_a_websocket_session_says_how_to_leave_it_out(db: Path, tmp_path: Path, fmt: str) -> None:
    # The whole export was refused naming the session, with no word on how to get the rest.
    store = Store(db)
    store.put_many([make_exchange("GET", b"/live", [(b"Host", b"h"), (b"Upgrade", b"websocket")], websocket=True)])
    store.close()
    proc = run(db, "--filter", "tunnel:demo", "--format", fmt, cwd=tmp_path)
    assert proc.returncode == 1 and "WebSocket session" in proc.stderr and "!ws" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    again = run(db, "--filter", "tunnel:demo !ws", "--format", fmt, cwd=tmp_path)
    assert again.returncode == 0 and "/hooks/stripe" in again.stdout, again.stderr


def test_har_of_a_filter_is_written_as_it_is_read_with_the_bytes_of_the_whole_export(tmp_path: Path) -> None:
    """``export --filter --format har`` held every match and the whole text (0.46 GB for 25,000):
    it holds a chunk of exchanges, whatever the matches, and writes what ``export`` would."""
    import tracemalloc

    from devtunnel import cli as cli_module
    from devtunnel.export import export

    peaks: list[int] = []
    for n in (200, 800):
        db = tmp_path / f"{n}.db"
        body = b'{"text": "' + b"x" * 4000 + b'"}'
        # Two start times out of id order: the log is sorted by start time, ties in id order.
        exs = [make_exchange("POST", f"/hook/{i}".encode(), [(b"Host", b"shop.example")], body,
                             started_at=1000.0 + i - (5 if i % 50 == 49 else 0)) for i in range(n)]
        Store(db).put_many(exs)
        out = tmp_path / f"{n}.har"
        tracemalloc.start()
        try:
            assert cli_module.main(["--db", str(db), "export", "--filter", "path:/hook", "--format", "har",
                                    "-o", str(out)]) == 0
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert out.read_bytes() == export("har", Store(db).query("path:/hook")).text.encode()
        assert not out.with_name(out.name + ".part").exists()
    assert peaks[1] < 1.5 * peaks[0]  # a chunk of exchanges, not every match
    newest = tmp_path / "newest.har"
    assert cli_module.main(["--db", str(tmp_path / "200.db"), "export", "--filter", "path:/hook", "--limit", "3",
                            "--format", "har", "-o", str(newest)]) == 0
    store = Store(tmp_path / "200.db")
    assert newest.read_bytes() == export("har", store.query("path:/hook", limit=3, newest_first=True)).text.encode()


def test_a_har_export_that_fails_midway_leaves_the_file_as_it_was(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    # --to local needs each exchange's local service: the second has none.
    Store(db).put_many([make_exchange("GET", b"/a", [(b"Host", b"h")], target_url="http://127.0.0.1:9"),
                        make_exchange("GET", b"/b", [(b"Host", b"h")], target_url="")])
    out = tmp_path / "hooks.har"
    out.write_bytes(b"earlier")
    done = subprocess.run([DEVTUNNEL, "--db", str(db), "export", "--filter", "method:GET", "--format", "har",
                           "--to", "local", "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "Traceback" not in done.stderr and "local service" in done.stderr, done.stderr
    assert out.read_bytes() == b"earlier" and not (tmp_path / "hooks.har.part").exists()
