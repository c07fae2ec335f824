"""Sending a sample webhook from the inspector: to receivers that verify with the providers' libraries.

Through a real agent and tunnel (the delivery then shows up in the table like a real one), and
straight to a receiver for what the screen says without a secret, on a refusal and on bad input.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from devtunnel.tui.screens.new_tunnel import TunnelRequest
from devtunnel.tui.screens.send import SendSampleScreen
from devtunnel.tui.widgets import RequestTable, TunnelsPanel
from devtunnel.webhooks.samples import list_samples
from tests.helpers import async_wait_for, free_port
from tests.kit.servers import Received, Reply, http_server
from tests.tui.app_fixtures import inspector_with_agent, screen_lines
from tests.tui.screen_fixtures import ScreenApp, screen_text
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

pytestmark = pytest.mark.timeout(90)


def _result(screen: SendSampleScreen) -> str:
    """The result line as plain text (the dialog folds it over lines)."""
    return str(screen.query_one("#send-result").render())


def _send_screen_mounted(app) -> bool:  # type: ignore[no-untyped-def]
    """The send screen is on top with its button and the label of its sample choice mounted (the
    choice's label comes after the button: setting the choice before it is there fails)."""
    return isinstance(app.screen, SendSampleScreen) and bool(app.screen.query("#send-go")) and bool(
        app.screen.query("#send-sample #label"))


def _index(provider: str, name: str) -> int:
    return next(i for i, s in enumerate(list_samples()) if (s.provider, s.name) == (provider, name))


async def test_palette_sends_a_signed_sample_through_the_tunnel_and_the_row_appears(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in RECEIVER_SECRETS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"])  # the agent's too
    db = tmp_path / "captures.db"
    with receiver() as rx:
        app = inspector_with_agent(db, tmp_path, tunnels=[TunnelRequest(rx.url, "pay")])
        async with app.run_test(size=(120, 30)) as pilot:
            panel = app.query_one(TunnelsPanel)
            table = app.query_one(RequestTable)
            await async_wait_for(lambda: panel.tunnels.get("pay") and panel.tunnels["pay"].state == "online",
                                 timeout=30, what="the tunnel online")
            public_url = panel.tunnels["pay"].public_url

            await pilot.press("ctrl+p")
            await pilot.press(*"Send a sample webhook")
            await async_wait_for(lambda: "Send a sample webhook" in screen_text(app), what="the command")
            await pilot.press("enter")
            await async_wait_for(lambda: _send_screen_mounted(app), what="the send screen")
            screen = app.screen
            assert isinstance(screen, SendSampleScreen)
            screen.query_one("#send-sample").value = _index("stripe", "payment_intent.succeeded")
            await pilot.pause()
            assert screen.query_one("#send-url").value == public_url + "/webhooks/stripe"
            assert "Signed with the secret in STRIPE_WEBHOOK_SECRET." in screen_text(app)

            await pilot.press("enter")  # in the URL field
            await async_wait_for(lambda: screen.sent, timeout=30, what="the delivery sent")
            assert screen.sent[0].ok and screen.sent[0].signed
            assert rx.verdicts == [("/webhooks/stripe", 200, "ok")]
            assert _result(screen).startswith("Sent stripe payment_intent.succeeded (evt_")
            assert _result(screen).endswith(", signed: 200 OK")

            await pilot.press("escape")
            await async_wait_for(lambda: any("✓  stripe · payment_intent.succeeded" in line
                                             for line in screen_lines(table)), timeout=20, what="the row, valid")
            assert len(table.ids) == 1
            await pilot.press("q")  # what a user does: the agent stops with the inspector
            await async_wait_for(lambda: not app.is_running, what="the app to quit")


async def test_without_a_secret_the_screen_says_so_and_sends_unsigned() -> None:
    with receiver() as rx:
        screen = SendSampleScreen(rx.url, environ={})
        app = ScreenApp(screen)
        async with app.run_test(size=(100, 24)) as pilot:
            screen.query_one("#send-sample").value = _index("github", "ping")
            await pilot.pause()
            assert "No secret: set GITHUB_WEBHOOK_SECRET, or send unsigned." in screen_text(app)
            assert str(screen.query_one("#send-go").label) == "Send unsigned"
            await pilot.click("#send-go")
            await async_wait_for(lambda: screen.sent, what="the delivery sent")
            assert not screen.sent[0].signed and screen.sent[0].status == 401
            assert rx.verdicts == [("/webhooks/github", 401, "bad signature")]
            assert "unsigned: 401 Unauthorized\nbad signature" in _result(screen)


async def test_a_secret_in_devtunnel_toml_signs_the_sample_as_devtunnel_send_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devtunnel.config import load, webhook_context
    from tests.tui.app_fixtures import fill, inspector

    for name in RECEIVER_SECRETS:
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    config = project / "devtunnel.toml"
    config.write_text(f'[webhooks.stripe]\nsecret = "{RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]}"\n')
    config.chmod(0o600)
    environ = {"XDG_CONFIG_HOME": str(tmp_path / "no-user-config")}
    webhooks = webhook_context(load(environ, cwd=project), environ)
    with receiver() as rx:
        app = inspector(fill(tmp_path / "captures.db", []), tmp_path, webhooks=webhooks)
        async with app.run_test(size=(100, 24)) as pilot:
            await pilot.pause()
            app.action_send_sample()  # the palette's "Send a sample webhook"
            await async_wait_for(lambda: _send_screen_mounted(app),
                                 what="the send screen")
            screen = app.screen
            assert isinstance(screen, SendSampleScreen)
            screen.query_one("#send-sample").value = _index("stripe", "payment_intent.succeeded")
            screen.query_one("#send-url").value = rx.url + "/webhooks/stripe"
            await pilot.pause()
            assert "Signed with the secret in the config file." in screen_text(app)
            assert str(screen.query_one("#send-go").label) == "Send"
            await pilot.click("#send-go")
            await async_wait_for(lambda: screen.sent, what="the delivery sent")
            assert screen.sent[0].signed and screen.sent[0].ok
            assert rx.verdicts == [("/webhooks/stripe", 200, "ok")]


def _project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str) -> Path:
    """A project folder with ``toml`` as its devtunnel.toml, made the current folder, with no
    user config, no secrets in the environment and a state folder of the test's own."""
    for name in [*RECEIVER_SECRETS, "DEVTUNNEL_CONFIG", "DEVTUNNEL_DB"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "no-user-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    project = tmp_path / "project"
    project.mkdir()
    config = project / "devtunnel.toml"
    config.write_text(toml)
    config.chmod(0o600)
    monkeypatch.chdir(project)
    return project


async def test_devtunnel_inspect_hands_the_secrets_of_devtunnel_toml_to_the_send_screen(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command's own way from its arguments and settings to the inspector (``http`` takes it too)."""
    from devtunnel.cli import build_parser
    from devtunnel.commands.inspect import _db, inspector_app
    from devtunnel.config import load
    from tests.tui.app_fixtures import fill

    secret = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
    _project(tmp_path, monkeypatch, f'[webhooks.stripe]\nsecret = "{secret}"\n')
    args = build_parser().parse_args(["inspect", "--db", str(fill(tmp_path / "captures.db", []))])
    args.settings = load()  # as cli.main does
    app = inspector_app(_db(args), None, args)
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        app.action_send_sample()
        await async_wait_for(lambda: _send_screen_mounted(app),
                             what="the send screen")
        screen = app.screen
        assert isinstance(screen, SendSampleScreen)
        assert screen.webhooks is not None and screen.webhooks.secrets.get("stripe") == (secret,)
        screen.query_one("#send-sample").value = _index("stripe", "payment_intent.succeeded")
        await pilot.pause()
        assert "Signed with the secret in the config file." in screen_text(app)


async def test_a_typed_url_is_kept_when_another_sample_is_chosen() -> None:
    screen = SendSampleScreen("http://pay.localhost:8000", environ=RECEIVER_SECRETS)
    app = ScreenApp(screen)
    async with app.run_test(size=(100, 24)) as pilot:
        url = screen.query_one("#send-url")
        screen.query_one("#send-sample").value = _index("github", "push")
        await pilot.pause()
        assert url.value == "http://pay.localhost:8000/webhooks/github"
        url.value = "http://pay.localhost:8000/hooks/in"
        screen.query_one("#send-sample").value = _index("stripe", "invoice.paid")
        await pilot.pause()
        assert url.value == "http://pay.localhost:8000/hooks/in"


async def test_the_last_result_is_cleared_when_the_sample_or_the_url_changes() -> None:
    """The result of a GitHub sample sent unsigned stayed under the Stripe sample chosen next
    and its "Signed with the secret in STRIPE_WEBHOOK_SECRET.", as if about that one."""
    stripe_secret = {"STRIPE_WEBHOOK_SECRET": RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]}
    with http_server(lambda request: Reply(200)) as server:
        screen = SendSampleScreen(server.url, environ=stripe_secret)
        app = ScreenApp(screen)
        async with app.run_test(size=(100, 24)) as pilot:
            screen.query_one("#send-sample").value = _index("github", "installation")
            await pilot.pause()
            await pilot.click("#send-go")
            await async_wait_for(lambda: len(screen.sent) == 1 and "200 OK" in _result(screen), what="the first send")
            assert _result(screen).startswith("Sent github installation (") and ", unsigned: 200 OK" in _result(screen)

            screen.query_one("#send-sample").value = _index("stripe", "invoice.paid")
            await async_wait_for(lambda: not _result(screen), what="the result cleared")
            assert "Signed with the secret in STRIPE_WEBHOOK_SECRET." in screen_text(app)
            assert "Sent github" not in screen_text(app)

            await pilot.click("#send-go")
            await async_wait_for(lambda: len(screen.sent) == 2 and "200 OK" in _result(screen), what="the second send")
            assert _result(screen).startswith("Sent stripe invoice.paid (") and ", signed: 200 OK" in _result(screen)
            await pilot.pause()
            assert "200 OK" in _result(screen)  # the send itself changed nothing: its result stays

            screen.query_one("#send-url").focus()
            await pilot.press("end", "backspace")
            await async_wait_for(lambda: not _result(screen), what="the result cleared by the URL typed")
            await pilot.press("e")  # back to the URL it was sent to: nothing to clear, nothing brought back
            await pilot.pause()
            assert not _result(screen)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("", "Give a URL: a tunnel's public URL and a path."),
        ("ftp://x/", "'ftp://x/': expected an http:// or https:// URL"),
        ("http://127.0.0.1:{port}/webhooks/stripe", "stripe payment_intent.succeeded to http://127.0.0.1:"),
    ],
)
async def test_bad_urls_and_unreachable_receivers_are_one_clear_line(url: str, message: str) -> None:
    screen = SendSampleScreen("", environ=RECEIVER_SECRETS)
    app = ScreenApp(screen)
    async with app.run_test(size=(120, 24)) as pilot:
        screen.query_one("#send-sample").value = _index("stripe", "payment_intent.succeeded")
        screen.query_one("#send-url").value = url.format(port=free_port())
        await pilot.pause()
        await pilot.click("#send-go")
        await async_wait_for(lambda: message in _result(screen), what="the message")
        await async_wait_for(lambda: not screen.query_one("#send-go").disabled, what="ready again")
        shown = screen_text(app)
        assert "\x1b" not in shown and "Traceback" not in shown and not screen.sent
        assert screen.query_one("#send-result").has_class("failed")


