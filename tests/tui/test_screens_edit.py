"""The edit-and-replay screen: change the request, send it in a worker, compare, diff."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from textual.widgets import Checkbox, Input, Static, TextArea

from devtunnel.capture.model import Exchange, Headers
from devtunnel.capture.verdict import Signature, Verdict
from devtunnel.errors import ReplayError
from devtunnel.replay import Edit, replay
from devtunnel.tui.screens import DiffScreen, EditReplayScreen
from devtunnel.tui.screens.edit import HeaderRow, UnsentChanges
from tests.helpers import async_wait_for, free_port
from tests.kit.servers import Received, Reply, http_server
from tests.tui.screen_fixtures import HOSTILE, ScreenApp, exchange, json_exchange, screen_text, stripe_exchange


class Recorder:
    """A ``send`` that records each edit and answers like the local service would."""

    def __init__(self, original: Exchange, *, fail: Exception | None = None) -> None:
        self.original = original
        self.edits: list[Edit] = []
        self.fail = fail

    async def __call__(self, edit: Edit) -> Exchange:
        self.edits.append(edit)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return exchange(
            id="01KB0DETA1L00000000000REPL",
            replay_of=self.original.id,
            status=400,
            resp_headers=[("Content-Type", "application/json")],
            resp_body=b'{"error":"coupon expired"}',
        )


def _edit_screen(app: ScreenApp) -> EditReplayScreen:
    screen = app.screen
    assert isinstance(screen, EditReplayScreen)
    return screen


def _message(app: ScreenApp) -> str:
    return str(app.screen.query_one("#message", Static).render())


async def test_unchanged_request_sends_an_empty_edit() -> None:
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits and _edit_screen(app).replayed, what="the replay")
        assert send.edits == [Edit(method=None, target=None, headers=None, body=None)]


async def test_changed_method_and_target_are_sent() -> None:
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        method = app.screen.query_one("#method", Input)
        method.value = ""
        await pilot.click("#method")
        await pilot.press(*"PUT")
        app.screen.query_one("#target", Input).value = "/api/orders/42?dry_run=1"
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].method == "PUT"
        assert send.edits[0].target in ("/api/orders/42?dry_run=1", b"/api/orders/42?dry_run=1")
        assert send.edits[0].headers is None and send.edits[0].body is None


async def test_the_header_rows_are_the_complete_list_sent_in_order() -> None:
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = list(app.screen.query(HeaderRow))
        # Content-Length is not a row: it is computed from the body when sent.
        assert [r.field for r in rows] == [("Host", "shop.localhost"), ("Content-Type", "application/json")]
        assert "Content-Length is computed when sent" in screen_text(app)
        # change Host, delete Content-Type with its button, then add X-Debug with ctrl+n
        rows[0].query_one(".value", Input).value = "edited.localhost"
        await pilot.click(rows[1].query_one(".delete"))
        await pilot.press("ctrl+n")
        await pilot.press(*"X-Debug", "tab", *"1")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].headers == Headers([("Host", "edited.localhost"), ("X-Debug", "1")])
        assert send.edits[0].set_headers == () and send.edits[0].remove_headers == ()


async def test_ctrl_r_removes_the_header_row_with_the_cursor() -> None:
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        first = app.screen.query(HeaderRow).first()
        first.query_one(".value", Input).focus()
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert [r.field[0] for r in app.screen.query(HeaderRow)] == ["Content-Type"]


async def test_up_and_down_move_between_the_rows_of_fields_and_on_to_the_body() -> None:
    """Keys only, as a user edits: the method has the focus; down goes to the same column of the
    next row (the first header's name under the method, a value under a value), from the last row
    to the body, and up comes back, staying on the first row at the top."""
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = list(app.screen.query(HeaderRow))
        method, target = app.screen.query_one("#method", Input), app.screen.query_one("#target", Input)
        assert app.focused is method
        await pilot.press("down")
        assert app.focused is rows[0].query_one(".name", Input)
        await pilot.press("tab", "down")
        assert app.focused is rows[1].query_one(".value", Input)
        await pilot.press("end", *"; charset=utf-8")
        await pilot.press("down")
        assert app.focused is app.screen.query_one("#body", TextArea)
        await pilot.press("down")  # in the body, down moves its cursor: the focus stays
        assert app.focused is app.screen.query_one("#body", TextArea)
        app.screen.query_one("#body", TextArea).blur()
        rows[1].query_one(".value", Input).focus()
        await pilot.press("up", "up")
        assert app.focused is target
        await pilot.press("up")
        assert app.focused is target
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        headers = send.edits[0].headers
        assert headers is not None
        assert dict(headers.fields)[b"Content-Type"] == b"application/json; charset=utf-8"


async def test_down_goes_on_past_the_signatures_checkbox_to_the_body_and_up_comes_back() -> None:
    """A signed delivery's form has the signature's checkbox between its rows and the body. Down
    stopped there: the keys a user typed next (to change the body) went nowhere."""
    ex = stripe_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = list(app.screen.query(HeaderRow))
        checkbox, body = app.screen.query_one("#as-captured", Checkbox), app.screen.query_one("#body", TextArea)
        await pilot.press(*["down"] * len(rows))
        assert app.focused is rows[-1].query_one(".name", Input)
        await pilot.press("down")
        assert app.focused is checkbox
        await pilot.press("up")
        assert app.focused is rows[-1].query_one(".name", Input)
        await pilot.press("down", "down")
        assert app.focused is body
        await pilot.press("end", "backspace", *' ,"livemode":false}')
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].body == ex.request.body[:-1] + b' ,"livemode":false}'
        assert not checkbox.value, "a key meant for the body toggled the checkbox"


async def test_a_delivery_that_did_not_verify_offers_to_sign_it_anyway_not_to_keep_its_signature() -> None:
    """A delivery judged invalid when it came may be forged: the replay keeps its signature unless
    the secret verifies it now. Its box (ctrl+o) signs it anyway; a valid one's keeps the
    captured signature, as before."""
    forged = stripe_exchange()
    forged.webhook = Verdict("stripe", "payment_intent.succeeded", "evt_1QxY", Signature.INVALID,
                             "signature does not match")
    send = Recorder(forged)
    app = ScreenApp(EditReplayScreen(forged, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not app.screen.query("#as-captured")
        box = app.screen.query_one("#sign-unverified", Checkbox)
        hint = app.screen.query_one("#signature-hint", Static)
        assert "did not verify when it came: signed afresh only if the secret verifies it now" in str(hint.render())
        await async_wait_for(lambda: "^o Sign anyway" in screen_text(app).splitlines()[-1], what="the key in the bar")
        assert "Keep sig" not in screen_text(app)
        await pilot.press("ctrl+o")
        assert box.value and "made afresh even so" in str(hint.render())
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert (send.edits[0].sign_unverified, send.edits[0].as_captured) == (True, False)
        assert send.edits[0].to_json() == {"sign_unverified": True}

    valid = stripe_exchange()
    valid.webhook = Verdict("stripe", "payment_intent.succeeded", "evt_1QxY", Signature.VALID)
    send = Recorder(valid)
    app = ScreenApp(EditReplayScreen(valid, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not app.screen.query("#sign-unverified")
        await pilot.press("ctrl+o", "ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert (send.edits[0].sign_unverified, send.edits[0].as_captured) == (False, True)


async def test_esc_with_changes_not_sent_asks_again_before_they_are_lost() -> None:
    """One esc closed the form, and an edit of minutes went with it. Unchanged, or as sent, it
    still closes at once; with changes not sent, the first esc asks and the second closes."""
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = _edit_screen(app)
        await pilot.press("end", *"X")  # the method: POSTX
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, UnsentChanges) and not app.dismissed
        notice = app.screen.query_one("#unsent", Static)
        assert str(notice.render()) == UnsentChanges.MESSAGE
        assert notice.region.area, "the question is off screen at 80x24"
        await pilot.press("enter")  # back to the form, as it was
        await pilot.pause()
        assert app.screen is screen and app.focused is screen.query_one("#method", Input)
        await pilot.press("backspace", "ctrl+s")  # POST again: nothing to lose, sent as captured
        await async_wait_for(lambda: send.edits and screen.replayed is not None, what="the replay")
        await pilot.press("tab", "end", *"&x=1")  # the target: changed, then sent
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: len(send.edits) == 2, what="the second send")
        await pilot.press("escape")
        await pilot.pause()
        assert app.dismissed, "a form as it was sent closes with one esc"

    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("escape")  # nothing typed
        await pilot.pause()
        assert app.dismissed

    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        app.screen.query_one("#body", TextArea).focus()
        await pilot.press("x", "escape")  # a body that is no longer JSON: still the user's typing
        await pilot.pause()
        assert not app.dismissed
        await pilot.press("escape")
        await pilot.pause()
        assert app.dismissed
    assert len(send.edits) == 2


async def test_keys_after_the_first_esc_reach_no_field_and_ctrl_s_there_sends() -> None:
    """A user took the first esc for a close and pressed e for the next request: it was typed
    into the method they could not see had the focus. Now the question takes that key, goes
    back to the form, and nothing is typed; ctrl+s at the question sends the changes."""
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = _edit_screen(app)
        method = screen.query_one("#method", Input)
        await pilot.press("end", "X", "escape")
        await pilot.pause()
        await pilot.press("e")
        await pilot.pause()
        assert app.screen is screen and not app.dismissed
        assert method.value == "POSTX" and app.focused is method
        await pilot.press("escape")
        await pilot.pause()
        assert isinstance(app.screen, UnsentChanges)
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits and screen.replayed is not None, what="the replay")
        assert app.screen is screen and send.edits[0].method == "POSTX"
        await pilot.press("escape")  # as sent: closes at once
        await pilot.pause()
        assert app.dismissed

    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("end", "X", "escape")
        await pilot.pause()
        await pilot.press("escape")  # the second esc discards
        await pilot.pause()
        assert app.dismissed and len(send.edits) == 1


async def test_the_form_opens_on_the_method_and_shows_which_field_has_the_focus() -> None:
    """The form opened with the cursor in the method while the body editor, framed and with its
    line highlighted, looked like the field being typed in: a body typed there went into the
    method. The field with the focus is drawn apart from the others, and the body highlights its
    line only while it has the focus."""
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(110, 34)) as pilot:
        await pilot.pause()
        screen = _edit_screen(app)
        method, target = screen.query_one("#method", Input), screen.query_one("#target", Input)
        body = screen.query_one("#body", TextArea)
        name = screen.query(HeaderRow).first().query_one(".name", Input)
        assert app.focused is method
        focused = method.styles.background
        assert focused != target.styles.background
        assert not body.highlight_cursor_line
        await pilot.press("down")
        assert app.focused is name and name.styles.background == focused
        assert method.styles.background == target.styles.background != focused
        body.focus()
        await pilot.pause()
        assert body.highlight_cursor_line and method.styles.background == target.styles.background
        body.blur()
        await pilot.pause()
        assert not body.highlight_cursor_line


async def test_up_and_down_pass_over_a_field_that_cannot_be_edited() -> None:
    """A value shown with escapes cannot have the focus: down from a value goes to that row's
    name, and on to the next row's value after it."""
    raw = [(b"Host", b"shop.localhost"), (b"X-Tab", b"a\tb"), (b"Accept", b"*/*")]
    ex = exchange(req_headers=raw)  # type: ignore[arg-type]
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = {row.field[0]: row for row in app.screen.query(HeaderRow)}
        assert rows["X-Tab"].query_one(".value", Input).disabled
        rows["Host"].query_one(".value", Input).focus()
        await pilot.press("down")
        assert app.focused is rows["X-Tab"].query_one(".name", Input)
        await pilot.press("down")
        assert app.focused is rows["Accept"].query_one(".name", Input)
        rows["Accept"].query_one(".value", Input).focus()
        await pilot.press("up")
        assert app.focused is rows["X-Tab"].query_one(".name", Input)


async def test_a_header_field_with_the_focus_shows_its_text() -> None:
    """A header row is one line high: the focused field's border would cover its text."""
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        row = app.screen.query(HeaderRow).last()
        for field, shown in ((".name", "Content-Type"), (".value", "application/json")):
            row.query_one(field, Input).focus()
            await pilot.press("end", *"X")
            await pilot.pause()
            line = next(line for line in screen_text(app).splitlines() if "✕" in line and "Host" not in line)
            assert shown + "X" in line, line


@pytest.mark.parametrize("width", [40, 60])
async def test_header_values_show_in_a_narrow_terminal(width: int) -> None:
    """The name field yields room to the value: at 40 columns a fixed 30-cell name left the
    values no room at all (every value looked empty, and could not be edited)."""
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(width, 15)) as pilot:
        await pilot.pause()
        line = next(line for line in screen_text(app).splitlines() if "Content-Type" in line)
        assert "applic" in line, line


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["ctrl+n", *"Bad Name", "tab", "x"], "Not sent: headers, item 3: invalid header name 'Bad Name'"),
        (["ctrl+n", *"X-Ok", "tab", *"a\\r\\nInjected: 1"], None),
        (["ctrl+n", *"X-É", "tab", "x"], "Not sent: headers, item 3: invalid header name 'X-É'"),
    ],
)
async def test_invalid_header_name_is_shown_and_nothing_sent(keys: list[str], message: str | None) -> None:
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press(*keys, "ctrl+s")
        await pilot.pause()
        if message is None:  # typed backslashes are text, not a line break: sent as typed
            await async_wait_for(lambda: send.edits, what="send")
            assert send.edits[0].headers.get("x-ok") == "a\\r\\nInjected: 1"
        else:
            assert message in _message(app)
            assert send.edits == []


