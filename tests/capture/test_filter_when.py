"""``since:`` and ``until:``: when an exchange began, from the command line to the store."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from pathlib import Path

import pytest

from devtunnel.capture.filters import parse
from devtunnel.capture.filters.when import instant
from devtunnel.capture.store import Store
from devtunnel.errors import FilterSyntaxError
from devtunnel.rules.model import RulesError, parse_rules
from tests.net.api_fixtures import make_exchange
from tests.test_cli_captures import DEVTUNNEL

NOW = dt.datetime(2026, 12, 5, 14, 30, 0).timestamp()  # local time


@pytest.mark.parametrize(("text", "expected"), [
    ("10m", NOW - 600), ("2h", NOW - 7200), ("1.5d", NOW - 1.5 * 86400), ("30s", NOW - 30), ("10M", NOW - 600),
    ("14:05", dt.datetime(2026, 12, 5, 14, 5).timestamp()),
    ("9:00:30", dt.datetime(2026, 12, 5, 9, 0, 30).timestamp()),
    ("23:59", dt.datetime(2026, 12, 5, 23, 59).timestamp()),  # today, even when still to come
    ("2026-12-01", dt.datetime(2026, 12, 1).timestamp()),
    ("2026-12-01T08:15", dt.datetime(2026, 12, 1, 8, 15).timestamp()),
    ("2026-12-01T08:15:00Z", dt.datetime(2026, 12, 1, 8, 15, tzinfo=dt.timezone.utc).timestamp()),
    ("2026-12-01T08:15+01:00", dt.datetime(2026, 12, 1, 7, 15, tzinfo=dt.timezone.utc).timestamp()),
])
def test_an_instant_is_a_duration_back_a_clock_time_today_or_a_date(text: str, expected: float) -> None:
    assert instant(text, NOW) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "10", "10 m", "-10m", "24:00", "12:60", "7:5", "2026-13-01",
                                  "2026-12-01T25:00", "m10", "now", "1e3s", "\x1b[2J",
                                  "0001-01-01"])
def test_what_is_no_instant_is_a_syntax_error_at_the_value(text: str) -> None:
    assert instant(text, NOW) is None
    for field in ("since", "until"):
        with pytest.raises(FilterSyntaxError, match=f"^{field} expects a duration like 10m or 2h, a time like 14:05,"
                                                    " or a date like 2026-12-05") as err:
            parse(f"method:POST {field}:{text}" if text else f"method:POST {field}:")
        assert err.value.position == len("method:POST ") + len(field) + 1


def test_since_and_until_split_time_at_the_instant_in_python_and_in_sql(tmp_path: Path) -> None:
    now = time.time()
    ages = {"a": 5.0, "b": 300.0, "c": 3 * 3600.0, "d": 3 * 86400.0}
    exchanges = {name: make_exchange(target=f"/{name}".encode(), started_at=now - age) for name, age in ages.items()}
    with Store(tmp_path / "c.db") as store:
        store.put_many(list(exchanges.values()))
        for expression, names in [
            ("since:1m", "a"), ("since:10m", "ab"), ("since:1d", "abc"), ("since:4d", "abcd"),
            ("until:1m", "bcd"), ("until:1h", "cd"), ("since:1d until:1m", "bc"), ("not since:10m", "cd"),
            ("since:10m or until:2d", "abd"),
        ]:
            flt = parse(expression)
            wanted = sorted(exchanges[n].id for n in names)
            assert sorted(ex.id for ex in exchanges.values() if flt(ex)) == wanted, expression
            assert store.ids(flt) == wanted, expression
            assert store.count(expression) == len(names), expression


def test_the_instant_is_fixed_when_the_filter_is_parsed(tmp_path: Path) -> None:
    flt = parse("since:1s")
    later = make_exchange(started_at=time.time() + 5)
    earlier = make_exchange(started_at=time.time() - 5)
    assert flt(later) and not flt(earlier)


def test_requests_lists_what_began_since_a_time_from_the_command_line(tmp_path: Path) -> None:
    now = time.time()
    db = tmp_path / "c.db"
    with Store(db) as store:
        store.put_many([make_exchange(target=b"/old", started_at=now - 2 * 3600),
                        make_exchange(target=b"/new", started_at=now - 60)])
    env = {**os.environ, "COLUMNS": "120"}

    def paths(expression: str) -> list[str]:
        proc = subprocess.run([DEVTUNNEL, "requests", "--db", str(db), "--filter", expression], capture_output=True,
                              text=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return [line.split()[-1] for line in proc.stdout.splitlines()[1:]]

    assert paths("since:1h") == ["/new"]
    assert paths("until:1h") == ["/old"]
    assert paths("since:1d") == ["/old", "/new"]
    clock = dt.datetime.fromtimestamp(now - 3600).strftime("%Y-%m-%dT%H:%M:%S")
    assert paths(f"since:{clock}") == ["/new"]
    proc = subprocess.run([DEVTUNNEL, "requests", "--db", str(db), "--filter", "since:yesterday"], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.strip() == ("devtunnel: invalid filter 'since:yesterday': since expects a duration like 10m or"
                                   " 2h, a time like 14:05, or a date like 2026-12-05, at column 7")


@pytest.mark.parametrize("match", ["since:10m", "not until:2026-12-05", "path:/a since:1h"])
def test_a_rule_at_the_relay_cannot_match_on_time(match: str) -> None:
    with pytest.raises(RulesError, match="names an instant fixed when the rule is read"):
        parse_rules([{"match": match, "action": "deny"}], "devtunnel.toml")
