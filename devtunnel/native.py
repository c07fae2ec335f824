"""The modules an install may compile with mypyc, and which of them this one did.

``DEVTUNNEL_USE_MYPYC=1 pip install .`` compiles the modules below to C extensions with mypyc
(``setup.py``; it needs a C compiler and Python's headers). Any other install, ``pip install
-e .`` included, runs them as the Python they are. They behave the same: the tests run against
both (``.ci/run``), and mypyc checks at run time the types that mypy checks here before.

They are the modules every request through the tunnel runs: the protocol's frames and
connection on both sides, the request head's checks, the relay's forwarder, direct path, links
and agent gate, the agent's quick answers, local responses, session and forwarding. A module is
listed only when it compiles and its tests pass compiled; what keeps the others out is in
docs/performance.md.

A listed module never suspends while an exception is being handled: no ``await`` (nor ``async
for``, ``async with`` or ``yield``) inside an ``except`` or ``finally`` block, and ``async with``
only for ``asyncio.timeout``, whose exit never suspends. A compiled coroutine sets the thread's
handled exception itself and does not put it aside while suspended, so every other task then
runs as if inside that handler, and may be left so for good: each exception raised afterwards
takes it as its ``__context__``, where httptools' callback errors carry the exception a parser
callback raised (``HttpParserCallbackError.__context__``), which the relay and the agent read.
Such code handles the exception into a variable and awaits after the handler.
``tests/test_native.py`` reads the sources for it and shows it on the pinned mypyc.
"""

from __future__ import annotations

import importlib.util

__all__ = ["NATIVE_MODULES", "compiled_modules", "describe"]

NATIVE_MODULES = (
    "devtunnel.protocol.frames",
    "devtunnel.protocol.events",
    "devtunnel.protocol.state",
    "devtunnel.protocol.connection",
    "devtunnel.protocol.relay_side",
    "devtunnel.protocol.agent_side",
    "devtunnel.values.request_head",
    "devtunnel.values.terminal",
    "devtunnel.values.exchange_ids",
    "devtunnel.values.http1",
    "devtunnel.values.durations",
    "devtunnel.agent.quick",
    "devtunnel.agent.local_response",
    "devtunnel.agent.stream",
    "devtunnel.relay.link",
    "devtunnel.relay.headers",
    "devtunnel.relay.http_direct",
    "devtunnel.agent.forward",
    "devtunnel.agent.session",
    "devtunnel.agent.local_pool",
    "devtunnel.agent.recording",
    "devtunnel.agent.exchange_log",
    "devtunnel.relay.http_proxy",
    "devtunnel.relay.agents",
    "devtunnel.relay.pool",
    "devtunnel.relay.slots",
    "devtunnel.relay.http_responses",
    "devtunnel.relay.asgi",
)
"""Compiled by ``DEVTUNNEL_USE_MYPYC=1`` (setup.py reads this tuple from this file)."""


def compiled_modules() -> list[str]:
    """Those of ``NATIVE_MODULES`` that this install loads from a compiled extension."""
    out = []
    for name in NATIVE_MODULES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None and not spec.origin.endswith(".py"):
            out.append(name)
    return out


def describe() -> str:
    """For ``--version``: how many of the per-request modules run compiled."""
    n = len(compiled_modules())
    return f"{n} of {len(NATIVE_MODULES)} per-request modules compiled with mypyc" if n else "pure Python"
