"""The relay's own pages, served on its domain itself (not a tunnel's name): ``/healthz`` and the
status page at ``/``.
"""

from __future__ import annotations

from collections.abc import Mapping

from devtunnel import __version__
from devtunnel.relay.asgi import Scope, Send, send_plain
from devtunnel.relay.pool import Pool


async def own_page(scope: Scope, send: Send, host: bytes, pools: Mapping[str, Pool]) -> None:
    """Answer a request for the relay's own domain (``pools``: the names online)."""
    path = scope["path"]
    if path == "/healthz":
        await send_plain(send, 200, "ok\n")
    elif path == "/":
        await send_plain(send, 200, status_text(pools))
    else:
        await send_plain(send, 404, f"nothing at {path} on {host.decode('latin-1')}\n")


def status_text(pools: Mapping[str, Pool]) -> str:
    """The status page: version, tunnels and agents online, and each pool with its members.

    Names held by one agent are only counted: a pool's name is one a team shares on purpose.
    """
    agents = sum(len(pool) for pool in pools.values())
    lines = [f"devtunnel relay {__version__}", f"tunnels online: {len(pools)}", f"agents online: {agents}"]
    for name, pool in pools.items():
        if pool.shared:
            lines.append(f"pool {name}: {len(pool)} agent{'' if len(pool) == 1 else 's'}")
    return "\n".join(lines) + "\n"
