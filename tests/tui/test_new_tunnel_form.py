"""The new-tunnel form checks its values with the rules of ``devtunnel http`` and the agent API."""

from __future__ import annotations

import pytest

from devtunnel.tui.screens.new_tunnel import check


@pytest.mark.parametrize(("target", "name", "relay"), [
    ("8080", "", ""),
    ("localhost:3000", "", ""),
    ("http://[::1]:8080/api", "", ""),
    ("8080", "Shop", ""),  # lowered, as --name and the API do: the form refused it
    ("8080", "", "wss://relay.example.com"),
])
def test_what_the_command_line_takes_the_form_takes(target: str, name: str, relay: str) -> None:
    assert check(target, name, relay) is None


@pytest.mark.parametrize(("target", "name", "relay", "message"), [
    ("", "", "", "target is required: a port (8080), HOST:PORT or a URL"),
    ("0", "", "", "invalid target '0': port 0 is not between 1 and 65535"),
    ("8080", "a_b", "", "tunnel name 'a_b' is not a valid DNS label: only letters a-z, digits and '-' are allowed"),
    # The form took these, which the agent then refused in other words.
    ("8080", "xn--pple-43d", "", "tunnel name 'xn--pple-43d' is reserved"),
    ("8080", "", "wss://me:s3cret@relay.example.com", "a relay URL takes no user name or password"),
    ("8080", "", "ftp://relay.example.com", "use ws://, wss://, http:// or https://"),
])
def test_what_the_command_line_refuses_the_form_refuses_in_its_words(target: str, name: str, relay: str,
                                                                     message: str) -> None:
    problem = check(target, name, relay)
    assert problem is not None and message in problem
    assert "s3cret" not in problem
