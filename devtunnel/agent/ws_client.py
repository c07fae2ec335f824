"""``websockets``' client ``connect``, but a redirect is an answer, never followed.

The agent opens WebSockets to two places, and each must be the one it was told: the relay URL
the user gave (its first frame, HELLO, carries the token) and the tunnel's local target (the
handshake carries the public client's headers). ``websockets`` follows a 3xx answer to the
opening handshake to any host and port it names, so a relay (or a local app's open redirect,
reached with a public path) could send the token or a public request to another address,
another port on this machine included. Here the 3xx is raised as the ``InvalidStatus`` it is:
``tunnel.py`` reports it, ``local_ws.py`` passes it on to the public client.
"""

from __future__ import annotations

from websockets.asyncio.client import connect

__all__ = ["connect_here"]


class connect_here(connect):  # noqa: N801 - used as websockets' ``connect`` is: ``await connect_here(uri, ...)``
    """``websockets.asyncio.client.connect`` that raises a redirect instead of following it."""

    def process_redirect(self, exc: Exception) -> Exception | str:
        return exc
