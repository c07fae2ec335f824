"""End to end in a real terminal: a signed Stripe delivery through ``devtunnel http`` in tmux,
edited with keys alone in the inspector and replayed to a receiver that verifies it with
Stripe's own library."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import wait_for
from tests.tui.test_e2e_tmux import DEVTUNNEL, Tmux, exit_status, wait_online
from tests.webhooks.receivers import RECEIVER_SECRETS, receiver

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(120),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux"),
]

SECRET = RECEIVER_SECRETS["STRIPE_WEBHOOK_SECRET"]


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    t = Tmux()
    yield t
    t.close()


def test_a_delivery_edited_with_keys_alone_is_signed_afresh_and_accepted(tmp_path: Path, tmux: Tmux) -> None:
    """The user's path: the row, enter, e, down through the header rows (and the signature's
    checkbox, where the keys once stopped) to the body, select it all, type another, ctrl+s."""
    with receiver() as rx:
        port = rx.url.rsplit(":", 1)[1]
        env = f"env XDG_STATE_HOME={tmp_path / 'state'} XDG_CONFIG_HOME={tmp_path / 'config'} " \
              f"STRIPE_WEBHOOK_SECRET={SECRET} TERM=xterm-256color"
        tmux.start(f"{env} {DEVTUNNEL} http {port} --db {tmp_path / 'captures.db'} --name hooks; "
                   f"echo $? > {tmp_path / 'status'}", 120, 40)
        relay = wait_online(tmux, "hooks", tmp_path / "state" / "devtunnel" / "agent.log")

        sent = subprocess.run([DEVTUNNEL, "send", "stripe", "payment_intent.succeeded",
                               "--to", f"http://hooks.localhost:{relay}"],
                              capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
                              env={**os.environ, "STRIPE_WEBHOOK_SECRET": SECRET,
                                   "XDG_CONFIG_HOME": str(tmp_path / "config")})
        assert sent.returncode == 0 and ": 200 OK" in sent.stdout, sent.stdout + sent.stderr
        assert rx.verdicts == [("/webhooks/stripe", 200, "ok")]
        tmux.wait_showing(r"payment_intent\.succeeded\s+200", timeout=20, what="the delivery's row")

        def keys(*names: str) -> None:
            tmux.run("send-keys", "-t", "e2e", *names)

        keys("Enter")
        tmux.wait_showing(r"Signature\s+✓ valid", timeout=20, what="the detail")
        keys("e")
        tmux.wait_showing("Edit and replay", timeout=20, what="the edit form")
        keys(*["Down"] * 30)  # more than the rows and the checkbox: the rest move in the body
        keys("F7")  # in the body: select all, which what is typed replaces
        edited = {"id": "evt_edited", "object": "event", "type": "payment_intent.succeeded",
                  "data": {"object": {"id": "pi_1", "object": "payment_intent", "amount": 999}}}
        tmux.run("send-keys", "-t", "e2e", "-l", json.dumps(edited, separators=(",", ":")))
        tmux.wait_showing("evt_edited", timeout=20, what="the typed body")
        keys("C-s")
        try:
            screen = tmux.wait_showing(r"Replayed: \d{3}", timeout=30, what="the replay's outcome")
        except AssertionError:
            raise AssertionError(f"{tmux.screen()}\nreceived: {rx.bodies[1:]}") from None
        assert "Replayed: 200 OK" in screen and "re-signed (stripe)" in screen, screen
        wait_for(lambda: len(rx.verdicts) == 2, timeout=10, what="the replay at the receiver")
        assert rx.verdicts[1] == ("/webhooks/stripe", 200, "ok"), rx.verdicts
        assert json.loads(rx.bodies[1]) == edited

        keys("Escape")  # the form as it was sent: one esc closes it
        tmux.wait_showing(r"Signature\s+✓ valid", timeout=20, what="the detail again")
        keys("Escape")
        tmux.wait_showing(r"↻✎s /webhooks/stripe", timeout=20, what="the edited replay's row")
        keys("q")
        assert exit_status(tmp_path / "status") == "0"
