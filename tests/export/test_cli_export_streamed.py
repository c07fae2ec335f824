"""``devtunnel export`` in every format writes as it reads: the same bytes as the whole export,
in memory bounded by a chunk of exchanges, not by the matches."""

from __future__ import annotations

import gzip
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from devtunnel import cli as cli_module
from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.export import EXPORTERS, export
from tests.kit.exchanges import T0, make_exchange, make_request, make_response

DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")
STRIPE = b"t=1700000000,v1=" + b"ab" * 32


def varied() -> list[Exchange]:
    """Exchanges of every kind an export treats apart: text and binary bodies, a body over the
    inline limit, one cut at the cap, CR and tab, HTTP/1.0, gzip, no response, a Stripe delivery,
    a header that is not UTF-8 (tunnel ``edge``), a WebSocket session
    (tunnel ``ws``), and two exchanges started out of id order."""
    json_ct = [(b"Host", b"shop.example"), (b"Content-Type", b"application/json")]
    ok = make_response(200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"2")], b"ok")
    exs = [
        make_exchange("POST", b"/hooks/a?x=1", [*json_ct, (b"Content-Length", b"11")], b'{"a": "\xc3\xa9"}'[:11],
                      response=ok, started_at=T0 + 1),
        make_exchange("PUT", b"/bin", [(b"Host", b"h"), (b"Content-Length", b"4")], b"\x00\xff\x01\x02",
                      response=make_response(201, [(b"Content-Length", b"3")], b"\x00\x01\x02"), started_at=T0 + 2),
        make_exchange("POST", b"/cr", [(b"Host", b"h"), (b"Content-Length", b"19")], b"visible\rHIDDEN-TEXT",
                      started_at=T0 + 3),
        make_exchange("POST", b"/t", [(b"Host", b"h"), (b"X-Tab", b"a\tb"), (b"Content-Length", b"13")],
                      b"col1\tcol2\n'q'", response=ok, started_at=T0 - 5),  # started before the others
        make_exchange(request=make_request("GET", b"/old", [(b"Host", b"h")], http_version="1.0"),
                      response=make_response(200, [(b"Content-Length", b"2")], b"ok", http_version="1.0"),
                      started_at=T0 + 4),
        make_exchange("POST", b"/big", [(b"Host", b"h"), (b"Content-Length", b"70000")], b"line\n" * 14000,
                      response=ok, started_at=T0 + 5),
        make_exchange("POST", b"/cut", [(b"Host", b"h"), (b"Content-Length", b"900")], b"z" * 300, body_size=900,
                      body_truncated=True, started_at=T0 + 6),
        make_exchange("GET", b"/gz", [(b"Host", b"h")], response=make_response(
            200, [(b"Content-Encoding", b"gzip"), (b"Content-Type", b"application/json")], gzip.compress(b'{"g": 1}')),
            started_at=T0 + 7),
        make_exchange("GET", b"/down", [(b"Host", b"h")], error="local_refused", error_message="connection refused",
                      started_at=T0 + 8),
        make_exchange("POST", b"/webhooks/stripe", [*json_ct, (b"Stripe-Signature", STRIPE),
                                                    (b"Content-Length", b"27")],
                      b'{"type": "invoice.paid", "x"', response=make_response(400), started_at=T0 + 9),
        make_exchange("GET", b"/latin", [(b"Host", b"h"), (b"X-Name", b"caf\xe9")], response=ok, tunnel="edge",
                      started_at=T0 + 10),
        make_exchange("GET", b"/live", [(b"Host", b"h"), (b"Upgrade", b"websocket")], websocket=True, tunnel="ws",
                      started_at=T0 + 11),
    ]
    exs[4] = make_exchange(request=exs[4].request, response=exs[4].response, started_at=T0 - 9)  # a later id, earlier
    return exs


FILTERS = {  # what each format can express of the varied store
    "curl": "not tunnel:ws",
    "httpie": "tunnel:demo",
    "raw": "not tunnel:nothing",
    "har": "not tunnel:nothing",
    "pytest": "not tunnel:nothing",
}


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "captures.db"
    store = Store(path)
    store.put_many(varied())
    store.close()
    return path


def whole(db: Path, fmt: str, expression: str, folder: Path, *extra: str,
          out: Path | None = None) -> tuple[bytes, dict[str, bytes]]:
    """What the whole export gives: every match in memory, then ``export`` (to the file ``out``,
    which a pytest module names)."""
    store = Store(db, readonly=True)
    try:
        exchanges = store.query(expression)
    finally:
        store.close()
    options: dict[str, object] = {"body_dir": str(folder)} if fmt in ("curl", "httpie", "raw") else {}
    if "--redact" in extra:
        options["redact"] = True
    if fmt == "pytest" and out is not None:
        options["path"] = str(out)
    result = export(fmt, exchanges, **options)
    return result.text.encode("utf-8"), result.files


