"""Edit a captured request (method, target, headers, body) and replay it beside the original.

The form means "this is the request": the header rows are the complete list sent (a row
removed is not sent). A webhook delivery is signed afresh when sent (``devtunnel.webhooks.resign``);
the "send captured signature" box (ctrl+o) sends the captured signature headers instead; on a
delivery whose signature did not verify when it came, the "sign though unverified" box (ctrl+o)
signs it afresh even when the secret does not verify it now. Framing is not edited: Content-Length and Transfer-Encoding are left out
of the rows and Content-Length is computed from the body when the request is sent
(``devtunnel.capture.edit``, the one edit contract shared with the agent API and the CLI).
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import ClassVar

from rich.text import Text
from textual import events, on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Button, Checkbox, Input, Static, TextArea
from textual.worker import Worker

from devtunnel.capture.edit import Edit
from devtunnel.capture.verdict import Signature
from devtunnel.capture.model import Exchange, Headers, Response
from devtunnel.values.media import is_form, media_type
from devtunnel.capture.outcome import replay_outcome, uncounted_headers
from devtunnel.errors import DevtunnelError, ReplayError
from devtunnel.values.http1 import FRAMING
from devtunnel.tui.render import body_kind, describe_body, escape_control, message_text, status_style
from devtunnel.tui.screens.detail import TitleLine, exchange_title
from devtunnel.tui.screens.dialog import Dialog
from devtunnel.tui.screens.diff import DiffScreen
from devtunnel.tui.failures import tell_failure
from devtunnel.tui.widgets.footer import Footer
from devtunnel.webhooks import delivery_of, detect, expired_signature
from devtunnel.values.sizes import format_size

__all__ = [
    "EditReplayScreen", "FieldInput", "Halves", "HeaderRow", "UnsentChanges", "EDIT_LIMIT", "response_preview", "json_hint",
    "replay_notice",
]

EDIT_LIMIT = 1024 * 1024
"""Bodies larger than this are sent unchanged rather than loaded into the editor."""

_EDIT_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""Characters the body editor would draw raw: such bodies are sent as recorded instead."""
_PREVIEW_LINES = 40


def json_hint(text: str) -> Text:
    """``valid JSON`` or ``invalid JSON at line L col C: why`` for the body editor."""
    if not text.strip():
        return Text("empty body", "dim", end="")
    try:
        json.loads(text)
    except json.JSONDecodeError as exc:
        return Text(f"invalid JSON at line {exc.lineno} col {exc.colno}: {exc.msg}", "bold red", end="")
    except RecursionError:
        return Text("invalid JSON: nested too deeply", "bold red", end="")
    return Text("valid JSON", "green", end="")


def response_preview(title: str, response: Response | None, error: str = "") -> Text:
    """Status, headers and the first lines of the body, for the side-by-side comparison."""
    text = Text(end="")
    text.append(title + "\n", "bold underline")
    if response is None:
        text.append("no response" + (": " + escape_control(error) if error else ""), "bold red")
        return text
    text.append(f"{response.status}", status_style(response.status))
    text.append(" " + escape_control(response.reason_text) + "\n")
    for name, value in response.headers.display_items():
        text.append(escape_control(name), "bold")
        text.append(": " + escape_control(value) + "\n")
    body = describe_body(response)
    text.append(f"\n{body.label}\n", "dim")
    if body.lines is not None:
        for i in range(min(len(body.lines), _PREVIEW_LINES)):
            text.append_text(body.lines.line(i))
            text.append("\n")
        if len(body.lines) > _PREVIEW_LINES:
            text.append(f"… {len(body.lines) - _PREVIEW_LINES} more lines", "dim")
    for name, value in body.fields[:_PREVIEW_LINES]:
        text.append(escape_control(name), "bold")
        text.append(" = " + escape_control(value) + "\n")
    text.rstrip()
    return text


