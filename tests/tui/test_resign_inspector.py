"""Re-signing in the inspector: an hour-old Stripe delivery, edited with ``e`` and sent with ctrl+s through
a real agent child, is accepted by a receiver verifying with Stripe's library; ctrl+o sends the captured
signature (refused); ``r`` without an agent signs afresh too, and says when it cannot."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from textual.widgets import Checkbox, Static, TextArea

from devtunnel.capture.model import Exchange, Headers
from devtunnel.capture.store import Store
from devtunnel.capture.verdict import Signature, Verdict, no_secret
from devtunnel.tui.screens.edit import EditReplayScreen
from devtunnel.tui.widgets import RequestTable
from devtunnel.webhooks import Delivery
from devtunnel.webhooks.providers import GitHub, Stripe
from tests.helpers import async_wait_for
from tests.kit.exchanges import make_exchange, make_response
from tests.tui.app_fixtures import agent_serving, fill, fixed_id, inspector, inspector_with_agent, screen_lines
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

pytestmark = pytest.mark.timeout(120)

SECRET = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]


def _stripe_delivery(at: float) -> tuple[Headers, bytes]:
    body = json.dumps({"id": "evt_1", "object": "event", "type": "payment_intent.succeeded",
                       "data": {"object": {"id": "pi_1", "amount": 2000}}}, indent=2).encode()
    headers = Stripe().sign(Delivery("POST", "", Headers([("Content-Type", "application/json")]), body), SECRET, at)
    return headers, body


def _message(screen: EditReplayScreen) -> str:
    return str(screen.query_one("#message", Static).render())


async def test_edit_and_send_through_the_agent_re_signs_and_the_receiver_accepts_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)  # the agent child inherits it
    monkeypatch.delenv("GITHUB_WEBHOOK_SECRET", raising=False)
    db = tmp_path / "captures.db"
    with receiver() as rx:
        app = inspector_with_agent(db, tmp_path)
        async with app.run_test(size=(120, 40)) as pilot:
            supervisor = app.supervisor
            assert supervisor is not None
            table = app.query_one(RequestTable)
            await agent_serving(app)
            tunnel = await app.backend.start_tunnel(rx.url.rsplit(":", 1)[1], "pay")
            url = urlsplit(tunnel.public_url)
            headers, body = _stripe_delivery(time.time() - 3600)
            async with httpx.AsyncClient(trust_env=False) as client:
                answer = await client.post(f"http://127.0.0.1:{url.port}/webhooks/stripe", content=body,
                                           headers=[*headers.items(), ("Host", url.netloc)])
            assert answer.status_code == 400  # an hour old: Stripe's library refuses it
            await async_wait_for(lambda: len(table.ids) == 1 and table.cached_row(table.ids[0]), what="the row")
            table.focus()

            await pilot.press("e")
            await async_wait_for(lambda: isinstance(app.screen, EditReplayScreen), what="the edit screen")
            screen = app.screen
            assert isinstance(screen, EditReplayScreen)
            await pilot.pause()
            assert "Stripe signature made afresh when sent" in str(screen.query_one("#signature-hint", Static).render())
            screen.query_one("#body", TextArea).text = body.decode().replace('"amount": 2000', '"amount": 999')
            await pilot.pause()
            await pilot.press("ctrl+s")
            await async_wait_for(lambda: screen.replayed is not None or "failed" in _message(screen),
                                 timeout=20, what="the replay")
            assert _message(screen).startswith("Replayed: 200 OK · response differs · edited · re-signed (stripe)"), \
                _message(screen)
            assert rx.verdicts[-1] == ("/webhooks/stripe", 200, "ok")
            assert json.loads(rx.bodies[-1])["data"]["object"]["amount"] == 999

            # ctrl+o: the captured signature, unchanged: refused for the edited body.
            await pilot.press("ctrl+o")
            assert screen.query_one("#as-captured", Checkbox).value
            await pilot.press("ctrl+s")
            await async_wait_for(lambda: len(rx.verdicts) == 3, timeout=20, what="the second replay")
            await async_wait_for(lambda: "400" in _message(screen), what="its notice")
            assert "re-signed" not in _message(screen) and "SignatureVerificationError" in _message(screen)
            assert rx.verdicts[-1][1] == 400

            await pilot.press("escape")
            await async_wait_for(lambda: len(table.ids) == 3 and "↻✎ /webhooks/stripe" in screen_lines(table)[3],
                                 what="both replays on the table")
            assert "↻✎s /webhooks/stripe" in screen_lines(table)[2]
            table.focus()
            await pilot.press("home", "down", "enter")
            await async_wait_for(lambda: type(app.screen).__name__ == "DetailScreen", what="the detail")
            await pilot.pause()
            shown = "\n".join(str(w.render()) for w in app.screen.query(Static))
            assert "re-signed (stripe)" in shown

            # The agent knows no GitHub secret: r sends as captured and the notice names the variable.
            await pilot.press("escape")
            github = GitHub().sign(Delivery("POST", "", Headers([("Content-Type", "application/json"),
                                                                 ("X-GitHub-Event", "ping")]), b"{}"),
                                   RECEIVER_SECRETS["GITHUB_WEBHOOK_SECRET"], time.time())
            async with httpx.AsyncClient(trust_env=False) as client:
                await client.post(f"http://127.0.0.1:{url.port}/webhooks/github", content=b"{}",
                                  headers=[*github.items(), ("Host", url.netloc)])
            await async_wait_for(lambda: len(table.ids) == 4 and table.cached_row(table.ids[3]), what="the delivery")
            app.clear_notifications()
            table.focus()
            await pilot.press("end", "r")
            await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="the notice")
            notice = next(n for n in app._notifications if n.title == "Replayed")
            assert "200 OK" in notice.message and "signature not refreshed: set GITHUB_WEBHOOK_SECRET" in notice.message
            assert rx.verdicts[-1] == ("/webhooks/github", 200, "ok")  # no timestamp: the captured one still holds

            # A delivery the secret does not verify keeps its signature; the notice names the
            # inspector's way to sign it anyway, not the API's field the answer named.
            forged = Stripe().sign(Delivery("POST", "", Headers([("Content-Type", "application/json")]), b'{"id": "evt_x"}'),
                                   "whsec_not_the_secret", time.time())
            async with httpx.AsyncClient(trust_env=False) as client:
                await client.post(f"http://127.0.0.1:{url.port}/webhooks/stripe", content=b'{"id": "evt_x"}',
                                  headers=[*forged.items(), ("Host", url.netloc)])
            await async_wait_for(lambda: len(table.ids) == 6 and table.cached_row(table.ids[5]), what="the forged one")
            app.clear_notifications()
            table.focus()
            await pilot.press("end", "r")
            await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="its notice")
            notice = next(n for n in app._notifications if n.title == "Replayed")
            assert "sent with its captured signature (the editor's sign though unverified, ctrl+o, signs it anyway)" \
                in notice.message.replace("\n", " "), notice.message
            assert "sign_unverified" not in notice.message
            await pilot.press("q")
            await async_wait_for(lambda: not app.is_running, what="the app to quit")


def _captured(target_url: str) -> Exchange:
    headers, body = _stripe_delivery(time.time() - 3600)
    return make_exchange(
        "POST", b"/webhooks/stripe", [("Host", "pay.localhost"), *headers.fields], body,
        make_response(200, [("Content-Type", "text/plain")], b"ok", reason="OK"),
        id=fixed_id(0), tunnel="pay", started_at=time.time() - 3600, target_url=target_url, duration=0.01)


async def test_r_without_an_agent_re_signs_or_says_which_variable_to_set(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with receiver() as rx:
        db = fill(tmp_path / "captures.db", [_captured(rx.url)])
        monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
        app = inspector(db, tmp_path)
        async with app.run_test(size=(110, 30)) as pilot:
            table = app.query_one(RequestTable)
            await async_wait_for(lambda: table.ids and table.cached_row(table.ids[-1]), what="rows")
            await pilot.press("r")
            await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="the notice")
            notice = next(n for n in app._notifications if n.title == "Replayed")
            assert "400" in notice.message and "signature not refreshed: set STRIPE_WEBHOOK_SECRET" in notice.message
            assert notice.severity == "warning"
            assert rx.verdicts[-1][1] == 400

            app.clear_notifications()
            monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
            table.focus()
            await pilot.press("home", "r")
            await async_wait_for(lambda: any(n.title == "Replayed" for n in app._notifications), what="the notice")
            notice = next(n for n in app._notifications if n.title == "Replayed")
            assert "200 OK" in notice.message and "re-signed (stripe)" in notice.message, notice.message
            assert rx.verdicts[-1] == ("/webhooks/stripe", 200, "ok")
            await async_wait_for(lambda: len(table.ids) == 3 and "↻s /webhooks/stripe" in screen_lines(table)[3],
                                 what="the re-signed replay on the table")
    assert Store(db, readonly=True).get(table.ids[-1]).resigned == "stripe"


async def test_the_edit_form_says_up_front_which_secret_was_missing_at_capture(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A delivery captured without its secret: the form does not promise a fresh signature it
    may not make (what is sent, and why, is said after sending, as above)."""
    verdict = Verdict("stripe", "payment_intent.succeeded", "evt_1", Signature.UNVERIFIED,
                      no_secret("PAY_STRIPE_SECRET"))
    db = fill(tmp_path / "captures.db", [replace(_captured("http://127.0.0.1:9/"), webhook=verdict)])
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    app = inspector(db, tmp_path)
    async with app.run_test(size=(80, 30)) as pilot:
        table = app.query_one(RequestTable)
        await async_wait_for(lambda: table.ids and table.cached_row(table.ids[-1]), what="rows")
        table.focus()
        await pilot.press("e")
        await async_wait_for(lambda: isinstance(app.screen, EditReplayScreen), what="the edit screen")
        await pilot.pause()
        shown = app.screen.query_one("#signature-hint", Static)
        assert str(shown.render()) == "ctrl+o · PAY_STRIPE_SECRET was unset at capture: set it to sign afresh"
        assert app.screen.query_one("#signature-bar").size.height == 2  # wrapped whole at 80 columns, not cut
        await pilot.press("ctrl+o")
        assert str(app.screen.query_one("#signature-hint", Static).render()) == \
            "ctrl+o · the captured Stripe signature, unchanged"
