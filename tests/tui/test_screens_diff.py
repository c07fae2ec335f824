"""The diff screen: side by side and unified, ignore fields live, identical and binary sections."""

from __future__ import annotations

import json

from textual.widgets import Input, Static

from devtunnel.tui.screens import DiffScreen
from devtunnel.tui.screens.lines import LinesView
from tests.helpers import async_wait_for
from tests.tui.screen_fixtures import HOSTILE, ScreenApp, exchange, screen_text

A_BODY = {"id": "ord_1", "status": "paid", "total": 19.0, "created": 1764160200, "items": [{"sku": "A-1", "qty": 2}]}
B_BODY = {"id": "ord_2", "status": "paid", "total": 21.5, "created": 1764160260, "items": [{"sku": "A-1", "qty": 2}]}


def pair() -> tuple[object, object]:
    a = exchange(
        id="01KB0DETA1L0000000000000AA",
        resp_headers=[("Content-Type", "application/json"), ("Date", "Wed, 26 Nov 2025 12:30:00 GMT")],
        resp_body=json.dumps(A_BODY).encode(),
    )
    b = exchange(
        id="01KB0DETA1L0000000000000BB",
        replay_of=a.id,
        resp_headers=[("Content-Type", "application/json"), ("Date", "Wed, 26 Nov 2025 12:31:00 GMT")],
        resp_body=json.dumps(B_BODY).encode(),
    )
    return a, b


def _rows(app: ScreenApp) -> list[str]:
    view = app.screen.query_one("#diff", LinesView)
    return [view.lines.line(i).plain.rstrip() for i in range(len(view.lines))]


def _status(app: ScreenApp) -> str:
    return str(app.screen.query_one("#diff-status", Static).render())


async def _diffed(app: ScreenApp) -> None:
    await async_wait_for(lambda: isinstance(app.screen, DiffScreen) and app.screen.result is not None, what="the diff")


async def test_side_by_side_pairs_changed_lines_and_says_what_is_identical() -> None:
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.pause()
        rows = _rows(app)
        assert "── request headers (headers)" in rows
        assert rows[rows.index("── request headers (headers)") + 1] == "  identical"
        changed = [r for r in rows if r.startswith("- ")]
        assert any('"id": "ord_1"' in r and '+   "id": "ord_2"' in r for r in changed)
        assert any("Date: Wed, 26 Nov 2025 12:30:00 GMT" in r and "12:31:00" in r for r in changed)
        # A Date that differs is shown, and not counted, as devtunnel diff counts it.
        assert rows[rows.index("── response headers (headers)") + 1] == "  identical"
        assert any("only volatile headers differ, not counted: Date" in r for r in rows)
        assert _status(app) == "1 of 6 sections differ · side by side"


async def test_headers_configured_not_to_count_are_shown_and_not_counted() -> None:
    # The inspector's diff counted a Date alone as a difference ("2 of 6 sections differ"),
    # where devtunnel diff and the replay's verdict ("same response") did not.
    a, b = pair()
    for volatile, status in (((), "2 of 6 sections differ"), (("Date",), "1 of 6 sections differ")):
        app = ScreenApp(DiffScreen(a, b, volatile=volatile))
        async with app.run_test(size=(120, 40)) as pilot:
            await _diffed(app)
            await pilot.pause()
            assert _status(app) == f"{status} · side by side"


async def test_u_switches_to_unified_with_plus_and_minus_lines() -> None:
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.press("u")
        await pilot.pause()
        rows = _rows(app)
        assert '-   "id": "ord_1",' in rows and '+   "id": "ord_2",' in rows
        assert '-   "total": 19.0' in rows and '+   "total": 21.5' in rows
        assert _status(app).endswith("unified")
        await pilot.press("u")
        await pilot.pause()
        assert _status(app).endswith("side by side")


async def test_ignoring_fields_rediffs_as_you_type() -> None:
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.press("i")
        await pilot.press(*"id, created, total, Date")
        await async_wait_for(lambda: app.screen.ignore == ("id", "created", "total", "Date"), what="the new diff")
        await pilot.pause()
        assert _status(app) == "identical · ignoring id, created, total, Date · side by side"
        assert not any(r.startswith("- ") for r in _rows(app))
        # backspacing "Date" shows the header difference again, not counted (a volatile header)
        await pilot.press(*["backspace"] * 6)
        await async_wait_for(lambda: app.screen.ignore == ("id", "created", "total"), what="the new diff")
        assert _status(app).startswith("identical · ignoring id, created, total")
        assert any(r.startswith("- Date:") for r in _rows(app))


