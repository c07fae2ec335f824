"""Objects that hold a secret never show it in their repr: a repr ends up in a log line, an
error message or a test report (``%r``, ``{config!r}``, a failed assertion)."""

from __future__ import annotations

import pytest

from devtunnel.agent.config import TunnelConfig
from devtunnel.config.settings import RelaySection
from devtunnel.protocol.events import Hello
from devtunnel.relay.settings import RelaySettings
from devtunnel.rules import shorthand_rules
from devtunnel.rules.model import Credential

SECRET = "Sekret-0123456789abcdef"


@pytest.mark.parametrize("holder", [
    TunnelConfig("8080", token=SECRET),
    TunnelConfig("8080", rules=shorthand_rules([f"alice:{SECRET}"], [], None)),
    TunnelConfig("8080", rules=shorthand_rules(header_edits=([f"Authorization: Bearer {SECRET}"], [], [], []))),
    RelaySection(token=SECRET),
    RelaySettings(tokens=[SECRET]),
    Hello(1, SECRET, "payments", rules={"version": 1, "list": [{"action": "basic-auth", "users": [f"alice:{SECRET}"]}]}),
    Credential("alice", SECRET),
], ids=lambda holder: type(holder).__name__)
def test_the_repr_of_what_holds_a_token_or_a_password_leaves_it_out(holder: object) -> None:
    assert SECRET not in repr(holder) and SECRET not in str(holder)
