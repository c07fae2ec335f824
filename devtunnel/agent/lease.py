"""The local connection one forwarded request holds, and a copy of its body to send it again.

A ``Lease`` is a request's local connection and the task copying its body; a ``BodyCopy`` keeps
a small body (``RESEND_BODY_LIMIT``) as written, so that a request the local service dropped
unread (a reset keep-alive connection, an app going down under ``--hold``) can be sent again
whole. ``Forwarder`` (forward.py) decides when.
"""

from __future__ import annotations

import asyncio

from devtunnel.agent.local_pool import LocalConnection, LocalPool

__all__ = ["RESEND_BODY_LIMIT", "UNSENT_BODY_WAIT", "BodyCopy", "Lease", "whole_body"]

UNSENT_BODY_WAIT = 2.0  # seconds to keep reading a body the local service could not take

RESEND_BODY_LIMIT = 64 * 1024
"""Bytes of a request body kept while it is sent, when the request may have to be sent again (see
``Forwarder._forward``); a longer body is not kept, and such a request is not sent again."""


class BodyCopy:
    """A request body as written to the local connection (framing included), kept to send it again."""

    __slots__ = ("data", "whole", "cut")

    def __init__(self) -> None:
        self.data: bytearray | None = bytearray()
        """None once the body outgrew ``RESEND_BODY_LIMIT``."""
        self.whole = False
        """The body ended; every byte of it was acknowledged to the relay."""
        self.cut = False
        """The connection broke: the rest of the body only goes into the copy."""

    def add(self, parts: tuple[bytes, ...]) -> None:
        data = self.data
        if data is None:
            return
        if len(data) + sum(map(len, parts)) > RESEND_BODY_LIMIT:
            self.data = None
            return
        for part in parts:
            data += part

    async def send(self, conn: LocalConnection, parts: tuple[bytes, ...]) -> None:
        """Write ``parts`` unless the connection broke; the body goes on into the copy if it still fits.

        Raises:
            ConnectionResetError: the connection broke and the body is too long to be kept.
        """
        if not self.cut and conn.at_eof:
            self.cut = True
        if not self.cut:
            if parts:
                conn.writelines(parts)
            try:
                await conn.drain()
            except OSError:
                self.cut = True
        if self.cut and self.data is None:
            raise ConnectionResetError("the local service closed the connection")


class Lease:
    """The local connection one request uses, and the task copying its request body."""

    __slots__ = ("pool", "conn", "body_task", "body_cut")

    def __init__(self, pool: LocalPool, conn: LocalConnection | None) -> None:
        self.pool = pool
        self.conn = conn
        self.body_task: asyncio.Task[float] | None = None
        self.body_cut = False
        """The response ended before the whole request body was sent (or its sending failed)."""

    def release(self, reusable: bool) -> None:
        """Give the connection back to the pool if ``reusable`` and the request was sent whole,
        else close it. Later calls do nothing."""
        conn, self.conn = self.conn, None
        task, self.body_task = self.body_task, None
        if task is not None:
            if not task.done():
                task.cancel()
                self.body_cut = True
                reusable = False
            elif task.cancelled() or task.exception() is not None:
                reusable = False
                self.body_cut = True  # (a write failed: the service closed the connection on the body)
        if conn is None:
            return
        if reusable:
            self.pool.give_back(conn)
        else:
            conn.abort()


async def whole_body(lease: Lease, copy: BodyCopy) -> bytes | None:
    """The request body kept in ``copy`` once it was read whole from the relay (waiting for its
    end for a bounded time), or None if it is too long or did not end in time."""
    task = lease.body_task
    if task is not None and not task.done():
        await asyncio.wait([task], timeout=UNSENT_BODY_WAIT)
    if task is None or not task.done() or task.cancelled() or task.exception() is not None:
        return None
    return bytes(copy.data) if copy.whole and copy.data is not None else None


