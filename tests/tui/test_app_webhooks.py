"""Webhook verdicts in the inspector: the table's marks and EVENT column, the detail's Webhook section.

The verdicts go through a real store (the duplicate is found by the store, as in the agent) and
are read back by the app as a user sees them; hostile event types come from the network and must
show escaped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.tui.screens.detail import DetailScreen
from devtunnel.tui.widgets import RequestTable, StatsStrip
from devtunnel.tui.widgets.table_rows import Columns
from devtunnel.values.exchange_ids import stable_short_id
from devtunnel.webhooks import Signature, Verdict
from tests.helpers import async_wait_for
from tests.tui.app_fixtures import (
    cursor_in_view,
    fill,
    fixed_id,
    inspector,
    make_exchange,
    screen_lines,
    traffic,
    utc,
)
from tests.tui.screen_fixtures import screen_text

HOSTILE_EVENT = "[bold]pwn[/bold]\x1b[31m\x1b]52;c;SGVsbG8=\x07\u202eevil"
"""Rich markup, an SGR sequence, an OSC 52 clipboard write and a bidi override, as an event type."""

INVALID_REASON = "signature does not match: wrong secret or altered body"
STALE_REASON = "timestamp outside the tolerance: 12 min old (tolerance 300 s)"


@pytest.fixture(autouse=True)
def _utc() -> Iterator[None]:
    yield from utc()


def _hook(n: int, path: str, verdict: Verdict, status: int = 200) -> Exchange:
    return replace(make_exchange(n, method="POST", target=path, status=status, tunnel="hooks"), webhook=verdict)


def webhook_traffic() -> list[Exchange]:
    """Plain traffic, then a Stripe delivery (valid), a GitHub one (invalid), an unsigned Slack one,
    the Stripe delivery again (a retry: a duplicate, its timestamp now too old), one not verified."""
    hooks = [
        _hook(20, "/webhooks/stripe", Verdict("stripe", "payment_intent.succeeded", "evt_1QxYpaid", Signature.VALID)),
        _hook(21, "/webhooks/github", Verdict("github", "pull_request", "72d3162e-cc78-11e3-81ab-4c9367dc0958",
                                              Signature.INVALID, INVALID_REASON), status=401),
        _hook(22, "/slack/events", Verdict("slack", "url_verification", None, Signature.UNSIGNED,
                                           "no X-Slack-Signature header")),
        _hook(23, "/webhooks/stripe", Verdict("stripe", "payment_intent.succeeded", "evt_1QxYpaid", Signature.INVALID,
                                              STALE_REASON), status=400),
        _hook(24, "/webhooks/shopify", Verdict("shopify", "orders/create", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                                               Signature.UNVERIFIED, "no secret: set SHOPIFY_WEBHOOK_SECRET")),
    ]
    return [*traffic(20), *hooks]


def _app(tmp_path: Path, exchanges: list[Exchange] | None = None):  # type: ignore[no-untyped-def]
    return inspector(fill(tmp_path / "captures.db", exchanges or webhook_traffic()), tmp_path)


async def _settle(pilot, count: int = 25) -> RequestTable:  # type: ignore[no-untyped-def]
    table = pilot.app.query_one(RequestTable)
    await async_wait_for(lambda: len(table.ids) == count, what="ids")
    await async_wait_for(lambda: all(table.cached_row(i) for i in table.ids[-15:]), what="rows")
    stats = pilot.app.query_one(StatsStrip)
    await async_wait_for(lambda: sum(stats.status_mix.values()) > 0, what="the status mix counted")
    await async_wait_for(lambda: cursor_in_view(table), what="the table scrolled to its cursor")
    await pilot.pause()
    return table


# -- the columns -----------------------------------------------------------------------------


def test_at_80_columns_the_path_keeps_its_room_and_event_then_tunnel_take_what_is_left() -> None:
    wide, eighty, narrow = Columns.for_width(118), Columns.for_width(78, several_tunnels=False), Columns.for_width(60)
    assert wide.tunnel and wide.event >= 30 and wide.path >= 30
    assert not eighty.tunnel and eighty.event >= 12 and eighty.path >= Columns.PATH_LEAST
    # Rows of several tunnels: which tunnel a row is comes first (found by use: at 80 columns the
    # EVENT column took TUNNEL's cells, and two tunnels' rows looked the same).
    several_hooks = Columns.for_width(78)
    assert several_hooks.tunnel >= Columns.TUNNEL_LEAST and not several_hooks.event and several_hooks.path >= Columns.PATH_LEAST
    assert not narrow.tunnel and not narrow.event and narrow.path >= 4
    # Without webhooks the EVENT column stays off; rows of several tunnels name them at 80 columns.
    several = Columns.for_width(80, several_tunnels=True, tunnel_cells=21, webhooks=False)
    assert several.tunnel >= 10 and not several.event and several.path >= 26
    one = Columns.for_width(80, several_tunnels=False, tunnel_cells=4, webhooks=False)
    assert not one.tunnel and not one.event and one.path == 40
    # A wide table sizes TUNNEL to the longest name rather than cutting it at 16.
    assert Columns.for_width(200, tunnel_cells=21, webhooks=False).tunnel == 21
    # At 120 columns a random name of 18 characters is shown whole while PATH keeps 48 cells and more.
    roomy = Columns.for_width(120, tunnel_cells=18, webhooks=False)
    assert roomy.tunnel == 18 and roomy.path >= Columns.PATH_ROOMY
    # A wide table shows the longest event types whole (they were cut at 36 cells beside a PATH of 86).
    roomy_events = Columns.for_width(180)
    event = "stripe · customer.subscription.deleted"
    assert roomy_events.event >= len(event) and roomy_events.path >= Columns.PATH_ROOMY and roomy_events.tunnel == 16
    assert Columns.for_width(140).event == Columns.EVENT_MOST  # not at PATH's expense
    for width, columns in ((118, wide), (78, eighty), (78, several_hooks), (60, narrow), (80, several), (80, one),
                           (180, roomy_events)):
        used = Columns.FIXED + columns.path + (columns.tunnel + 1 if columns.tunnel else 0) + (columns.event + 1 if columns.event else 0)
        assert used == width


async def test_rows_show_provider_event_signature_and_duplicate_marks(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        table = await _settle(pilot)
        lines = screen_lines(table)
        assert "EVENT" in lines[0] and "TUNNEL" in lines[0]
        by_path = {line.split()[3]: line for line in lines[1:] if " · " in line}
        stripe_rows = [line for line in lines if "/webhooks/stripe" in line and "stripe ·" in line]
        assert "✓  stripe · payment_intent.succeeded" in stripe_rows[0]
        assert "✗≡ stripe · payment_intent.succeeded" in stripe_rows[1]  # the retry: a duplicate, and stale
        assert "✗  github · pull_request" in by_path["/webhooks/github"]
        assert "–  slack · url_verification" in by_path["/slack/events"]
        assert "?  shopify · orders/create" in by_path["/webhooks/shopify"]
        plain = next(line for line in lines if "/old-home" in line)
        assert "✓" not in plain and "·" not in plain  # no provider: the cells stay blank


async def test_at_80_columns_the_event_is_cut_short_for_the_path_and_the_marks_stay(tmp_path: Path) -> None:
    app = _app(tmp_path, [replace(ex, tunnel="hooks") for ex in webhook_traffic()])  # one tunnel
    async with app.run_test(size=(80, 24)) as pilot:
        table = await _settle(pilot)
        lines = screen_lines(table)
        assert "EVENT" in lines[0] and "TUNNEL" not in lines[0]
        github = next(line for line in lines if "github ·" in line)
        assert "✗  github · pul… 401" in github
        stripe = [line for line in lines if "/webhooks/stripe" in line and "stripe ·" in line]
        assert "✗≡ stripe · pay… 400" in stripe[-1]
        assert all(len(line) <= 80 for line in lines)


async def test_at_80_columns_rows_of_several_tunnels_name_theirs_before_the_event(tmp_path: Path) -> None:
    """Found by use: with webhooks among the rows, EVENT took TUNNEL's cells at 80 columns, and
    two tunnels' rows looked the same (the marks still say which rows are webhooks)."""
    app = _app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        table = await _settle(pilot)
        lines = screen_lines(table)
        assert "TUNNEL" in lines[0] and "EVENT" not in lines[0]
        stripe = [line for line in lines if "/webhooks/stripe" in line and "hooks" in line]
        assert stripe and "✗≡ 400" in stripe[-1]
        assert all(len(line) <= 80 for line in lines)