async def test_invalid_method_is_shown_and_nothing_sent() -> None:
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.screen.query_one("#method", Input).value = "GET /x"
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert "Not sent: invalid method 'GET /x': a method is a token like GET or POST" in _message(app)
        assert send.edits == []


async def test_json_body_hint_follows_the_text() -> None:
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        hint = app.screen.query_one("#json-hint", Static)
        assert str(hint.render()) == "valid JSON"
        body = app.screen.query_one("#body", TextArea)
        assert body.language == "json"
        body.text = '{\n  "sku": "A-1",\n  "qty": 2,,\n}'
        await pilot.pause()
        assert str(hint.render()) == "invalid JSON at line 3 col 12: Expecting property name enclosed in double quotes"


async def test_body_label_and_json_check_follow_the_content_type_row() -> None:
    """Changing the Content-Type row changes what the body is checked as: a body turned into
    text is not called invalid JSON, and a body turned into JSON is checked."""
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        label = app.screen.query_one("#body-label", Static)
        hint = app.screen.query_one("#json-hint", Static)
        row = next(r for r in app.screen.query(HeaderRow) if r.field[0] == "Content-Type")
        value = row.query_one(".value", Input)
        value.focus()
        await pilot.press("ctrl+u", *"text/plain")
        app.screen.query_one("#body", TextArea).text = "sku=A-1, qty 2"
        await pilot.pause()
        assert str(label.render()) == "Body · text/plain"
        assert str(hint.render()) == ""
        value.focus()
        await pilot.press("ctrl+u", *"application/problem+json")
        await pilot.pause()
        assert str(label.render()) == "Body · application/problem+json"
        assert str(hint.render()).startswith("invalid JSON at line 1 col 1")


