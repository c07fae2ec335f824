"""``devtunnel requests`` past its limit, run as the installed command with its state in a scratch folder.

It lists the newest 50 matches unless ``--limit`` says. Before: 110 matches printed 50 rows and
nothing said that more existed (``replay --filter`` says how many match). Now one line on stderr
says how many it shows of how many, and which option shows more; stdout, the JSON of ``--json``
above all, holds the rows alone.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from devtunnel.capture.store import Store
from devtunnel.values.exchange_ids import new_id
from tests.kit.exchanges import T0, make_exchange, make_response
from tests.test_cli_captures import DEVTUNNEL

MORE = ("devtunnel: showing the newest 50 of 110 matching requests: --limit N (-n N) shows more, "
        "--limit 0 all of them\n")


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """110 requests under /many/ and 10 others, one a second."""
    path = tmp_path / "captures.db"
    store = Store(path)
    store.put_many([
        make_exchange(target=f"/many/{i}" if i < 110 else f"/other/{i}", response=make_response(200),
                      id=new_id(T0 + i), started_at=T0 + i)
        for i in range(120)
    ])
    store.close()
    return path


def _requests(tmp_path: Path, db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))},
           "XDG_STATE_HOME": str(tmp_path / "state"), "XDG_CONFIG_HOME": str(tmp_path / "config"),
           "COLUMNS": "120", "LINES": "40"}
    return subprocess.run([DEVTUNNEL, "requests", *args, "--db", str(db)], capture_output=True, text=True,
                          env=env, timeout=60, check=False)


def test_a_list_cut_at_the_limit_says_how_many_match_and_how_to_see_them(tmp_path: Path, db: Path) -> None:
    done = _requests(tmp_path, db, "--filter", "path:/many/")
    assert done.returncode == 0, done.stderr
    rows = done.stdout.splitlines()[1:]
    assert len(rows) == 50 and rows[0].endswith("/many/60") and rows[-1].endswith("/many/109")
    assert done.stderr == MORE


def test_json_keeps_stdout_for_the_list_and_says_it_on_stderr(tmp_path: Path, db: Path) -> None:
    done = _requests(tmp_path, db, "--filter", "path:/many/", "--json")
    assert done.returncode == 0, done.stderr
    assert [row["path"] for row in json.loads(done.stdout)] == [f"/many/{i}" for i in range(60, 110)]
    assert done.stderr == MORE


def test_without_a_filter_it_counts_every_request(tmp_path: Path, db: Path) -> None:
    done = _requests(tmp_path, db, "-n", "100")
    assert len(done.stdout.splitlines()) == 101
    assert done.stderr == ("devtunnel: showing the newest 100 of 120 requests: --limit N (-n N) shows more, "
                           "--limit 0 all of them\n")


@pytest.mark.parametrize("args", [["--limit", "110"], ["--limit", "0"], ["--limit", "200"]])
def test_nothing_is_said_when_every_match_is_listed(tmp_path: Path, db: Path, args: list[str]) -> None:
    for json_args in ([], ["--json"]):
        done = _requests(tmp_path, db, "--filter", "path:/many/", *args, *json_args)
        assert done.returncode == 0 and done.stderr == "", done.stderr
        listed = json.loads(done.stdout) if json_args else done.stdout.splitlines()[1:]
        assert len(listed) == 110