async def test_preset_ignore_fields_are_shown_and_used() -> None:
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b, ignore=["id", "created", "total", "date"]))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.pause()
        assert app.screen.query_one("#ignore", Input).value == "id, created, total, date"
        assert _status(app).startswith("identical")


async def test_binary_bodies_show_sizes_hashes_and_first_difference() -> None:
    a = exchange(resp_headers=[("Content-Type", "image/png")], resp_body=b"\x89PNG\x00\x01\x02")
    b = exchange(resp_headers=[("Content-Type", "image/png")], resp_body=b"\x89PNG\x00\xff\x02\x03")
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.pause()
        rows = _rows(app)
        assert "  size    A: 7 B (7 B)    B: 8 B (8 B)" in rows
        assert "  first difference at byte offset 5 (0x5)" in rows
        assert any(r.startswith("  sha256  A: ") for r in rows)


async def test_binary_bodies_that_differ_say_when_only_part_was_recorded() -> None:
    """Sizes and a first difference of bodies recorded in part compare only what was recorded:
    the diff says so, as it does for text and for identical binary bodies."""
    a = exchange(resp_headers=[("Content-Type", "image/png")], resp_body=b"\x89PNG\x00\x01\x02", resp_size=9000)
    b = exchange(resp_headers=[("Content-Type", "image/png")], resp_body=b"\x89PNG\x00\xff\x02\x03")
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.pause()
        rows = _rows(app)
        assert "  first difference at byte offset 5 (0x5)" in rows
        assert "  a: only the first 7 of 9000 bytes were recorded" in rows, rows


async def test_hostile_lines_are_shown_escaped() -> None:
    a = exchange(resp_headers=[("Content-Type", "text/plain")], resp_body=b"same\nold")
    b = exchange(resp_headers=[("Content-Type", "text/plain")], resp_body=("same\n" + HOSTILE).encode())
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(200, 40)) as pilot:
        await _diffed(app)
        await pilot.press("u")
        await pilot.pause()
        shown = screen_text(app)
        assert "+ [bold red]boom[/] [/x] \\x1b[31mred" in shown
        assert "\x1b" not in shown


async def test_long_unchanged_runs_fold_in_unified_view() -> None:
    body_a = {f"k{i:03d}": i for i in range(100)}
    body_b = dict(body_a, k050=-1)
    a = exchange(resp_body=json.dumps(body_a).encode())
    b = exchange(resp_body=json.dumps(body_b).encode())
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.press("u")
        await pilot.pause()
        rows = _rows(app)
        assert "  @@ 48 unchanged lines" in rows and '-   "k050": 50,' in rows


async def test_side_by_side_folds_long_unchanged_runs_and_keeps_short_ones() -> None:
    """Two changes far apart in a list of 20,000 items: side by side showed every one of its
    180,000 lines, the first change 7,000 rows down (and, past difflib's bound, everything
    between the two changes as changed)."""
    items = [{"id": i, "name": f"item {i}", "price": i * 1.5} for i in range(20_000)]
    edited = json.loads(json.dumps(items))
    edited[777]["price"] = -1
    edited[15_000]["name"] = "changed"
    a = exchange(resp_headers=[("Content-Type", "application/json")], resp_body=json.dumps(items).encode())
    b = exchange(resp_headers=[("Content-Type", "application/json")], resp_body=json.dumps(edited).encode())
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await async_wait_for(lambda: isinstance(app.screen, DiffScreen) and app.screen.result is not None,
                             timeout=30, what="the diff")
        await pilot.pause()
        rows = _rows(app)
        body = rows[rows.index("── response body (json)") + 1:]
        changed = [r for r in body if r.startswith("- ")]
        assert len(changed) == 2 and '"price": 1165.5' in changed[0] and '"price": -1' in changed[0]
        assert '"name": "item 15000",' in changed[1] and '"name": "changed",' in changed[1]
        assert body[0] == "  @@ 3886 unchanged lines" and len(body) < 30, body
        # Short unchanged runs stay whole: the headers section of pair() shows all of its lines.
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.pause()
        assert not any("unchanged line" in row for row in _rows(app))


