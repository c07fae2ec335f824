"""One way to bind: the relay, the agent API and the inspector's port checks agree on what is free."""

from __future__ import annotations

import socket

import pytest

from devtunnel.errors import ConfigError
from devtunnel.sockets import bind, bind_free, bindable, free_port


def test_a_port_a_listener_holds_is_not_bindable_and_is_after_it_closes() -> None:
    sock = bind("127.0.0.1", 0)
    sock.listen()
    port = sock.getsockname()[1]
    assert not bindable(port)
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"):
        bind("127.0.0.1", port)
    sock.close()
    assert bindable(port)


def test_bind_free_takes_the_next_port_when_the_first_is_taken() -> None:
    held = bind_free(0, tries=1, what="a test")
    port = held.getsockname()[1]
    try:
        other = bind_free(port, tries=50, what="a test")
        assert port < other.getsockname()[1] < port + 50
        other.close()
        with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port} for a test: the port is taken"):
            bind_free(port, tries=1, what="a test")
    finally:
        held.close()


@pytest.mark.parametrize("port", [-1, 65536, 70000])
def test_a_port_out_of_range_is_one_clear_error_not_a_port_modulo_65536(port: int) -> None:
    with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}: a port is 0-65535"):
        bind("127.0.0.1", port)
    with pytest.raises(ConfigError, match="a port is 0-65535"):
        bind_free(port, tries=1, what="a test")


def test_localhost_prefers_ipv4_and_the_socket_is_not_inheritable() -> None:
    # Not inheritable: the apps devtunnel starts (uvloop passes inheritable descriptors on
    # whatever close_fds says) must not hold the relay's port (tests/net/test_app_run.py).
    sock = bind("localhost", 0)
    try:
        assert sock.family == socket.AF_INET and not sock.get_inheritable()
    finally:
        sock.close()


def test_free_port_is_bindable() -> None:
    assert bindable(free_port())