def replay_notice(original: Exchange, replayed: Exchange, *, lead: str = "Replayed: ",
                  diff_hint: str = "ctrl+d diff with the original", ignore_headers: Iterable[str] = ()) -> Text:
    """What a replay came to: status and reason, same or different, and why a 4xx or 5xx happened.

    The edit screen and the main screen's ``r`` say it the same way (``capture.outcome``'s rule).
    Network text (the reason, the error body) is escaped: it is drawn on the terminal.
    """
    outcome = replay_outcome(original, replayed, ignore_headers=ignore_headers)
    if outcome.failed:
        reason = ": ".join(filter(None, [replayed.error or "", replayed.error_message])) or "no response"
        return Text(f"Replay failed: {escape_control(reason)}", end="")
    code = replayed.response.status if replayed.response is not None else 0
    text = Text(lead, end="")
    text.append(escape_control(outcome.status), status_style(code))
    text.append(f" · {outcome.verdict}")
    if replayed.edited:
        text.append(" · edited", "italic")
    if replayed.resigned:
        text.append(f" · re-signed ({escape_control(replayed.resigned)})", "italic")
    if diff_hint:
        text.append(f"  {diff_hint}", "dim")
    if replayed.signature_notice:
        text.append("\n")
        text.append(escape_control(replayed.signature_notice), "yellow")
    if outcome.error_body:
        text.append("\n")
        text.append(escape_control(outcome.error_body), "red")
    return text


AS_RECORDED = "shown with escapes: sent as recorded (its row's ✕ removes it)"
"""The tooltip of a field that cannot be edited."""


class FieldInput(Input):
    """A one-line field of the form: Up and Down move to the field above and below it, as in a
    grid of rows (the request line, then one row per header), and on from the last row to the
    body; Tab and shift+Tab still go through every field in order."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down", "screen.field_below", "Next row", show=False),
        Binding("up", "screen.field_above", "Previous row", show=False),
    ]


class FieldCheckbox(Checkbox):
    """The signature's checkbox, between the last row and the body: Up and Down go on from it
    as from a field."""

    BINDINGS: ClassVar[list[BindingType]] = FieldInput.BINDINGS


def escaped_input(text: str, shown: str, **options: str) -> Input:
    """An input for captured ``text`` shown as ``shown`` (``escape_control``). A field that
    needed escapes (a tab, bytes that are not UTF-8, a bidi control) cannot be edited, as a body
    with control characters cannot: an escape is two characters where there was one, and edited
    it would be sent as typed (a backslash and a t, not the tab). It is sent as recorded."""
    field = FieldInput(shown, select_on_focus=False, disabled=shown != text, **options)  # type: ignore[arg-type]
    if field.disabled:
        field.tooltip = AS_RECORDED
    return field


class HeaderRow(Horizontal):
    """One editable header field: name, value, and a button that removes the row."""

    DEFAULT_CSS = """
    HeaderRow {
        height: 1;
        Input, Input:focus { border: none; height: 1; padding: 0 1; }
        Input { background: $boost; }
        Input:focus { background: $primary-muted; }
        Input.name { width: 30; max-width: 40%; margin-right: 1; }
        Input.value { width: 1fr; }
        Button { min-width: 5; width: 5; height: 1; border: none; }
    }
    """

    def __init__(self, name: str = "", value: str = "", raw: tuple[bytes, bytes] | None = None) -> None:
        super().__init__()
        self._original = (name, value)
        self._raw = raw
        # Inputs draw their text as is: control characters are shown (and edited) as escapes.
        self._shown = (escape_control(name), escape_control(value))

    def compose(self) -> ComposeResult:
        (name, value), (original_name, original_value) = self._shown, self._original
        yield escaped_input(original_name, name, placeholder="Name", classes="name")
        yield escaped_input(original_value, value, placeholder="value", classes="value")
        yield Button("✕", classes="delete", tooltip="remove this header", compact=True)

    @property
    def field(self) -> tuple[str, str]:
        """The row's ``(name, value)``: the captured text where it was left alone, else as typed."""
        typed = (self.query_one(".name", Input).value, self.query_one(".value", Input).value)
        return tuple(o if t == s else t for o, s, t in zip(self._original, self._shown, typed))  # type: ignore[return-value]

    @property
    def wire_field(self) -> tuple[str | bytes, bytes]:
        """The row as sent: the captured bytes where it was left alone, else the typed name and the value as UTF-8."""
        field = self.field
        if self._raw is not None and field == self._original:
            return self._raw
        return field[0], field[1].encode("utf-8")

    @on(Button.Pressed, ".delete")
    async def _delete(self) -> None:
        await self.remove()


