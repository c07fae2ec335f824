"""``tunnels.NAME.via``: the provider of a named tunnel's public URL, in devtunnel.toml."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from devtunnel.cli import build_parser
from devtunnel.commands.config import resolve_http
from devtunnel.config import key_names, load
from devtunnel.errors import ConfigError


def settings_from(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    (tmp_path / "devtunnel.toml").write_text(text)
    (tmp_path / "devtunnel.toml").chmod(0o600)
    return load(environ={"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "xdg")}, cwd=tmp_path)


def http_args(settings, *argv: str) -> argparse.Namespace:  # type: ignore[no-untyped-def]
    args = build_parser().parse_args(["http", *argv])
    args.settings = settings
    return resolve_http(args)


def test_a_tunnel_names_its_provider_and_devtunnel_http_name_uses_it(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, '[relay]\nurl = "wss://tunnel.example.com"\ntoken = "t"\n'
                                       '[tunnels.hooks]\ntarget = 8000\nvia = " CloudFlare "\n'
                                       '[tunnels.plain]\ntarget = 8001\n')
    assert settings.tunnel("hooks").via == "cloudflared"  # type: ignore[union-attr]
    assert "tunnels.NAME.via" in key_names()
    args = http_args(settings, "hooks")
    assert (args.target, args.via, args.relay, args.token) == ("8000", "cloudflared", None, None)
    assert http_args(settings, "hooks", "--via", "ssh:me@host").via == "ssh:me@host"  # the flag wins
    assert http_args(settings, "hooks", "--via", "relay").via is None  # back to the relay
    plain = http_args(settings, "plain")
    assert plain.via is None and plain.relay == "wss://tunnel.example.com"


@pytest.mark.parametrize(
    ("value", "message"),
    [('"ngrok"', r"tunnels\.hooks\.via: --via 'ngrok': expected one of relay, cloudflared"),
     ('"ssh:-oProxyCommand=x"', r"tunnels\.hooks\.via: --via .*expected ssh:USER@HOST"),
     ('"ssh:me@-oProxyCommand"', r"tunnels\.hooks\.via: --via .*expected ssh:USER@HOST"),
     ('""', r"tunnels\.hooks\.via: expected non-empty text"),
     ("1", r"tunnels\.hooks\.via: expected non-empty text")],
)
def test_a_bad_via_in_a_file_names_the_file_line_and_key(tmp_path: Path, value: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        settings_from(tmp_path, f"[tunnels.hooks]\ntarget = 8000\nvia = {value}\n")
    assert re.search(r"devtunnel\.toml:3: " + message, str(caught.value)), str(caught.value)


def test_via_and_relay_flags_together_are_refused(tmp_path: Path) -> None:
    settings = settings_from(tmp_path, "")
    with pytest.raises(ConfigError, match="give --via or --relay, not both"):
        http_args(settings, "8000", "--via", "cloudflared", "--relay", "ws://127.0.0.1:9")