async def test_a_content_type_row_added_makes_the_body_json() -> None:
    ex = exchange(method="DELETE", req_headers=[("Host", "shop.localhost")])
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        label = app.screen.query_one("#body-label", Static)
        assert str(label.render()) == "Body · no content type"
        await pilot.press("ctrl+n", *"content-TYPE")
        row = app.screen.query(HeaderRow).last()
        row.query_one(".value", Input).focus()
        await pilot.press(*"application/json")
        app.screen.query_one("#body", TextArea).text = '{"x": 1'
        await pilot.pause()
        assert str(label.render()) == "Body · application/json"
        assert str(app.screen.query_one("#json-hint", Static).render()).startswith("invalid JSON")
        await pilot.press("ctrl+r")
        await async_wait_for(lambda: str(label.render()) == "Body · no content type")
        assert str(app.screen.query_one("#json-hint", Static).render()) == ""


async def test_edited_body_is_sent_as_utf8() -> None:
    ex = json_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        app.screen.query_one("#body", TextArea).text = '{"sku":"A-1","qty":3,"coupon":"NOËL"}'
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert json.loads(send.edits[0].body) == {"sku": "A-1", "qty": 3, "coupon": "NOËL"}


async def test_response_appears_beside_the_original_and_ctrl_d_opens_the_diff() -> None:
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(140, 50)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: _edit_screen(app).replayed, what="the replay")
        await pilot.pause()
        original = str(app.screen.query_one("#original", Static).render())
        replayed = str(app.screen.query_one("#replayed", Static).render())
        assert original.startswith("Original\n201 Created\nContent-Type: application/json; charset=utf-8")
        assert replayed.startswith("Replay\n400 Bad Request\nContent-Type: application/json")
        assert '"error": "coupon expired"' in replayed
        assert "Replayed: 400" in _message(app)
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert isinstance(app.screen, DiffScreen)


