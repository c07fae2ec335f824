"""``[webhooks.PROVIDER]`` and ``[tunnels.NAME.webhooks.PROVIDER]``: secrets, custom providers, errors."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange, Headers
from devtunnel.config import WebhookSection, to_toml, webhook_context
from devtunnel.errors import ConfigError
from devtunnel.webhooks import CustomProvider, Delivery, Signature
from devtunnel.webhooks.providers import GitHub, Stripe
from tests.kit.exchanges import make_exchange
from tests.test_config import Places, places  # noqa: F401 (fixture)

SECRET = "whsec_a_secret_nobody_may_see_0001"


def private(path: Path) -> Path:
    path.chmod(0o600)
    return path


def stripe_exchange(secret: str, *, tunnel: str = "web", at: float | None = None) -> Exchange:
    now = time.time() if at is None else at
    body = b'{"id": "evt_1", "type": "invoice.paid"}'
    headers = Stripe().sign(Delivery("POST", "", Headers([("Host", "web.localhost")]), body), secret, now)
    return make_exchange("POST", b"/hooks", headers, body, tunnel=tunnel, started_at=now, duration=0.01)


def test_secrets_come_from_the_file_then_the_conventional_variable(places: Places) -> None:
    private(places.write_user(f'[webhooks.stripe]\nsecrets = ["{SECRET}", "whsec_old"]\n'))
    settings = places.load()
    assert settings.webhooks == (WebhookSection(name="stripe", secrets=(SECRET, "whsec_old")),)
    ctx = webhook_context(settings, {"STRIPE_WEBHOOK_SECRET": "whsec_env", "GITHUB_WEBHOOK_SECRET": "gh"})
    assert ctx.secrets == {"stripe": (SECRET, "whsec_old", "whsec_env"), "github": ("gh",)}
    for secret in (SECRET, "whsec_old", "whsec_env"):  # any of them verifies: rotation
        assert ctx.judge(stripe_exchange(secret)).signature is Signature.VALID  # type: ignore[union-attr]


def test_secret_env_names_another_variable_and_the_reason_names_it(places: Places) -> None:
    places.write_project('[webhooks.stripe]\nsecret_env = "PAYMENTS_STRIPE"\n')
    settings = places.load()
    ctx = webhook_context(settings, {"STRIPE_WEBHOOK_SECRET": "whsec_ignored"})
    verdict = ctx.judge(stripe_exchange("whsec_x"))
    assert verdict is not None and verdict.signature is Signature.UNVERIFIED
    assert verdict.reason == "no secret: set PAYMENTS_STRIPE"
    ctx = webhook_context(settings, {"PAYMENTS_STRIPE": "whsec_x"})
    assert ctx.judge(stripe_exchange("whsec_x")).signature is Signature.VALID  # type: ignore[union-attr]


def test_a_tunnels_table_replaces_the_global_one_for_that_tunnel_only(places: Places) -> None:
    private(places.write_user(f'[webhooks.stripe]\nsecret = "{SECRET}"\n'
                              '[tunnels.pay]\ntarget = 3000\n[tunnels.pay.webhooks.stripe]\nsecret = "whsec_pay"\n'))
    ctx = webhook_context(places.load(), {})
    assert ctx.judge(stripe_exchange("whsec_pay", tunnel="pay")).signature is Signature.VALID  # type: ignore[union-attr]
    assert ctx.judge(stripe_exchange(SECRET, tunnel="pay")).signature is Signature.INVALID  # type: ignore[union-attr]
    assert ctx.judge(stripe_exchange(SECRET, tunnel="other")).signature is Signature.VALID  # type: ignore[union-attr]


def test_a_custom_provider_is_described_in_config_and_judged(places: Places) -> None:
    places.write_project('[webhooks.Acme]\nheader = "X-Acme-Signature"\nprefix = "sha256="\n'
                         'id_header = "X-Acme-Delivery"\nevent_path = "event.kind"\nsecret_env = "ACME_KEY"\n')
    ctx = webhook_context(places.load(), {"ACME_KEY": "acme-secret"})
    [acme] = [p for p in ctx.providers if isinstance(p, CustomProvider)]
    assert acme.name == "acme"
    body = b'{"event": {"kind": "order.shipped"}}'
    headers = acme.sign(Delivery("POST", "", Headers([("X-Acme-Delivery", "d-9")]), body), "acme-secret", 0)
    ex = make_exchange("POST", b"/", headers, body, tunnel="web", started_at=time.time(), duration=0.01)
    verdict = ctx.judge(ex)
    assert verdict is not None
    assert (verdict.provider, verdict.event_type, verdict.delivery_id, verdict.signature) == (
        "acme", "order.shipped", "d-9", Signature.VALID)


def test_a_secret_in_a_file_others_can_read_is_refused_and_never_shown(places: Places) -> None:
    path = places.write_project(f'[agent]\nbody_cap = "1mb"\n\n[webhooks.github]\nsecret = "{SECRET}"\n')
    path.chmod(0o640)
    with pytest.raises(ConfigError) as err:
        places.load()
    assert str(err.value) == (
        f"{path}:5: webhooks.github.secret: the file holds a webhook secret but other users can read it (mode 640): "
        f"run chmod 600 {path}, or move the secret to an environment variable and name it with secret_env")
    path.chmod(0o600)
    assert places.load().webhooks[0].secrets == (SECRET,)


@pytest.mark.parametrize(("text", "message"), [
    ('[webhooks.acme]\nencoding = "hex"\n', "1: webhooks.acme.header: the signature header is required"),
    ('[webhooks.acme]\nheader = "X-Sig"\nalgorithm = "md5"\n',
     "3: webhooks.acme.algorithm: expected one of 'sha1', 'sha256', 'sha512', got 'md5'"),
    ('[webhooks.acme]\nheader = "X-Sig"\ntemplate = "{timestamp}.{body}"\n',
     "3: webhooks.acme.template: {timestamp} needs timestamp_header"),
    ('[webhooks.acme]\nheader = "X-Sig"\ntemplate = "{nonce}"\n',
     "3: webhooks.acme.template: unknown field {nonce}; use {body}, {timestamp}, {id} or {url}"),
    ('[webhooks.acme]\nheader = "X-Sig"\ntolerance = -1\n', "3: webhooks.acme.tolerance: expected more than 0 seconds, got -1"),
    ('[webhooks.stripe]\nheader = "X-Sig"\n',
     "2: webhooks.stripe.header: stripe is built in: only secret, secrets and secret_env apply"),
    ('[webhooks.stripe]\nsecret_env = "NOT A NAME"\n',
     "2: webhooks.stripe.secret_env: expected an environment variable name such as STRIPE_WEBHOOK_SECRET "
     "(letters, digits and _, not starting with a digit); the value is not shown: it may be a secret"),
    ('[webhooks.stripe]\nsecret_evn = "X"\n', "2: webhooks.stripe.secret_evn: unknown setting; did you mean "
                                              "webhooks.stripe.secret_env?"),
    ('[webhooks.stripe]\nsecret = ""\n', "2: webhooks.stripe.secret: expected non-empty text (the value is not shown: "
                                         "it is a secret)"),
    ('[webhooks.stripe]\nsecrets = ["ok", 5]\n', "2: webhooks.stripe.secrets: expected a non-empty array of non-empty "
                                                 "texts (the value is not shown: it is a secret)"),
    ('[webhooks.stripe]\nsecret = "a"\nsecrets = ["b"]\n', "3: webhooks.stripe.secrets: give secret or secrets, not both"),
    ('[webhooks."a b"]\nheader = "X"\n', '1: webhooks.a b: a provider name is letters, digits, - and _ (up to 40), '
                                         'e.g. stripe or acme'),
    ('webhooks = 3\n', "1: webhooks: expected tables such as [webhooks.stripe], got an integer"),
    # A header name no request can carry: the provider would never recognise a delivery.
    ('[webhooks.acme]\nheader = "X Acme Signature"\n',
     "2: webhooks.acme.header: expected a header name (an HTTP token such as X-Acme-Signature), got 'X Acme Signature'"),
    ('[webhooks.acme]\nheader = "X-Sig"\ntimestamp_header = "X-Ts:"\ntemplate = "{timestamp}.{body}"\n',
     "3: webhooks.acme.timestamp_header: expected a header name (an HTTP token such as X-Acme-Signature), got 'X-Ts:'"),
    ('[webhooks.acme]\nheader = "X-Sig"\nid_header = "X-Délivery"\n',
     "3: webhooks.acme.id_header: expected a header name (an HTTP token such as X-Acme-Signature), got 'X-Délivery'"),
    ('[tunnels.pay]\ntarget = 3000\n[tunnels.pay.webhooks.acme]\nheader = "X"\n',
     "4: tunnels.pay.webhooks.acme.header: a tunnel's table takes only secret, secrets and secret_env; describe the "
     "provider under [webhooks.acme]"),
    ('[tunnels.pay]\ntarget = 3000\n[tunnels.pay.webhooks.acme]\nsecret_env = "X"\n',
     "3: tunnels.pay.webhooks.acme: no provider named acme: use one of github, shopify, slack, standard, stripe, "
     "twilio, or describe it under [webhooks.acme] (header = ...)"),
])
def test_a_bad_webhooks_table_is_one_error_naming_the_file_the_line_and_the_key(
        places: Places, text: str, message: str) -> None:
    path = private(places.write_project(text))
    with pytest.raises(ConfigError) as err:
        places.load()
    assert str(err.value) == f"{path}:{message}"


def test_a_tunnel_may_name_a_custom_provider_of_another_file(places: Places) -> None:
    places.write_user('[webhooks.acme]\nheader = "X-Sig"\n')
    places.write_project('[tunnels.pay]\ntarget = 3000\n[tunnels.pay.webhooks.acme]\nsecret_env = "PAY_ACME"\n')
    ctx = webhook_context(places.load(), {"PAY_ACME": "k"})
    assert ctx.for_tunnel("pay").secrets == {"acme": ("k",)}


def test_config_show_masks_every_secret_and_loads_back_unmasked(places: Places) -> None:
    private(places.write_user(f'[webhooks.stripe]\nsecrets = ["{SECRET}", "whsec_short"]\n'
                              '[webhooks.acme]\nheader = "X-Sig"\nencoding = "base64"\nprefix = ""\ntolerance = 60\n'
                              'timestamp_header = "X-Ts"\ntemplate = "{timestamp}:{body}"\n'
                              f'[tunnels.pay]\ntarget = 3000\n[tunnels.pay.webhooks.github]\nsecret = "{SECRET}x"\n'))
    shown = places.cli("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert SECRET not in shown.stdout and "whsec_short" not in shown.stdout
    assert '"********0001"' in shown.stdout and '"********"' in shown.stdout
    settings = places.load()
    private(places.user_file).write_text(to_toml(settings, mask_token=False))
    assert places.load() == settings
    assert SECRET not in repr(settings)  # nothing that logs the settings can leak one


def test_config_set_points_webhook_keys_to_the_file(places: Places) -> None:
    done = places.cli("config", "set", "webhooks.stripe.secret", SECRET)
    assert done.returncode == 2
    assert "webhook settings are written in the file itself" in done.stderr and SECRET not in done.stderr


def test_judging_logs_no_secret(places: Places, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    private(places.write_user(f'[webhooks.github]\nsecret = "{SECRET}"\n'))
    ctx = webhook_context(places.load(), {})
    body = b"{}"
    headers = GitHub().sign(Delivery("POST", "", Headers([("X-GitHub-Event", "ping")]), body), "wrong", 0)
    ex = make_exchange("POST", b"/", headers, body, tunnel="web", started_at=time.time(), duration=0.01)
    assert ctx.judge(ex).signature is Signature.INVALID  # type: ignore[union-attr]
    assert SECRET not in repr(ctx) and SECRET not in caplog.text