async def test_hostile_event_types_are_shown_escaped_in_the_table_and_the_detail(tmp_path: Path) -> None:
    hostile = _hook(30, "/webhooks/stripe", Verdict("stripe", HOSTILE_EVENT, "evt_\x1b[2J\u202e", Signature.INVALID,
                                                    "malformed header [red]x[/red]\x1b[31m"))
    app = _app(tmp_path, [*traffic(3), hostile])
    async with app.run_test(size=(200, 20)) as pilot:
        table = await _settle(pilot, count=4)
        row = screen_lines(table)[4]
        assert "✗  stripe · [bold]pwn[/bold]\\x1b[31m\\x1b]52;c;SGVsbG8=… 200" in row  # cut at the column's width
        assert "\x1b" not in row and "\u202e" not in row and "\x07" not in row
        await pilot.press("enter")
        await async_wait_for(lambda: isinstance(app.screen, DetailScreen), what="the detail")
        await pilot.pause()
        shown = screen_text(app)
        assert "[bold]pwn[/bold]\\x1b[31m\\x1b]52;c;SGVsbG8=\\x07\\u202eevil" in shown
        assert "[bold]pwn[/bold]\\x1b[31m" in shown and "evt_\\x1b[2J\\u202e" in shown
        assert "malformed header [red]x[/red]\\x1b[31m" in shown
        assert "\x1b" not in shown and "\u202e" not in shown