async def test_ctrl_d_before_a_replay_deletes_in_the_field_instead() -> None:
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        method = app.screen.query_one("#method", Input)
        method.cursor_position = 0
        await pilot.press("ctrl+d")
        await pilot.pause()
        assert isinstance(app.screen, EditReplayScreen)
        assert method.value == "OST"


async def test_send_failure_is_shown_inline_and_the_screen_stays() -> None:
    ex = json_exchange()
    send = Recorder(ex, fail=ReplayError("connection refused by 127.0.0.1:8080"))
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: "Replay failed" in _message(app), what="the error")
        assert _message(app) == "Replay failed: connection refused by 127.0.0.1:8080"
        assert isinstance(app.screen, EditReplayScreen) and app.is_running


async def test_unexpected_send_error_is_shown_not_raised() -> None:
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex, fail=RuntimeError("boom"))))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: "Replay failed" in _message(app), what="the error")
        assert _message(app) == "Replay failed: RuntimeError: boom"


async def test_binary_body_is_not_editable_and_sent_as_recorded() -> None:
    ex = exchange(req_headers=[("Content-Type", "application/octet-stream")], req_body=b"\x00\xff" * 10)
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert not app.screen.query("#body")
        assert "The binary body (20 B) is sent as recorded." in screen_text(app)
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].body is None