class UnsentChanges(Dialog[str]):
    """Asked by esc on a form with changes not sent: dismisses with ``"discard"`` (esc again),
    ``"send"`` (ctrl+s) or ``"back"`` (any other key, which goes back to the form and is not
    typed in it: a user who took the first esc for a close went on typing into a field).

    | Key | Action |
    | :- | :- |
    | escape | Discard the changes and close the form. |
    | ctrl+s | Send them. |
    | any other key | Back to the form. |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss('discard')", "Discard"),
        Binding("ctrl+s", "dismiss('send')", "Send", priority=True),
        Binding("enter", "dismiss('back')", "Back to the form"),
    ]

    DEFAULT_CSS = """
    UnsentChanges {
        align: center middle;
        #unsent { width: auto; max-width: 64; height: auto; padding: 1 2; border: round $error; background: $surface; }
    }
    """

    MESSAGE = "Changes not sent: esc again discards them, ctrl+s sends them, any other key goes back to the form."

    def compose_dialog(self) -> ComposeResult:
        yield Static(self.MESSAGE, id="unsent", markup=False)

    def on_key(self, event: events.Key) -> None:
        if event.key not in ("escape", "ctrl+s", "enter"):
            event.stop()
            event.prevent_default()
            self.dismiss("back")


class Halves(Horizontal):
    """Two panes side by side, of one width whatever the terminal's: an odd column is left over,
    not given to one pane (fractions of an odd width gave them 40 and 41 cells at 81, and the
    same text wrapped at another word in each)."""

    def on_resize(self, event: events.Resize) -> None:
        half = event.size.width // 2
        for pane in self.children:
            pane.styles.width = half


class EditReplayScreen(Screen[None]):
    """Change a captured request and send it again; the new response appears beside the old.

    | Key | Action |
    | :- | :- |
    | ctrl+s | Send the edited request. |
    | ctrl+n | Add a header row. |
    | ctrl+r | Remove the header row that has the focus. |
    | ctrl+o | Send a webhook's captured signature instead of signing it afresh (toggle); on a delivery whose signature did not verify when it came, sign it afresh anyway (toggle). |
    | ctrl+d | Diff the original exchange against the replayed one (after a send). |
    | up / down | Move to the field above or below (the same column of the next row; from the last row, the signature's checkbox if there is one, then the body). |
    | tab / shift+tab | Move between fields. |
    | escape | Close (with changes not sent, it asks first: esc again discards them, ctrl+s sends them, any other key goes back). |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("ctrl+s", "send", "Send", priority=True),
        # Short labels: at 80 columns the key bar holds every key with ^c Quit.
        Binding("ctrl+n", "add_header", "Add", priority=True, tooltip="Add a header row"),
        Binding("ctrl+r", "remove_header", "Remove", priority=True, tooltip="Remove the header row"),
        Binding("ctrl+o", "toggle_captured_signature", "Keep sig", priority=True,
                tooltip="send a webhook's captured signature instead of signing it afresh (toggle)"),
        # The same key on a delivery whose signature did not verify when it came (one only is active).
        Binding("ctrl+o", "toggle_sign_unverified", "Sign anyway", priority=True,
                tooltip="sign afresh a delivery whose signature did not verify when it came (toggle)"),
        Binding("ctrl+d", "diff", "Diff", priority=True),
    ]

    # One row for the request line and each header, so that at 80x24 the result of a replay
    # still gets most of the screen: once there is one, the body editor gives it room.
    DEFAULT_CSS = """
    EditReplayScreen {
        #edit-title { height: 1; padding: 0 1; background: $panel; }
        #request-line { height: 1; margin: 0 0 1 0; }
        #request-line Input { border: none; height: 1; padding: 0 1; background: $boost; }
        /* The field with the focus stands out (borderless fields show nothing else but a cursor),
           and the body editor, whose frame and highlighted line looked active, is dimmed. */
        #request-line Input:focus { background: $primary-muted; }
        #method { width: 12; margin-right: 1; }
        #target { width: 1fr; }
        .section { height: 1; padding: 0 1; background: $boost; color: $text-accent; }
        #headers { height: auto; max-height: 12; }
        #signature-bar { height: auto; max-height: 2; padding: 0 1; }
        #as-captured, #sign-unverified { border: none; height: 1; padding: 0; background: $surface; }
        #signature-hint { width: 1fr; height: auto; color: $text-muted; padding: 0 1; }
        #body-bar { height: 1; }
        #body-label { width: 1fr; }
        #json-hint { width: auto; padding: 0 1; }
        #body { height: 1fr; min-height: 5; }
        #body-fixed { height: auto; padding: 0 1; color: $text-muted; }
        #message { height: auto; max-height: 3; padding: 0 1; }
        #message.error { color: $text-error; }
        #compare { height: 1fr; display: none; }
        #compare.shown { display: block; }
        /* The two panes wrap alike: the same width (``Halves``), the same frame (a border on
           the right of each: the line between them on the original, blank on the replay) and
           a scrollbar's room kept in each whether or not it scrolls. */
        #compare VerticalScroll { padding: 0 1; scrollbar-gutter: stable; border-right: blank; }
        #compare #original-box { border-right: vkey $foreground 30%; }
        &.-replayed {
            #request-line { margin: 0; }
            #headers { max-height: 4; }
            #body { min-height: 3; }
            #compare { height: 2fr; min-height: 8; }
        }
    }
    """

    def __init__(self, exchange: Exchange, send: Callable[[Edit], Awaitable[Exchange]], *,
                 ignore_headers: Iterable[str] = ()) -> None:
        super().__init__()
        self.exchange = exchange
        self._send = send
        self._ignore_headers = tuple(ignore_headers)
        """Response headers that do not make the replay differ, besides the volatile ones."""
        self.replayed: Exchange | None = None
        """The latest exchange the replay produced."""
        self._last_sent: Edit | None = None
        """The edit sent last: a form that still describes it has nothing unsent."""
        request = exchange.request
        kind = body_kind(request.content_type, request.body)
        self._sniffed_json = kind == "json"
        """The captured body reads as JSON: checked as such while the Content-Type row is as captured."""
        self._body_fixed_reason = ""
        if kind == "binary":
            self._body_fixed_reason = "binary"
        elif len(request.body) > EDIT_LIMIT:
            self._body_fixed_reason = "large"
        elif _EDIT_UNSAFE.search(request.body_text):
            # The editor would draw them raw to the terminal.
            self._body_fixed_reason = "control-character"
        self._body_editable = not self._body_fixed_reason
        self._original_body = request.body.decode("utf-8") if self._body_editable else ""
        self._form_lines = (self._body_editable and is_form(request.content_type) and "&" in self._original_body
                            and not any(c in self._original_body for c in "\r\n"))
        """A form body is edited one field a line (its bytes as sent, ``&`` between them), joined
        again when sent while the Content-Type row says a form."""
        if self._form_lines:
            self._original_body = self._original_body.replace("&", "\n")
        self._initial_text = self._original_body
        """The editor's text before any change (it may normalise line endings)."""
        delivery = delivery_of(request, exchange.scheme)
        provider = detect(delivery)
        self._provider = provider.title if provider is not None and provider.signed(delivery) else None
        """The webhook provider whose signature the request carries (signed afresh when sent), or None."""
        self._missing_secret = exchange.webhook.missing_secret if exchange.webhook is not None else ""
        self._unverified = (exchange.webhook is not None and exchange.webhook.signature is Signature.INVALID
                            and expired_signature(request, scheme=exchange.scheme, now=exchange.started_at) is None)
        """The delivery's signature did not verify when it came, and not for its timestamp's age: it
        may not come from its provider, so it is signed afresh only if the secret verifies it now,
        or when the box says so. (One refused for its age alone keeps the usual box: the replay
        checks the secret on it all the same, whatever its age.)"""
        """The variable whose secret was missing when the delivery was captured, or ``""``: whoever
        sends it then had none to sign it afresh with either, unless it was set since."""

    # ------------------------------------------------------------------ layout

    def compose(self) -> ComposeResult:
        request = self.exchange.request
        yield TitleLine(self._title, id="edit-title")
        with Horizontal(id="request-line"):
            yield escaped_input(request.method, escape_control(request.method), id="method", placeholder="METHOD")
            yield escaped_input(request.display_url, escape_control(request.display_url), id="target",
                                placeholder="/path?query")
        yield Static("Headers · ctrl+n add · ctrl+r remove · Content-Length is computed when sent",
                     classes="section", markup=False)
        with VerticalScroll(id="headers"):
            for raw in self._form_fields():
                yield HeaderRow(*Headers([raw]).display_items()[0], raw=raw)
        if self._provider is not None:
            with Horizontal(id="signature-bar"):
                if self._unverified:
                    yield FieldCheckbox("sign though unverified", id="sign-unverified", compact=True)
                else:
                    yield FieldCheckbox("send captured signature", id="as-captured", compact=True)
                yield Static(self._signature_hint(False), id="signature-hint", markup=False)
        with Horizontal(id="body-bar", classes="section"):
            yield Static(self._body_label(), id="body-label", markup=False)
            yield Static("", id="json-hint")
        if self._body_editable:
            yield TextArea(self._original_body, id="body", language=self._language(self._is_json(request.content_type)),
                           soft_wrap=True, show_line_numbers=True, highlight_cursor_line=False)
        else:
            yield Static(
                f"The {self._body_fixed_reason} body ({format_size(len(request.body))}) is sent as recorded.",
                id="body-fixed",
                markup=False,
            )
        yield Static("", id="message")
        with Halves(id="compare"):
            with VerticalScroll(id="original-box"):
                yield Static(id="original")
            with VerticalScroll(id="replayed-box"):
                yield Static(id="replayed")
        yield Footer(compact=True)

    def _title(self, width: int) -> Text:
        lead = "Edit and replay · "
        return Text.assemble((lead, "bold"), exchange_title(self.exchange, width - len(lead)), no_wrap=True,
                             overflow="ellipsis", end="")

    def _form_fields(self) -> list[tuple[bytes, bytes]]:
        """The captured header fields the form shows (all but framing)."""
        return [f for f in self.exchange.request.headers.fields if f[0].lower() not in FRAMING]

    def _signature_hint(self, checked: bool) -> str:
        if self._unverified:
            if checked:
                return f"ctrl+o · {self._provider} signature made afresh even so"
            return (f"ctrl+o · its {self._provider} signature did not verify when it came:"
                    " signed afresh only if the secret verifies it now")
        if checked:
            return f"ctrl+o · the captured {self._provider} signature, unchanged"
        if self._missing_secret:
            return f"ctrl+o · {self._missing_secret} was unset at capture: set it to sign afresh"
        return f"ctrl+o · {self._provider} signature made afresh when sent"

    @on(Checkbox.Changed, "#as-captured, #sign-unverified")
    def _signature_box_changed(self, event: Checkbox.Changed) -> None:
        self.query_one("#signature-hint", Static).update(self._signature_hint(event.value))

    def action_toggle_captured_signature(self) -> None:
        """Send the captured signature headers instead of fresh ones, or fresh ones again."""
        self.query_one("#as-captured", Checkbox).toggle()

    def action_toggle_sign_unverified(self) -> None:
        """Sign afresh a delivery whose signature did not verify when it came, or not again."""
        self.query_one("#sign-unverified", Checkbox).toggle()

    def _box(self, box_id: str) -> bool:
        return any(box.value for box in self.query(f"#{box_id}").results(Checkbox))

    @property
    def as_captured(self) -> bool:
        """True when the captured signature is to be sent unchanged."""
        return self._provider is not None and self._box("as-captured")

    @property
    def sign_unverified(self) -> bool:
        """True when a delivery that did not verify is to be signed afresh anyway."""
        return self._provider is not None and self._box("sign-unverified")

    def _form_content_type(self) -> str:
        """The media type of the form's first Content-Type row, as typed (``""`` without one)."""
        for row in self.query(HeaderRow):
            name, value = row.field
            if name.strip().lower() == "content-type":
                return media_type(value)
        return ""

    def _is_json(self, content_type: str) -> bool:
        """Whether the body is checked as JSON under ``content_type`` (the form's)."""
        return content_type.endswith("json") or (self._sniffed_json and content_type == self.exchange.request.content_type)

    @staticmethod
    def _language(is_json: bool) -> str | None:
        return "json" if is_json and "json" in TextArea().available_languages else None

    @on(Input.Changed, "HeaderRow Input")
    def _header_changed(self) -> None:
        self._content_type_changed()

    @on(Button.Pressed, "HeaderRow .delete")
    def _header_removed(self) -> None:
        self.call_after_refresh(self._content_type_changed)  # once the row is gone

    def _content_type_changed(self) -> None:
        """The body label, the JSON check and the highlighting follow the Content-Type row."""
        if not self.is_mounted:
            return
        self.query_one("#body-label", Static).update(self._body_label())
        if self._body_editable:
            body = self.query_one("#body", TextArea)
            language = self._language(self._is_json(self._form_content_type()))
            if body.language != language:
                body.language = language
        self._update_hint()

    def _body_label(self) -> str:
        request = self.exchange.request
        content_type = self._form_content_type() if self.is_mounted else request.content_type
        label = f"Body · {content_type or 'no content type'}"
        if self._form_lines and is_form(content_type):
            label += " · a field a line, joined with & when sent"
        if request.body_truncated or request.body_size > len(request.body):
            label += f" · truncated at capture: only the recorded {format_size(len(request.body))} of {format_size(request.body_size)} is sent"
        return label

    def on_mount(self) -> None:
        if self._body_editable:
            self._initial_text = self.query_one("#body", TextArea).text
        self._update_hint()
        self.query_one("#method", Input).focus()

    def on_descendant_focus(self) -> None:
        self._show_body_focus()

    def on_descendant_blur(self) -> None:
        self._show_body_focus()

    def _show_body_focus(self) -> None:
        """The body editor highlights its cursor's line only while it has the focus: always
        highlighted, under a frame, it looked like the field being typed in when the method was."""
        for body in self.query("#body").results(TextArea):
            body.highlight_cursor_line = body.has_focus

    @on(TextArea.Changed, "#body")
    def _body_changed(self) -> None:
        self._update_hint()

    def _update_hint(self) -> None:
        hint = self.query_one("#json-hint", Static)
        if self._is_json(self._form_content_type()) and self._body_editable:
            hint.update(json_hint(self.query_one("#body", TextArea).text))
        else:
            hint.update("")

    def _show_message(self, message: str | Text, *, error: bool = False) -> None:
        widget = self.query_one("#message", Static)
        widget.update(message_text(message) if isinstance(message, str) else message)
        widget.set_class(error, "error")

    # ------------------------------------------------------------------ the edit

    def build_edit(self) -> Edit:
        """The edit the form describes: only what differs from the original is set.

        The header rows are the complete list: when they differ from the captured fields, the
        edit carries all of them (Content-Length is added when sent).

        Raises:
            ReplayError: a field cannot be sent (the message names it).
        """
        request = self.exchange.request
        method: str | None = self.query_one("#method", Input).value.strip()
        if method == escape_control(request.method):
            method = None  # untouched: sent exactly as captured
        target: str | None = self.query_one("#target", Input).value.strip()
        if target == escape_control(request.display_url):
            target = None
        fields = [row.wire_field for row in self.query(HeaderRow) if row.field != ("", "")]
        body: bytes | None = None
        if self._body_editable:
            text = self.query_one("#body", TextArea).text
            if text != self._initial_text:
                if self._form_lines and is_form(self._form_content_type()):
                    text = "&".join(line for line in text.split("\n") if line)
                body = text.encode("utf-8")
        headers = None if fields == self._form_fields() else Headers(fields)
        return Edit(method=method, target=target, headers=headers, body=body,  # type: ignore[arg-type]
                    as_captured=self.as_captured, sign_unverified=self.sign_unverified)

    # ------------------------------------------------------------------ actions

    def _unsent_changes(self) -> bool:
        """Whether the form holds changes to the request that were not sent as they are now."""
        try:
            edit = self.build_edit()
        except ReplayError:
            return True  # typed, if not yet sendable
        unchanged = edit.method is None and edit.target is None and edit.headers is None and edit.body is None
        return not unchanged and edit != self._last_sent

    def action_close(self) -> None:
        """Close the screen. With changes not sent, ask first (``UnsentChanges``): an edit of
        minutes is not lost to one key, and what is typed after that esc reaches no field."""
        if self._unsent_changes():
            self.app.push_screen(UnsentChanges(), self._unsent_answered)
            return
        self.dismiss(None)

    def _unsent_answered(self, answer: str | None) -> None:
        if answer == "discard":
            self.dismiss(None)
        elif answer == "send":
            self.action_send()

    def _field_rows(self) -> list[list[Input]]:
        """The form's one-line fields by row: method and target, then each header's name and value."""
        rows = [[self.query_one("#method", Input), self.query_one("#target", Input)]]
        rows += [[row.query_one(".name", Input), row.query_one(".value", Input)] for row in self.query(HeaderRow)]
        return rows

    def _move_between_rows(self, step: int) -> None:
        """Focus the field in the same column of the next row ``step`` away that has one to
        focus (a field shown with escapes cannot be), else the other column's; past the last
        row, what follows the form. From the signature's checkbox (between the rows and the
        body), down goes on to the body and up back to the last row."""
        rows = self._field_rows()
        at = next(((r, row.index(self.focused)) for r, row in enumerate(rows) if self.focused in row), None)
        if at is None and self.focused is not None and self.focused.id in ("as-captured", "sign-unverified"):
            at = (len(rows), 0)
        if at is None:
            return
        r, column = at
        onward = rows[r + 1:] if step > 0 else rows[:r][::-1]
        candidates: list[Widget] = [field for row in onward for field in (row[column], row[1 - column])]
        if step > 0:
            candidates += [*self.query("#as-captured, #sign-unverified"), *self.query("#body")]
        target = next((widget for widget in candidates if widget.focusable and widget is not self.focused), None)
        if target is not None:
            target.focus()

    def action_field_below(self) -> None:
        self._move_between_rows(1)

    def action_field_above(self) -> None:
        self._move_between_rows(-1)

    async def action_add_header(self) -> None:
        """Add an empty header row and put the cursor in its name."""
        row = HeaderRow()
        await self.query_one("#headers", VerticalScroll).mount(row)
        row.query_one(".name", Input).focus()
        row.scroll_visible()

    async def action_remove_header(self) -> None:
        """Remove the header row that has the focus."""
        focused = self.focused
        row = next((node for node in focused.ancestors if isinstance(node, HeaderRow)), None) if focused else None
        if row is None:
            self._show_message("Put the cursor in a header row to remove it.", error=True)
            return
        await row.remove()
        self._content_type_changed()

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    def action_send(self) -> None:
        """Send the edited request in a worker."""
        try:
            edit = self.build_edit()
        except ReplayError as exc:
            self._show_message(f"Not sent: {escape_control(str(exc))}", error=True)
            return
        self._show_message(Text("Sending…", "dim"))
        self._last_sent = edit
        self.run_worker(partial(self._replay, edit), group="replay", exclusive=True, exit_on_error=False)

    async def _replay(self, edit: Edit) -> None:
        try:
            replayed = await self._send(edit)
        except DevtunnelError as exc:
            self._show_message(f"Replay failed: {escape_control(str(exc))}", error=True)
            return
        except Exception as exc:  # the sender belongs to the caller; any failure is shown, never fatal
            self._show_message(f"Replay failed: {type(exc).__name__}: {escape_control(str(exc))}", error=True)
            return
        self.replayed = replayed
        self.refresh_bindings()
        self._show_comparison(replayed)

    def _show_comparison(self, replayed: Exchange) -> None:
        original = self.exchange
        self.query_one("#original", Static).update(
            response_preview("Original", original.response, original.error_message or (original.error or ""))
        )
        self.query_one("#replayed", Static).update(
            response_preview("Edited replay" if replayed.edited else "Replay", replayed.response,
                             replayed.error_message or (replayed.error or ""))
        )
        self.query_one("#compare").add_class("shown")
        self.add_class("-replayed")
        self._show_message(replay_notice(original, replayed, ignore_headers=self._ignore_headers),
                           error=replayed.response is None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Until there is a replay, ctrl+d is not ours: it deletes in the focused field.
        if action == "diff":
            return self.replayed is not None
        if action == "toggle_captured_signature":
            return self._provider is not None and not self._unverified  # only a signed webhook delivery has one to keep
        if action == "toggle_sign_unverified":
            return self._provider is not None and self._unverified
        return True

    def action_diff(self) -> None:
        """Compare the original exchange with the replay."""
        if self.replayed is None:
            raise SkipAction()  # let ctrl+d delete in the editor until there is something to diff
        self.app.push_screen(DiffScreen(self.exchange, self.replayed, volatile=uncounted_headers(self._ignore_headers)))

