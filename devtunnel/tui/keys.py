"""Keys typed ahead go where the keys before them sent the focus.

Textual hands each key to the widget focused when the app reads it, before that widget has
handled the keys before it. Typed fast (``/method:GET`` in one burst, a paste of keys, keys held
down while the screen is busy), ``/`` had not yet focused the filter bar when ``m``, ``e``,
``t``, ``h``, ``o``, ``d`` reached the request table: they marked a request and asked for a diff,
and the filter got nothing (an ``r`` in the burst replayed a request, a ``q`` quit). The same
with ``tab`` between the fields of a form: the text after it landed in the field before.

``TypedAhead`` keeps the keys in order: a key goes on only once the one before has been
handled by the widget it went to and by each of its ancestors it bubbled through (a
callback queued behind it on each of them says so), or after ``WAIT`` seconds whatever
happened to it. A key a priority binding takes (ctrl+c) is handled at once, in its turn.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from textual import events
from textual.dom import DOMNode
from textual.timer import Timer

if TYPE_CHECKING:
    from textual.app import App


class TypedAhead:
    """The app's keys, each sent on once the one before was handled.

    Args:
        app: the app whose keys these are.
        forward: what the app does with a key it reads (``App.on_event``).
    """

    WAIT = 0.5
    """Seconds a key may take before the next goes on anyway (a handler that waits on the app)."""

    def __init__(self, app: App[object], forward: Callable[[events.Key], Awaitable[None]]) -> None:
        self._app = app
        self._forward = forward
        self._waiting: deque[events.Key] = deque()
        self._busy: object | None = None
        """A token for the key being handled (None: none is)."""
        self._timer: Timer | None = None
        self.held = 0
        """How many keys waited for the one before them (what tests count)."""

    async def key(self, event: events.Key) -> None:
        """A key the app read from the terminal."""
        if self._busy is not None:
            self.held += 1
        self._waiting.append(event)
        await self._next()

    async def _next(self) -> None:
        while self._waiting and self._busy is None:
            event = self._waiting.popleft()
            target = self._app.focused or self._app.screen
            await self._forward(event)
            if not event.is_forwarded:
                continue  # a priority binding took it: handled already
            token = self._busy = object()
            self._timer = self._app.set_timer(self.WAIT, lambda token=token: self._done(token))
            self._after([target, *target.ancestors], 0, token)

    def _after(self, chain: Sequence[DOMNode], index: int, token: object) -> None:
        """Wait for ``chain[index]`` to handle what it has queued (the key, bubbled), then the next."""
        while index < len(chain):
            if chain[index].call_later(self._after, chain, index + 1, token):
                return
            index += 1  # closed meanwhile (a screen the key dismissed): nothing more to wait for there
        self._done(token)

    def _done(self, token: object) -> None:
        if self._busy is not token:
            return
        self._busy = None
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
        if self._waiting:
            self._app.call_later(self._next)
