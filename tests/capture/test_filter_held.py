"""``held`` and ``held:>1s``: the requests that waited for the app devtunnel runs (``--hold``), in
Python, in SQL, and through ``devtunnel requests --filter`` and ``export --filter``."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from devtunnel.capture.filters import FILTER_HELP, parse
from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.errors import FilterSyntaxError
from devtunnel.values.exchange_ids import new_id
from tests.kit.exchanges import make_exchange, make_response
from tests.test_cli_captures import DEVTUNNEL


def _exchanges() -> dict[str, Exchange]:
    """Sent at once, held a moment, held long, and held still (no response yet)."""
    return {
        "at-once": make_exchange("GET", "/at-once", id=new_id(), response=make_response(200), duration=0.01),
        "short": make_exchange("POST", "/short", id=new_id(), response=make_response(200), duration=0.5, held=0.25),
        "long": make_exchange("POST", "/long", id=new_id(), response=make_response(201), duration=3.5, held=3.25),
        "waits": make_exchange("GET", "/waits", id=new_id(), held=1.5, holding=True),
    }


@pytest.mark.parametrize(("expression", "expected"), [
    ("held", {"short", "long", "waits"}),
    ("-held", {"at-once"}),
    ("not held", {"at-once"}),
    ("held:>1s", {"long", "waits"}),  # a request still waiting counts its wait so far
    ("held:>1s status:2xx", {"long"}),
    ("held:<=250", {"short"}),  # ms when no unit is given, as dur:
    ("held:200ms-2s", {"short", "waits"}),
    ("HELD:>=3.25s", {"long"}),
    ("held or error", {"short", "long", "waits"}),
    ("~m POST & held", {"short", "long"}),
])
def test_held_means_waited_for_the_app_in_python_and_in_sql(tmp_path: Path, expression: str,
                                                           expected: set[str]) -> None:
    exchanges = _exchanges()
    names = {ex.id: name for name, ex in exchanges.items()}
    flt = parse(expression)
    assert {name for name, ex in exchanges.items() if flt(ex)} == expected
    store = Store(tmp_path / "c.db")
    try:
        store.put_many(list(exchanges.values()))
        assert {names[i] for i in store.ids(flt)} == expected  # the same answer from SQLite
        assert {names[ex.id] for ex in store.query(flt)} == expected
    finally:
        store.close()


def test_held_is_one_term_with_one_help_line_and_sql_with_bound_values() -> None:
    assert parse("held").sql() == ("(abs(e.held) IS NOT NULL)", [])
    where, values = parse("held:>1s").sql()
    assert "abs(e.held) > ?" in where and values == [1.0]
    [line] = [(syntax, text) for syntax, text in FILTER_HELP if syntax.startswith("held")]
    assert "held:>1s" in line[0] and "--hold" in line[1]


@pytest.mark.parametrize(("expression", "column"), [("held:soon", 6), ("held:>", 6), ("held:", 6),
                                                    ("method:GET held:1h", 17)])
def test_a_held_without_a_duration_says_what_it_expects_and_where(expression: str, column: int) -> None:
    with pytest.raises(FilterSyntaxError) as err:
        parse(expression)
    assert err.value.message == "held expects a duration like 500ms or 2s"
    assert err.value.position == column - 1


# -- through the CLI, as a user runs it ---------------------------------------------------------------

def _cli(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([DEVTUNNEL, *args, "--db", str(db)], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "COLUMNS": "120", "LINES": "40"}, check=False)


def test_requests_and_export_filter_held_requests(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    store = Store(db)
    store.put_many(list(_exchanges().values()))
    store.close()

    def listed(expression: str) -> set[str]:
        proc = _cli(db, "requests", "--json", f"--filter={expression}")
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        return {row["path"] for row in json.loads(proc.stdout)}

    assert listed("held") == {"/short", "/long", "/waits"}
    assert listed("held:>1s") == {"/long", "/waits"}
    assert listed("-held") == {"/at-once"}
    table = _cli(db, "requests", "--filter", "held:>1s")
    assert table.returncode == 0 and "/long" in table.stdout and "/waits" in table.stdout, table.stderr
    assert "/short" not in table.stdout and "/at-once" not in table.stdout

    exported = _cli(db, "export", "--filter", "held:>1s status:2xx", "--format", "curl")
    assert exported.returncode == 0 and "Traceback" not in exported.stderr, exported.stderr
    assert "/long" in exported.stdout and "/short" not in exported.stdout and "/waits" not in exported.stdout

    for command in (("requests",), ("export", "--format", "curl")):
        bad = _cli(db, *command, "--filter", "held:soon")
        assert bad.returncode == 2 and bad.stdout == "", (bad.stdout, bad.stderr)
        assert "held expects a duration like 500ms or 2s, at column 6" in bad.stderr
        assert "Traceback" not in bad.stderr
