"""Send a sample webhook from the inspector: the command palette's "Send a sample webhook…".

The same sending path as ``devtunnel send`` (:func:`devtunnel.commands.send.send_sample`): a
shipped sample, fresh ids and times, signed with the provider's secret from the same places
(``config.webhook_context``: devtunnel.toml, then the provider's variable). Sent
to a tunnel's public URL, it goes through the tunnel and shows up in the table like a real
delivery. The send runs in a worker thread: the inspector keeps drawing while it waits.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from devtunnel.tui.screens.dialog import Dialog
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import Worker

from devtunnel.commands.send import SendFailed, Sent, missing_secret, send_sample, signing_secrets
from devtunnel.errors import ConfigError
from devtunnel.tui.failures import tell_failure
from devtunnel.values.terminal import escape
from devtunnel.webhooks import BUILTIN, by_name
from devtunnel.webhooks.context import WebhookContext
from devtunnel.webhooks.samples import SampleInfo, list_samples
from devtunnel.webhooks.secrets import secrets_for

__all__ = ["SendSampleScreen", "sample_url"]


def sample_url(base_url: str, sample: SampleInfo) -> str:
    """The URL a sample goes to: a tunnel's public URL and the sample's path (``""`` without a tunnel)."""
    return base_url.rstrip("/") + sample.path if base_url else ""


def _label(sample: SampleInfo) -> str:
    label = f"{sample.provider} · {sample.event}"
    return label if sample.name == sample.event else f"{label} ({sample.name})"


class SendSampleScreen(Dialog[None]):
    """Choose a sample delivery and a URL, and send it, signed, as many times as wanted.

    | Key | Action |
    | :- | :- |
    | enter (in the URL) | send |
    | esc | close |

    Args:
        base_url: the selected tunnel's public URL, to which the sample's path is added ("" for none).
        environ: where secrets are read without ``webhooks`` (the provider's variable).
        webhooks: the providers' secrets as ``devtunnel send`` signs with them
            (``config.webhook_context``: devtunnel.toml, then the variables).
        samples: the samples to offer (the shipped ones by default).
        timeout: seconds to wait for the receiver.
        providers: the providers configured for the tunnel (``WebhookContext.configured``): the
            choice starts on the first sample of the first of them that has samples, else on the
            first sample.
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "dismiss(None)", "Close")]

    DEFAULT_CSS = """
    SendSampleScreen { align: center middle; }
    SendSampleScreen > Vertical {
        width: 76; max-width: 100%; height: auto; border: round $primary; background: $surface; padding: 0 1;
    }
    SendSampleScreen #send-secret { height: auto; color: $text-muted; }
    SendSampleScreen #send-secret.missing { color: $text-warning; }
    SendSampleScreen #send-result { height: auto; }
    SendSampleScreen #send-result.failed { color: $text-error; }
    SendSampleScreen Horizontal { height: auto; align-horizontal: right; }
    """

    def __init__(self, base_url: str = "", *, environ: Mapping[str, str] | None = None,
                 webhooks: WebhookContext | None = None, samples: Sequence[SampleInfo] | None = None,
                 timeout: float = 10.0, providers: Sequence[str] = ()) -> None:
        super().__init__()
        self.base_url = base_url
        self.environ = os.environ if environ is None else environ
        self.webhooks = webhooks
        self.samples = list(samples) if samples is not None else list_samples()
        self.timeout = timeout
        self.sent: list[Sent] = []
        """Every delivery sent from this screen, in order."""
        self._default_url = ""
        self._result_for: tuple[object, str] | None = None
        """The sample and URL the result line is about (None: no result shown)."""
        self._start = next((i for name in providers for i, s in enumerate(self.samples) if s.provider == name), 0)

    def compose_dialog(self) -> ComposeResult:
        with Vertical() as form:
            form.border_title = "Send a sample webhook"
            yield Label("Sample (provider · event)")
            yield Select([(_label(s), i) for i, s in enumerate(self.samples)],
                         value=self._start, allow_blank=False, id="send-sample")
            yield Label("URL (a tunnel's public URL: the delivery is captured like a real one)")
            yield Input(placeholder="http://hooks.localhost:8000/webhooks/stripe", id="send-url")
            yield Static("", id="send-secret")
            yield Static("", id="send-result")
            with Horizontal():
                yield Button("Close", id="send-close")
                yield Button("Send", variant="primary", id="send-go")

    def on_mount(self) -> None:
        self._sample_changed()
        self.query_one("#send-url", Input).focus()

    @property
    def sample(self) -> SampleInfo:
        """The sample chosen."""
        value = self.query_one("#send-sample", Select).value
        return self.samples[value if isinstance(value, int) else 0]

    @on(Select.Changed, "#send-sample")
    def _sample_changed(self) -> None:
        sample = self.sample
        url = self.query_one("#send-url", Input)
        default = sample_url(self.base_url, sample)
        if url.value in ("", self._default_url):  # not typed over: follow the sample's path
            url.value = default
        self._default_url = default
        variable = missing_secret(sample.provider, self.environ, webhooks=self.webhooks)
        note = self.query_one("#send-secret", Static)
        note.set_class(variable is not None, "missing")
        button = self.query_one("#send-go", Button)
        if variable is None:
            note.update(Text(f"Signed with the secret in {self._secret_source(sample.provider)}."))
            button.label = "Send"
        else:
            note.update(Text(f"No secret: set {variable}, or send unsigned."))
            button.label = "Send unsigned"
        self._forget_result()

    def _target(self) -> tuple[object, str]:
        """The sample chosen and the URL typed: what a send would use (the secret follows the sample)."""
        return self.query_one("#send-sample", Select).value, self.query_one("#send-url", Input).value.strip()

    @on(Input.Changed, "#send-url")
    def _forget_result(self) -> None:
        """Clear the last send's result once the sample or the URL differs from the ones it was
        about: it no longer says what Send would do."""
        if self._result_for is not None and self._result_for != self._target():
            self._result_for = None
            self._result(Text(""), failed=False)

    def _secret_source(self, provider_name: str) -> str:
        """Where the secret a sample is signed with comes from: its variable, else the config file."""
        provider = by_name(provider_name, BUILTIN)
        if provider is None:
            return "its variable"
        secrets, variable = signing_secrets(provider, self.environ, webhooks=self.webhooks)
        from_variable = secrets_for(provider, self.environ, env_name=variable)
        return variable if secrets and secrets[0] in from_variable else "the config file"

    @on(Input.Submitted, "#send-url")
    @on(Button.Pressed, "#send-go")
    def send(self) -> None:
        """Send the chosen sample to the URL (in a worker)."""
        url = self.query_one("#send-url", Input).value.strip()
        if not url:
            self._result_for = self._target()
            self._result(Text("Give a URL: a tunnel's public URL and a path."), failed=True)
            return
        self.query_one("#send-go", Button).disabled = True
        self._result_for = target = self._target()
        self._result(Text(f"Sending {self.sample.provider} {self.sample.name}…", "dim"), failed=False)
        self._send(self.sample, url, target)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    @work(group="send", exit_on_error=False)
    async def _send(self, sample: SampleInfo, url: str, target: tuple[object, str]) -> None:
        unsigned = missing_secret(sample.provider, self.environ, webhooks=self.webhooks) is not None
        try:
            sent = await asyncio.to_thread(send_sample, sample.provider, sample.name, url, environ=self.environ,
                                           unsigned=unsigned, timeout=self.timeout, webhooks=self.webhooks)
        except (ConfigError, SendFailed) as exc:
            # The shared messages name the CLI's flag; here the URL is the field above.
            self._result(Text(escape(str(exc).removeprefix("--to "))), failed=True)
        else:
            self.sent.append(sent)
            ident = f" ({escape(sent.delivery_id)})" if sent.delivery_id else ""
            line = Text(f"Sent {sent.label}{ident}, {'signed' if sent.signed else 'unsigned'}: ")
            line.append(f"{sent.status} {escape(sent.reason)}", "bold green" if sent.ok else "bold red")
            if sent.first_line:
                line.append(f"\n{escape(sent.first_line)}")
            self._result(line, failed=not sent.ok)
        finally:
            self.query_one("#send-go", Button).disabled = False
            # The answer names the sample it is about: shown even when the choice changed while
            # it was on its way, and cleared by the next change.
            self._result_for = target

    def _result(self, text: Text, *, failed: bool) -> None:
        result = self.query_one("#send-result", Static)
        result.set_class(failed, "failed")
        result.update(text)

    @on(Button.Pressed, "#send-close")
    def close(self) -> None:
        self.dismiss(None)