async def test_hostile_values_are_shown_escaped_and_sent_unchanged() -> None:
    ex = exchange(req_headers=[("X-Evil", HOSTILE)], target=b"/[b]x[/b]")
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        assert "\x1b" not in screen_text(app)
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].headers is None


async def test_a_field_shown_with_escapes_is_sent_as_recorded_when_others_change() -> None:
    """A value holding a tab or bytes that are not UTF-8 is shown as ``a\\tb`` or ``\\xff``; edited,
    the escape went out as typed (a backslash and a t) and the tab was gone. Such a field cannot be
    edited, as a body with control characters cannot: it is sent as recorded (or removed)."""
    raw = [(b"Host", b"shop.localhost"), (b"X-Tab", b"a\tb"), (b"X-Bin", b"\xff\xfe"), (b"Accept", b"*/*")]
    ex = exchange(req_headers=raw)  # type: ignore[arg-type]
    assert list(ex.request.headers.fields) == raw
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        rows = {row.field[0]: row for row in app.screen.query(HeaderRow)}
        for name in ("X-Tab", "X-Bin"):
            value = rows[name].query_one(".value", Input)
            assert value.disabled, name
        accept = rows["Accept"].query_one(".value", Input)
        accept.focus()
        await pilot.press("end", *",text/html")
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        headers = send.edits[0].headers
        assert headers is not None
        assert dict(headers.fields)[b"X-Tab"] == b"a\tb"
        assert dict(headers.fields)[b"Accept"] == b"*/*,text/html"