def _hostile(request: Received) -> Reply:
    """A receiver whose refusal holds markup in its reason and escape sequences in its body."""
    body = "\x1b]52;c;SGVsbG8=\x07\u202e[red]refused[/red]\nsecond line".encode()
    return Reply(400, body=body, reason="[bold]Bad[/bold]")


async def test_what_the_receiver_answers_is_shown_escaped() -> None:
    with http_server(_hostile) as server:
        screen = SendSampleScreen(server.url, environ=RECEIVER_SECRETS)
        app = ScreenApp(screen)
        async with app.run_test(size=(120, 24)) as pilot:
            await pilot.click("#send-go")
            await async_wait_for(lambda: screen.sent, what="the answer")
            assert _result(screen).endswith(": 400 [bold]Bad[/bold]\n\\x1b]52;c;SGVsbG8=\\x07\\u202e[red]refused[/red]")
            shown = screen_text(app)
            assert "\x1b" not in shown and "\u202e" not in shown and "[bold]Bad[/bold]" in shown


def test_snapshot_send_screen_without_a_secret_at_80x24(snap_compare) -> None:  # type: ignore[no-untyped-def]
    screen = SendSampleScreen("http://hooks.localhost:8000", environ={})

    async def run_before(pilot) -> None:  # type: ignore[no-untyped-def]
        screen.query_one("#send-sample").value = _index("stripe", "payment_intent.succeeded")
        await pilot.pause()

    assert snap_compare(ScreenApp(screen), terminal_size=(80, 24), run_before=run_before)