@pytest.mark.parametrize("extra", [(), ("--redact",)])
@pytest.mark.parametrize("fmt", sorted(EXPORTERS))
def test_every_format_writes_the_bytes_of_the_whole_export(db: Path, tmp_path: Path, fmt: str,
                                                          extra: tuple[str, ...]) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / f"x.{fmt}"
    expression = FILTERS[fmt]
    done = subprocess.run([DEVTUNNEL, "--db", str(db), "export", f"--filter={expression}", "--format", fmt, *extra,
                           "-o", str(out)], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    text, files = whole(db, fmt, expression, folder, *extra, out=out)
    assert out.read_bytes() == text
    for name, data in files.items():
        assert Path(name).read_bytes() == data, name
    assert sorted(p.name for p in folder.iterdir()) == sorted({out.name, *(Path(n).name for n in files)})
    # To a pipe: the same bytes, a newline added where the text has none (raw HTTP); the side files
    # are named in the current folder, where the same bytes are kept.
    text, _ = whole(db, fmt, expression, Path("."), *extra)
    piped = subprocess.run([DEVTUNNEL, "--db", str(db), "export", f"--filter={expression}", "--format", fmt, *extra],
                           capture_output=True, timeout=60, cwd=folder)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == (text if text.endswith(b"\n") else text + b"\n")


def test_ids_given_are_written_in_the_order_of_the_whole_export(db: Path, tmp_path: Path) -> None:
    store = Store(db, readonly=True)
    ids = [ex.id for ex in store.query("tunnel:demo")]
    chosen = [ids[4], ids[0], ids[3]]  # given out of order: written by id, or by start time for HAR
    for fmt in ("curl", "har"):
        out = tmp_path / f"ids.{fmt}"
        assert cli_module.main(["--db", str(db), "export", *chosen, "--format", fmt, "-o", str(out)]) == 0
        options = {"body_dir": str(tmp_path)} if fmt == "curl" else {}
        assert out.read_bytes() == export(fmt, [store.get(i) for i in sorted(chosen)], **options).text.encode()


def test_a_failure_midway_leaves_no_side_file_and_the_output_as_it_was(tmp_path: Path) -> None:
    """The first exchange's side file is written as it is read; the second cannot be a curl
    command: the side file goes, -o keeps what it held."""
    db = tmp_path / "c.db"
    Store(db).put_many([make_exchange("PUT", b"/bin", [(b"Host", b"h")], b"\x00\x01", started_at=T0),
                        make_exchange("GET", b"/live", [(b"Host", b"h")], websocket=True, started_at=T0 + 1)])
    out = tmp_path / "run.sh"
    out.write_bytes(b"earlier")
    done = subprocess.run([DEVTUNNEL, "--db", str(db), "export", "--filter", "tunnel:demo", "--format", "curl",
                           "-o", str(out)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "WebSocket session" in done.stderr and "Traceback" not in done.stderr
    assert out.read_bytes() == b"earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.db", "c.db-shm", "c.db-wal", "run.sh"]


BODY = 20_000
COUNT = 1_000


@pytest.mark.parametrize("fmt", ["curl", "httpie", "raw", "pytest", "har"])
def test_memory_is_a_chunk_of_exchanges_not_every_match(tmp_path: Path, fmt: str) -> None:
    """1,000 exchanges of 20 KB bodies (20 MB of bodies): the whole export held every match and its
    text (over 40 MB, tracemalloc's peak); written as read, a chunk of 100 exchanges and a piece."""
    db = tmp_path / "big.db"
    store = Store(db)
    for start in range(0, COUNT, 100):
        store.put_many([make_exchange("POST", f"/hook/{i}".encode(), [(b"Host", b"shop.example")],
                                      b"%06d" % i + b"x" * (BODY - 6), response=make_response(204), started_at=T0 + i)
                        for i in range(start, start + 100)])
    store.close()
    out = tmp_path / f"big.{fmt}"
    tracemalloc.start()
    try:
        assert cli_module.main(["--db", str(db), "export", "--filter", "path:/hook", "--format", fmt,
                                "-o", str(out)]) == 0
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.stat().st_size > COUNT * BODY
    assert peak < COUNT * BODY / 2, f"{peak / 1e6:.1f} MB at the peak"
