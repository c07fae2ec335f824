"""Listening sockets: one way to bind for the relay, the agent API and the inspector's port checks.

Every listener devtunnel opens sets ``SO_REUSEADDR`` (a restarted relay gets its port back while
old connections sit in TIME_WAIT), so a check that a port is free must bind the same way, or it
says "taken" for a port the relay could have had. Failures are ``ConfigError``s that name the
address, never a traceback.
"""

from __future__ import annotations

import errno
import socket

from devtunnel.errors import ConfigError

__all__ = ["bind", "bind_free", "bindable", "free_port"]

_TAKEN = (errno.EADDRINUSE, errno.EACCES)


def _socket(family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0) -> socket.socket:
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    return sock


def _check_port(host: str, port: int) -> None:
    if not 0 <= port <= 65535:
        raise ConfigError(f"cannot listen on {host}:{port}: a port is 0-65535")


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port``, ready to listen (uvicorn listens on it, in this process).

    It is not inheritable (Python's default): the event loop is uvloop's, which ignores
    ``close_fds`` and passes every inheritable descriptor to the processes it starts, so the
    apps of ``--run`` and ``--via``'s providers, and whatever they leave running, would hold the
    relay's port after devtunnel is gone.

    A name like ``localhost`` may resolve to ``::1`` first; IPv4 is preferred since most clients
    try 127.0.0.1 first.
    """
    try:
        _check_port(host, port)  # getaddrinfo takes 70000 as 4464
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        family, kind, proto, _, address = infos[0]
        sock = _socket(family, kind, proto)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc}") from exc
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def bind_free(port: int, *, tries: int, what: str, host: str = "127.0.0.1") -> socket.socket:
    """A non-blocking listening socket on ``host`` at ``port`` or the next free one of ``tries``.

    ``port`` 0 takes any free port. ``what`` names the listener in the error when none is free
    (with ``tries=1``: that ``port`` is taken).
    """
    _check_port(host, port)
    candidates = [0] if port == 0 else range(port, min(port + tries, 65536))
    for candidate in candidates:
        sock = _socket()
        try:
            sock.bind((host, candidate))
            sock.listen(128)
        except OSError as exc:
            sock.close()
            if exc.errno in _TAKEN:
                continue
            raise ConfigError(f"cannot listen on {host}:{candidate} for {what}: {exc.strerror}") from exc
        sock.setblocking(False)
        return sock
    if len(candidates) == 1 and port:
        raise ConfigError(f"cannot listen on {host}:{port} for {what}: the port is taken")
    raise ConfigError(f"no free port for {what} on {host} from {port} to {port + tries - 1}")


def bindable(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a listener could bind ``host:port`` now (bound the way :func:`bind` binds)."""
    with _socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on ``host`` at this moment (the system's choice)."""
    with _socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