async def test_the_palette_starts_on_the_sample_of_the_provider_configured_for_the_tunnel(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # [tunnels.pay.webhooks.stripe]: the tunnel pay takes Stripe deliveries. The palette started
    # on the first sample (GitHub's) whatever the tunnel, and signed with the global secrets only.
    from devtunnel.config import load, webhook_context

    for name in RECEIVER_SECRETS:
        monkeypatch.delenv(name, raising=False)
    project = tmp_path / "project"
    project.mkdir()
    config = project / "devtunnel.toml"
    with receiver() as rx:
        config.write_text(f'[tunnels.pay]\ntarget = "{rx.url}"\n'
                          f'[tunnels.pay.webhooks.stripe]\nsecret = "{RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]}"\n')
        config.chmod(0o600)
        environ = {"XDG_CONFIG_HOME": str(tmp_path / "no-user-config")}
        webhooks = webhook_context(load(environ, cwd=project), environ)
        app = inspector_with_agent(tmp_path / "captures.db", tmp_path, tunnels=[TunnelRequest(rx.url, "pay")],
                                   webhooks=webhooks)
        async with app.run_test(size=(120, 30)) as pilot:
            panel = app.query_one(TunnelsPanel)
            await async_wait_for(lambda: panel.tunnels.get("pay") and panel.tunnels["pay"].state == "online",
                                 timeout=30, what="the tunnel online")
            public_url = panel.tunnels["pay"].public_url
            await pilot.press("ctrl+p")
            await pilot.press(*"Send a sample webhook")
            await async_wait_for(lambda: "Send a sample webhook" in screen_text(app), what="the command")
            await pilot.press("enter")
            await async_wait_for(lambda: _send_screen_mounted(app), what="the send screen")
            screen = app.screen
            assert isinstance(screen, SendSampleScreen)
            first_stripe = next(i for i, s in enumerate(list_samples()) if s.provider == "stripe")
            assert first_stripe != 0
            assert screen.query_one("#send-sample").value == first_stripe
            assert screen.query_one("#send-url").value == public_url + screen.sample.path
            assert "Signed with the secret in the config file." in screen_text(app)
            await pilot.press("enter")  # in the URL field: the Stripe sample, signed, through the tunnel
            await async_wait_for(lambda: screen.sent, timeout=30, what="the delivery sent")
            assert screen.sent[0].signed and screen.sent[0].ok, _result(screen)
            assert rx.verdicts[-1] == ("/webhooks/stripe", 200, "ok")
            await pilot.press("escape")
            await pilot.press("q")
            await async_wait_for(lambda: not app.is_running, what="the app to quit")


@pytest.mark.parametrize(("providers", "expected"), [((), None), (("acme", "slack"), "slack"), (("twilio",), "twilio")])
async def test_the_screen_starts_on_the_first_configured_provider_that_has_samples(
        providers: tuple[str, ...], expected: str | None) -> None:
    screen = SendSampleScreen("", environ={}, providers=providers)
    app = ScreenApp(screen)
    async with app.run_test(size=(100, 24)) as pilot:
        await pilot.pause()
        samples = list_samples()
        start = samples[0] if expected is None else next(s for s in samples if s.provider == expected)
        assert screen.sample == start


def test_http_with_another_name_gives_the_inspector_the_tunnels_provider_and_secrets_under_that_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # devtunnel http payments --name other: tunnel other is [tunnels.payments] (its webhook secrets
    # applied to the agent's verdicts already); the inspector's palette knew it under no name.
    from devtunnel.cli import build_parser
    from devtunnel.commands.config import resolve_http
    from devtunnel.commands.http import agent_options
    from devtunnel.commands.inspect import inspector_app
    from devtunnel.config import load

    secret = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]
    _project(tmp_path, monkeypatch,
             f'[tunnels.payments]\ntarget = 8080\n[tunnels.payments.webhooks.stripe]\nsecret = "{secret}"\n')
    args = build_parser().parse_args(["http", "payments", "--name", "other", "--db", str(tmp_path / "c.db")])
    args.settings = load()  # as cli.main does
    args = resolve_http(args)
    assert agent_options(args).webhook_names == {"other": "payments"}
    app = inspector_app(Path(args.db), None, args)
    assert app.webhooks is not None
    other = app.webhooks.for_tunnel("other")
    assert other.configured == ("stripe",) and other.secrets.get("stripe") == (secret,)
