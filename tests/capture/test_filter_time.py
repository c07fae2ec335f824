"""Filter regexes run with a time bound (``filters.base.search_bounded``), and mean what ``re`` means."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.capture import filters
from devtunnel.capture.filters import base, parse, regex_budget, regexp
from devtunnel.capture.store import Store
from devtunnel.errors import FilterTimeoutError
from tests.net.api_fixtures import make_exchange

SLOW = "(a|a)+$"
VICTIM = "a" * 200 + "!"


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> float:
    monkeypatch.setattr(base, "REGEX_TIMEOUT", 0.2)
    return 0.2


def test_a_backtracking_search_stops_after_the_timeout_and_says_so(quick: float) -> None:
    started = time.monotonic()
    with pytest.raises(FilterTimeoutError, match=r"^filter regex took too long: '\(a\|a\)\+\$' \(it ran more than 0.2 s"):
        regexp(SLOW, VICTIM)
    assert time.monotonic() - started < quick * 5
    assert regexp(SLOW, "aaa") == 1  # the same pattern on a value it is quick on


def test_a_pattern_is_quoted_as_it_came_and_cut_to_its_excerpt_in_the_message(quick: float) -> None:
    # The message keeps the pattern raw (each output escapes the whole message once: the CLI's
    # error line, the API's JSON, the inspector); escaped here, it showed doubled backslashes.
    pattern = "(?:\x1b]0;\u202e\\d)?" + "x?" * 60 + SLOW
    with pytest.raises(FilterTimeoutError) as caught:
        regexp(pattern, VICTIM)
    message = str(caught.value)
    assert f"took too long: '{base.excerpt(pattern)}' (" in message
    assert "\x1b]0;\u202e\\d" in message and "\\\\" not in message and "\\x1b" not in message
    assert SLOW not in message and "\u2026" in message and len(base.excerpt(pattern)) <= base.QUOTE_LIMIT + 2
    assert caught.value.pattern == pattern


def test_a_budget_bounds_many_searches_in_all(quick: float) -> None:
    # Each search takes a little under the per-search bound; ten of them are past the budget.
    slowish = base._text_regex(SLOW)
    took = []
    for n in range(14, 30):
        started = time.monotonic()
        try:
            base.search_bounded(slowish, "a" * n + "!")
        except FilterTimeoutError:
            break
        took.append((n, time.monotonic() - started))
    n = max((n for n, t in took if t < quick / 2), default=None)
    if n is None:
        pytest.skip("this machine is too slow to find a search under half the per-search bound")
    started = time.monotonic()
    with pytest.raises(FilterTimeoutError, match="ran longer in all than one search of the captures may take"):
        with regex_budget(quick):
            for _ in range(100):
                base.search_bounded(slowish, "a" * n + "!")
    assert time.monotonic() - started < quick * 5
    # Outside the block, each search has its own bound again.
    assert not base.search_bounded(slowish, "a" * n + "!")


def test_a_nested_budget_ends_no_later_than_the_outer_one(quick: float) -> None:
    with pytest.raises(FilterTimeoutError, match="ran longer in all"):
        with regex_budget(0.05):
            with regex_budget(10.0):
                regexp(SLOW, VICTIM)
    with regex_budget(10.0):
        with regex_budget(0.05):
            pass
        with pytest.raises(FilterTimeoutError, match="ran more than 0.2 s on one value"):
            regexp(SLOW, VICTIM)  # the outer block's end again
    assert base._budget.until is None


def test_a_store_query_stopped_by_its_regex_is_a_filter_timeout_not_a_store_error(
    tmp_path: Path, quick: float
) -> None:
    with Store(tmp_path / "c.db") as store:
        store.put_many([make_exchange(req_body=VICTIM.encode()), make_exchange(req_body=b"fine")])
        for query in (store.count, store.ids, lambda f: store.rows(f, limit=5), store.count_estimate):
            with pytest.raises(FilterTimeoutError, match="^filter regex took too long"):
                query(f'~b "{SLOW}"')
        # The connection goes on serving, and a later failure is not taken for a time-out.
        assert store.count('~b "fine"') == 1
        assert filters.regex_timeout() is None


def test_the_python_filter_is_bounded_the_same_way(quick: float) -> None:
    flt = parse(f'~b "{SLOW}"')
    with pytest.raises(FilterTimeoutError):
        flt(make_exchange(req_body=VICTIM.encode()))
    with pytest.raises(FilterTimeoutError):
        parse(f'~h "{SLOW}"')(make_exchange(req_headers=[("X-A", VICTIM)]))


_TOKENS = ["a", "b", "ab", ".", "*", "+", "?", "*?", "(", ")", "|", "[ab]", "[^a]", "^", "$", r"\d", r"\w", r"\s",
           "{2}", "{1,3}", "(?:", "(?i)", r"\b", "é", "日"]


@st.composite
def patterns(draw: st.DrawFn) -> str:
    pattern = "".join(draw(st.lists(st.sampled_from(_TOKENS), max_size=8)))
    try:
        re.compile(pattern)
    except re.error:
        pattern = re.escape(pattern)
    return pattern


@settings(max_examples=400, deadline=None)
@given(patterns(), st.text(alphabet="abAB 1é日\n", max_size=12))
def test_ordinary_patterns_find_what_re_finds(pattern: str, text: str) -> None:
    assert regexp(pattern, text) == (1 if re.search(pattern, text) else 0)
    data = text.encode()
    try:
        expected = re.search(pattern.encode(), data)
    except re.error:  # a pattern only str takes (\w on bytes is fine; "é" in a bytes set is not)
        return
    assert regexp(pattern, data) == (1 if expected else 0)