async def test_q_in_the_ignore_field_types_instead_of_closing() -> None:
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test() as pilot:
        await _diffed(app)
        await pilot.press("i", "q")
        await pilot.pause()
        assert not app.dismissed
        assert app.screen.query_one("#ignore", Input).value == "q"


async def test_escape_in_the_ignore_field_goes_back_to_the_diff_and_again_closes() -> None:
    """Escape in the ignore field closed the whole diff."""
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test() as pilot:
        await _diffed(app)
        field = app.screen.query_one("#ignore", Input)
        view = app.screen.query_one("#diff", LinesView)
        await pilot.press("i")
        await async_wait_for(lambda: field.has_focus, what="the cursor in the ignore field")
        await pilot.press("escape")  # nothing typed: the field is put away
        await async_wait_for(lambda: view.has_focus, what="back on the diff")
        assert not app.dismissed and not field.has_class("shown")

        await pilot.press("i", *"id")
        await async_wait_for(lambda: app.screen.ignore == ("id",), what="the new diff")
        await pilot.press("escape")  # fields typed: they stay ignored, and shown
        await async_wait_for(lambda: view.has_focus, what="back on the diff")
        assert not app.dismissed and field.has_class("shown") and field.value == "id"
        assert app.screen.ignore == ("id",) and "ignoring id" in _status(app)

        await pilot.press("escape")
        await async_wait_for(lambda: app.dismissed, what="the diff closed")


async def test_q_closes() -> None:
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test() as pilot:
        await _diffed(app)
        await pilot.press("q")
        await pilot.pause()
        assert app.dismissed


async def test_side_by_side_at_80_columns_folds_long_unchanged_values_whole() -> None:
    """A long value the same in both (a User-Agent, a signature header kept) was cut with an
    ellipsis on both sides at 80 columns: nothing said the rest was there. It folds now, alike on
    both sides, as a changed one does, and so does a note longer than the screen."""
    agent = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36"
    headers = [("Host", "shop.localhost"), ("User-Agent", agent)]
    volatile = tuple(f"X-Request-Trace-{n}" for n in range(8))
    a = exchange(req_headers=[*headers, ("X-Attempt", "1")], resp_body=b"same\nold",
                 resp_headers=[("Content-Type", "text/plain"), *((n, "a") for n in volatile)])
    b = exchange(req_headers=[*headers, ("X-Attempt", "2")], resp_body=b"same\nnew",
                 resp_headers=[("Content-Type", "text/plain"), *((n, "b") for n in volatile)])
    app = ScreenApp(DiffScreen(a, b, volatile=volatile))
    async with app.run_test(size=(80, 24)) as pilot:
        await _diffed(app)
        await pilot.pause()
        rows = _rows(app)
        assert not any("…" in row for row in rows), rows
        first = next(i for i, row in enumerate(rows) if row.startswith("  User-Agent: "))
        halves = [row.split(" │ ") for row in rows[first:first + 4]]
        assert all(len(pair) == 2 for pair in halves), rows
        left, right = ("".join(side[2:] for side in sides).rstrip() for sides in zip(*halves))
        assert left == right == f"User-Agent: {agent}", (left, right)
        start = next(i for i, row in enumerate(rows) if row.startswith("  only volatile headers differ"))
        end = next(i for i, row in enumerate(rows) if i > start and not row.startswith("  "))
        assert "".join(row[2:] for row in rows[start:end]).endswith(": " + ", ".join(volatile)), rows


def test_snapshot_diff_side_by_side(snap_compare) -> None:
    a, b = pair()

    async def settle(pilot) -> None:
        await _diffed(pilot.app)
        await pilot.pause()

    assert snap_compare(ScreenApp(DiffScreen(a, b)), terminal_size=(120, 34), run_before=settle)


async def test_titles_and_changed_lines_are_styled_on_screen() -> None:
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)) as pilot:
        await _diffed(app)
        await pilot.press("u")
        await pilot.pause()
        view = app.screen.query_one("#diff", LinesView)
        rows = _rows(app)
        title = view.render_line(rows.index("── request line (text)"))
        removed = view.render_line(rows.index('-   "id": "ord_1",'))
        assert all(seg.style.bold for seg in title if seg.text.strip())
        assert {seg.style.color.name for seg in removed if seg.text.strip()} == {"red"}