# -- the detail's Webhook section --------------------------------------------------------------


async def _open(pilot, exchange_id: str) -> str:  # type: ignore[no-untyped-def]
    app = pilot.app
    table = await _settle(pilot)
    while table.current_id != exchange_id:
        await pilot.press("up")
    await pilot.press("enter")
    await async_wait_for(lambda: isinstance(app.screen, DetailScreen), what="the detail")
    await pilot.pause()
    return screen_text(app)


async def test_detail_says_why_a_retry_is_invalid_and_what_it_duplicates(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        shown = await _open(pilot, fixed_id(23))
        assert "Provider     Stripe" in shown
        assert "Event        payment_intent.succeeded" in shown
        assert "Delivery id  evt_1QxYpaid" in shown
        assert f"Signature    ✗ invalid: {STALE_REASON}" in shown
        assert f"Duplicate of ≡ {stable_short_id(fixed_id(20))}  the first capture of this delivery id" in shown
        assert "Hint" not in shown


async def test_detail_of_an_unverified_delivery_says_which_variable_to_set(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        shown = await _open(pilot, fixed_id(24))
        assert "Signature    ? unverified: no secret: set SHOPIFY_WEBHOOK_SECRET" in shown
        # Said once: a Hint row repeating the variable took a row a small terminal needs for the body.
        assert "Hint" not in shown and shown.count("SHOPIFY_WEBHOOK_SECRET") == 1
        assert "Duplicate of" not in shown


async def test_detail_of_a_request_that_is_no_webhook_has_no_webhook_section(tmp_path: Path) -> None:
    app = _app(tmp_path)
    async with app.run_test(size=(120, 40)) as pilot:
        shown = await _open(pilot, fixed_id(19))
        assert "Webhook" not in shown and "Signature " not in shown


# -- snapshots ---------------------------------------------------------------------------------


def test_table_with_webhooks_at_120x30(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)

    assert snap_compare(_app(tmp_path), terminal_size=(120, 30), run_before=run_before)


def test_table_with_webhooks_at_80x24(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _settle(pilot)

    assert snap_compare(_app(tmp_path), terminal_size=(80, 24), run_before=run_before)


def test_detail_webhook_section_of_a_stale_retry_at_100x30(snap_compare, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        await _open(pilot, fixed_id(23))

    assert snap_compare(_app(tmp_path), terminal_size=(100, 30), run_before=run_before)


async def test_help_explains_every_mark_the_table_draws(tmp_path: Path) -> None:
    from devtunnel.tui.screens.help import HelpScreen

    app = _app(tmp_path)
    async with app.run_test(size=(120, 30)) as pilot:
        await _settle(pilot)
        await pilot.press("question_mark")
        await async_wait_for(lambda: isinstance(app.screen, HelpScreen), what="help")
        shown = " ".join(" ".join(str(static.render()).split()) for static in app.screen.query("Static, KeyTable"))
        assert "Marks in the request table" in shown
        for line in ("✓ signature valid", "✗ signature invalid", "– unsigned", "? not verified",
                     "≡ duplicate: the same delivery id was captured before"):
            assert line in shown, line