async def test_body_with_escape_sequences_is_sent_as_recorded_not_drawn() -> None:
    ex = exchange(req_headers=[("Content-Type", "text/plain")], req_body=HOSTILE.encode())
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        assert "\x1b" not in screen_text(app)
        assert f"The control-character body ({len(HOSTILE.encode())} B) is sent as recorded." in screen_text(app)
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].body is None


async def test_crlf_body_left_alone_is_not_sent_as_a_change() -> None:
    ex = exchange(req_headers=[("Content-Type", "text/plain")], req_body=b"a\r\nb\nc")
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].body is None


FORM_BODY = b"ToCountry=US&Body=hi+there&From=%2B14155551234&Empty="


def form_exchange(body: bytes = FORM_BODY) -> Exchange:
    return exchange(req_headers=[("Content-Type", "application/x-www-form-urlencoded")], req_body=body)


async def test_a_form_body_is_edited_a_field_a_line_and_sent_joined_again() -> None:
    ex = form_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        body = app.screen.query_one("#body", TextArea)
        assert body.text == "ToCountry=US\nBody=hi+there\nFrom=%2B14155551234\nEmpty="  # bytes as sent
        assert "a field a line, joined with & when sent" in str(app.screen.query_one("#body-label", Static).render())
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="the first send")
        assert send.edits[0].body is None  # untouched: the captured bytes
        body.text = "ToCountry=US\nBody=STOP\n\nFrom=%2B14155551234\nEmpty=\nNew=1\n"
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: len(send.edits) == 2, what="the second send")
        assert send.edits[1].body == b"ToCountry=US&Body=STOP&From=%2B14155551234&Empty=&New=1"  # blank lines dropped


async def test_a_form_body_made_another_type_is_sent_as_typed() -> None:
    ex = form_exchange()
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        [row] = [r for r in app.screen.query(HeaderRow) if r.field[0] == "Content-Type"]
        row.query(Input).last().value = "text/plain"
        await pilot.pause()
        assert "joined with &" not in str(app.screen.query_one("#body-label", Static).render())
        app.screen.query_one("#body", TextArea).text = "line one\nline two"
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0].body == b"line one\nline two"


@pytest.mark.parametrize("body", [b"single=field", b"a=1&b=two\nlines"])
async def test_a_form_of_one_field_or_with_a_raw_line_break_is_edited_as_it_is(body: bytes) -> None:
    ex = form_exchange(body)
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#body", TextArea).text == body.decode()


def test_snapshot_edit_screen(snap_compare) -> None:
    assert snap_compare(ScreenApp(EditReplayScreen(json_exchange(), Recorder(json_exchange()))), terminal_size=(110, 34))


def test_snapshot_edit_screen_asks_before_unsent_changes_are_lost(snap_compare) -> None:
    """The first esc with changes not sent: the question over the form, its keys in the key bar."""
    assert snap_compare(ScreenApp(EditReplayScreen(json_exchange(), Recorder(json_exchange()))),
                        press=["end", "X", "escape"], terminal_size=(80, 24))


def test_snapshot_edit_screen_after_a_replay(snap_compare) -> None:
    ex = json_exchange()

    async def replay(pilot) -> None:
        pilot.app.screen.query_one("#method", Input).cursor_blink = False  # a steady cursor: the wait can be any length
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: _edit_screen(pilot.app).replayed, what="the replay")
        await pilot.pause()

    assert snap_compare(ScreenApp(EditReplayScreen(ex, Recorder(ex))), terminal_size=(110, 40), run_before=replay)


def test_snapshot_edit_screen_after_a_replay_at_80x24(snap_compare) -> None:
    """The smallest usual terminal: the replay's result, its reason and error line stay readable."""
    ex = json_exchange()

    async def replay(pilot) -> None:
        pilot.app.screen.query_one("#method", Input).cursor_blink = False  # a steady cursor: the wait can be any length
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: _edit_screen(pilot.app).replayed, what="the replay")
        await pilot.pause()

    assert snap_compare(ScreenApp(EditReplayScreen(ex, Recorder(ex))), terminal_size=(80, 24), run_before=replay)