async def test_side_by_side_folds_a_long_changed_value_so_both_are_whole_at_80_columns() -> None:
    from tests.tui.screen_fixtures import STRIPE_SIGNATURE

    other = STRIPE_SIGNATURE.replace("t=1764160200", "t=1764160260")
    a = exchange(req_headers=[("Host", "h"), ("Stripe-Signature", STRIPE_SIGNATURE)])
    b = exchange(req_headers=[("Host", "h"), ("Stripe-Signature", other)])
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(80, 24)) as pilot:
        await _diffed(app)
        await pilot.pause()
        view = app.screen.query_one("#diff", LinesView)
        rows = [view.lines.line(i).plain for i in range(len(view.lines))]
        start = next(i for i, row in enumerate(rows) if row.startswith("- Stripe-Signature"))
        half = view.lines.column  # type: ignore[attr-defined]
        left = "".join(row[2:half].rstrip() for row in rows[start:] if row[0] in "- " and "│" in row and not row.startswith("  Host"))
        right = "".join(row[half + 5 :].rstrip() for row in rows[start:] if "│" in row and not row.startswith("  Host"))
        assert f"Stripe-Signature: {STRIPE_SIGNATURE}" in left
        assert f"Stripe-Signature: {other}" in right
        assert "…" not in "".join(rows[start : start + 4])
        assert max(len(row.rstrip()) for row in rows) <= 80


async def test_at_80x24_the_titles_keep_the_status_and_the_duration() -> None:
    """A long URL gives way (reason phrase first, then its middle), not what each request came to."""
    host = [("Host", "shop.localhost")]
    a = exchange(req_headers=host, target=b"/api/orders/ord_1/items?expand=customer,shipping")
    b = exchange(id="01KB0DETA1L0000000000000BB", replay_of=a.id, req_headers=host,
                 target=b"/api/orders/ord_1/items?expand=customer,shipping,invoice", status=404)
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(80, 24)) as pilot:
        await _diffed(app)
        await pilot.pause()
        first, second = screen_text(app).splitlines()[:2]
        assert first.startswith(" A POST http://shop.localhost/api/o") and "…" in first, first
        assert first.rstrip().endswith("201  45.7 ms"), first
        assert second.startswith(" B POST http://shop.localhost/api/o") and "…" in second, second
        assert second.rstrip().endswith("404  45.7 ms  replay"), second
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(140, 24)) as pilot:  # room enough: all of it
        await _diffed(app)
        await pilot.pause()
        first = screen_text(app).splitlines()[0]
        assert "A POST http://shop.localhost/api/orders/ord_1/items?expand=customer,shipping  201 Created" in first


async def test_a_diff_finished_after_a_newer_one_is_not_shown_over_it(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The diff runs in a thread; typing starts a new one and cancels the last. A thread already
    past its check for cancellation, and stalled there, drew its older diff over the newer one:
    the status said "ignoring id, cr" under a field that said "id, created"."""
    import threading

    from devtunnel.tui.screens import diff as diff_module

    newer_shown = threading.Event()
    stalled = []
    real = diff_module.get_current_worker

    class Stalling:
        """A worker whose check for cancellation reads it, then waits until the newer diff is shown."""

        def __init__(self, worker) -> None:  # type: ignore[no-untyped-def]
            self.worker = worker

        @property
        def is_cancelled(self) -> bool:
            cancelled = self.worker.is_cancelled
            newer_shown.wait(10)
            return cancelled

    def current_worker():  # type: ignore[no-untyped-def]
        worker = real()
        if worker.description == "_compute(('id', 'cr'))":
            stalled.append(worker)
            return Stalling(worker)
        return worker

    monkeypatch.setattr(diff_module, "get_current_worker", current_worker)
    a, b = pair()
    app = ScreenApp(DiffScreen(a, b))
    async with app.run_test(size=(120, 40)):
        await _diffed(app)
        field = app.screen.query_one("#ignore", Input)
        field.value = "id, cr"
        await async_wait_for(lambda: stalled, what="the diff ignoring id, cr")
        field.value = "id, created"
        await async_wait_for(lambda: app.screen.ignore == ("id", "created"), what="the newer diff")
        newer_shown.set()  # the older diff goes on: shown, it would be drawn before its worker ends
        await async_wait_for(lambda: stalled[0].is_finished, what="the older diff's worker to end")
        assert app.screen.ignore == ("id", "created")
        assert "ignoring id, created" in _status(app)