async def test_result_at_80x24_shows_the_reason_the_error_line_and_most_of_both_responses() -> None:
    ex = json_exchange()
    app = ScreenApp(EditReplayScreen(ex, Recorder(ex)))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: _edit_screen(app).replayed, what="the replay")
        await pilot.pause()
        assert _message(app).startswith("Replayed: 400 Bad Request · response differs")
        assert '{"error": "coupon expired"}' in _message(app)
        assert app.screen.query_one("#compare").size.height >= 8
        assert app.screen.query_one("#body").size.height >= 3


CSP = ("Content-Security-Policy", "default-src 'self'; script-src 'self' https://js.stripe.com; "
       "frame-src https://js.stripe.com https://hooks.stripe.com; img-src 'self' data:")


@pytest.mark.parametrize("width", [80, 81])
async def test_the_original_and_the_replay_wrap_a_long_header_alike(width: int) -> None:
    """The same long header wrapped at other words in the two panes at 80x24 (the original's
    pane was a cell narrower, for the line between them, and two more when it scrolled and the
    replay's did not): read side by side, the two looked different where they were the same."""
    long_body = json.dumps({f"field{i}": i for i in range(40)}, indent=1).encode()
    ex = exchange(status=200, resp_headers=[("Content-Type", "application/json"), CSP], resp_body=long_body)

    async def send(edit: Edit) -> Exchange:
        return exchange(id="01KB0DETA1L00000000000REPL", replay_of=ex.id, status=200, resp_headers=[CSP])

    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(width, 24)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: _edit_screen(app).replayed, what="the replay")
        await pilot.pause()
        screen = _edit_screen(app)
        assert screen.query_one("#original-box").max_scroll_y > 0 == screen.query_one("#replayed-box").max_scroll_y
        rows = [line.split("▕") for line in screen_text(app).splitlines() if line.count("▕") == 1]

        def header(pane: list[str]) -> list[str]:
            start = next(i for i, line in enumerate(pane) if line.startswith("Content-Security-Policy"))
            return pane[start:next(i for i, line in enumerate(pane) if line.endswith("data:")) + 1]

        left, right = (header([side.strip() for side in pane]) for pane in zip(*rows))
        assert len(left) > 1 and left == right, (left, right)


async def test_an_error_line_from_the_network_is_shown_escaped() -> None:
    ex = json_exchange()

    async def send(edit: Edit) -> Exchange:
        return exchange(id="01KB0DETA1L00000000000REPL", replay_of=ex.id, status=502, edited=True,
                        resp_headers=[("Content-Type", "text/plain")], resp_body=HOSTILE.encode() + b"\nmore")

    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: _edit_screen(app).replayed, what="the replay")
        await pilot.pause()
        message = _message(app)
        assert message.startswith("Replayed: 502 Bad Gateway · response differs · edited")
        assert "\\x1b[31mred" in message.splitlines()[1] and "more" not in message
        assert "\x1b" not in screen_text(app) and "\x07" not in screen_text(app)
        assert str(app.screen.query_one("#replayed", Static).render()).startswith("Edited replay\n502")


def _echo(request: Received) -> Reply:
    """Answers every request with what it received, as JSON."""
    body = request.body.decode("utf-8", "replace")
    return Reply.json({"method": request.method, "path": request.path, "headers": dict(request.headers), "body": body})


@pytest.fixture
def echo_url() -> Iterator[str]:
    with http_server(_echo) as server:
        yield server.url


async def test_edited_request_is_replayed_to_a_real_service(echo_url: str) -> None:
    ex = json_exchange()
    ex.target_url = echo_url

    async def send(edit: Edit) -> Exchange:
        return await replay(ex, edit=edit)

    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(140, 50)) as pilot:
        await pilot.pause()
        app.screen.query_one("#method", Input).value = "PATCH"
        app.screen.query_one("#body", TextArea).text = '{"qty": 5}'
        await pilot.press("ctrl+n", *"X-Trace", "tab", *"t-1", "ctrl+s")
        await async_wait_for(lambda: _edit_screen(app).replayed, timeout=20, what="the replay")
        replayed = _edit_screen(app).replayed
        echoed = json.loads(replayed.response.body)
        assert (echoed["method"], echoed["path"], echoed["body"]) == ("PATCH", "/api/orders?expand=items", '{"qty": 5}')
        assert echoed["headers"]["X-Trace"] == "t-1" and echoed["headers"]["Content-Length"] == "10"
        assert replayed.replay_of == ex.id
        assert '"method": "PATCH"' in str(app.screen.query_one("#replayed", Static).render())


async def test_refused_connection_is_shown_inline() -> None:
    ex = json_exchange()
    ex.target_url = f"http://127.0.0.1:{free_port()}"

    async def send(edit: Edit) -> Exchange:
        return await replay(ex, edit=edit)

    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(140, 50)) as pilot:
        await pilot.pause()
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: "Replay failed" in _message(app), timeout=20, what="the error")
        assert _message(app).startswith("Replay failed: local_refused")
        assert isinstance(app.screen, EditReplayScreen)


async def test_a_target_and_a_header_value_not_utf8_show_their_bytes_and_are_sent_unchanged() -> None:
    """The fields read as the rest of the inspector does: UTF-8, any other byte ``\\xNN``. The
    target read as latin-1 as a whole (``/GrÃ¶Ãe/ö``) and a header value as latin-1 (``Gröe``),
    then with U+FFFD (``Headers.items``, the JSON reading). Left alone, they are sent as captured."""
    ex = exchange(req_headers=[(b"X-Stray", b"Gr\xf6e"), (b"X-Utf8", "Größe".encode())],  # type: ignore[list-item]
                  target="/Größe/".encode() + b"\xf6")
    send = Recorder(ex)
    app = ScreenApp(EditReplayScreen(ex, send))
    async with app.run_test(size=(160, 40)) as pilot:
        await pilot.pause()
        assert app.screen.query_one("#target", Input).value == "/Größe/\\xf6"
        rows = {r.query_one(".name", Input).value: r.query_one(".value", Input).value for r in app.screen.query(HeaderRow)}
        assert rows["X-Stray"] == "Gr\\xf6e" and rows["X-Utf8"] == "Größe", rows
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: send.edits, what="send")
        assert send.edits[0] == Edit(method=None, target=None, headers=None, body=None)


@pytest.mark.parametrize("signed", [False, True])
async def test_at_80x24_the_title_and_every_key_fit_after_a_replay(tmp_path, signed: bool) -> None:  # type: ignore[no-untyped-def]
    """In the inspector (whose ? Help and q Quit join the bar), with every key of the screen on."""
    from textual.widgets import Button

    from tests.tui.app_fixtures import fill, inspector
    from tests.tui.screen_fixtures import stripe_exchange

    ex = stripe_exchange() if signed else json_exchange()
    app = inspector(fill(tmp_path / "captures.db", [ex]), tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = EditReplayScreen(ex, Recorder(ex))
        await app.push_screen(screen)
        await async_wait_for(lambda: app.screen is screen and screen.query(Button), what="the edit screen")
        await pilot.press("ctrl+s")
        await async_wait_for(lambda: screen.replayed, what="the replay")
        screen.query(Button).first().focus()  # not a field: the app's ? and q are keys here
        keys = ["esc Close", "^s Send", "^n Add", "^r Remove", "^d Diff", "? Help", "q Quit", "^p palette"]
        keys += ["^o Keep sig"] if signed else []
        # The footer recomposes after a refresh once the replay and the focus changed its keys
        # (Footer.bindings_changed): wait for the bar drawn with all of them.
        await async_wait_for(lambda: all(key in screen_text(app).splitlines()[-1] for key in keys), what="every key in the bar")
        lines = screen_text(app).splitlines()
        assert lines[0].rstrip().endswith("45.7 ms"), lines[0]
        assert all(key in lines[-1] for key in keys), lines[-1]
