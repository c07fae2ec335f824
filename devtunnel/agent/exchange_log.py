"""The headless agent's log of exchanges: one line per finished exchange, and a second line for a
webhook delivery once the recorder has judged it.

    10:00:00  01M8V2JDA09PA  POST    /webhooks/stripe  200  3.1 ms
    10:00:00  01M8V2JDA09PA  -->     stripe invoice.paid [evt_123]  ✓ signature valid

``devtunnel http --no-tui`` writes these for every request, and for every replay made through the
agent API (its path marked ``↻``); an exchange that is not recorded shows ``not recorded`` where
its id would be. The line is built on the agent's event loop once a request: this module is compiled with the per-request ones
(``devtunnel.native``), and written without format specifications, which compiled code
formats through ``str.format`` at several times the cost. Everything taken from a request is made safe for a terminal
(``values.terminal``) and a very long field is cut (``…``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable, Sequence
from typing import TextIO

from devtunnel.capture.model import Exchange
from devtunnel.capture.marks import path_mark
from devtunnel.capture.verdict import DUPLICATE_MARK, Verdict
from devtunnel.values.durations import human_duration
from devtunnel.values.exchange_ids import STABLE_SHORT, stable_short_id
from devtunnel.values.ngrok_log import record
from devtunnel.values.terminal import escape, is_plain, truncate

__all__ = ["ExchangeLog", "exchange_line", "exchange_record", "line_start", "request_line", "verdict_line", "webhook_line"]

SHOWN = 300
"""Columns of a path shown in a log line at most (cut with "…"; ``devtunnel show ID`` has it all)."""

METHOD_WIDTH = 7
"""The method's column: shorter methods are padded to it, longer ones push the path along."""

NOT_RECORDED = "not recorded".ljust(STABLE_SHORT)
"""What the id column of an exchange that was not recorded (``--no-record``, a tunnel with
``record = false`` or ngrok's ``inspect: false``) says: ``devtunnel show`` would find no id."""

SHOWN_FIELD = 100
"""Columns of a delivery's event type or id shown in a log line at most (``devtunnel show ID`` has it all)."""


@functools.lru_cache(maxsize=4)
def _clock_text(second: int) -> str:
    """``HH:MM:SS`` local time of a second since the epoch (requests arrive many to a second)."""
    return time.strftime("%H:%M:%S", time.localtime(second))


def line_start(started_at: float, exchange_id: str, tunnel: str, tunnel_width: int, recorded: bool = True) -> str:
    """What every log line of an exchange starts with: time, short id (``NOT_RECORDED`` for one
    that is not ``recorded``), and with ``tunnel_width`` (an agent carrying several tunnels) the
    tunnel's name padded to it."""
    start = f"{_clock_text(int(started_at))}  {stable_short_id(exchange_id) if recorded else NOT_RECORDED}  "
    if tunnel_width:
        start += escape(tunnel).ljust(tunnel_width) + "  "
    return start


def exchange_line(ex: Exchange, tunnel_width: int = 0, recorded: bool = True) -> str:
    """One log line for a finished exchange: time, short id, method, path, status, duration
    (and the tunnel's name after the id, ``tunnel_width`` columns, when there are several). A
    replay's path and one a rule at the relay decided carry their mark (``capture.marks.path_mark``);
    one that waited for the app devtunnel runs (``--hold``) ends with how long.

    The id is the fixed-length short form (``stable_short_id``): ``devtunnel show``, ``replay``
    and ``export`` take it as it is, whatever is recorded later. Everything taken from the
    request is made safe for a terminal first, and a very long method or path is cut (``…``).
    An exchange that was not ``recorded`` shows ``NOT_RECORDED`` instead: no command finds it.
    """
    response = ex.response
    url = ex.request.display_url
    if ex.replay_of is not None or ex.rule is not None:  # marked as every listing marks them
        url = path_mark(ex) + url
    line = request_line(line_start(ex.started_at, ex.id, ex.tunnel, tunnel_width, recorded),
                        "WS" if ex.websocket else ex.request.method, url,
                        response.status if response is not None else None, ex.duration, ex.error)
    if ex.held is not None:  # it waited for the app devtunnel runs (--hold): its duration counts the wait
        line += f"  held {human_duration(ex.held)}"
    return line


def request_line(start: str, method: str, url: str, status: int | None, duration: float | None,
                 error: str | None) -> str:
    """``exchange_line`` from its parts (``devtunnel requests --follow`` has rows, not
    exchanges): ``start`` from ``line_start``, then method, target (``display_url``), status
    (None: ``---``), duration and error."""
    if not is_plain(method + url):  # one check for both: the usual method and path need no escape
        method, url = escape(method), escape(url)
    if len(method) + len(url) > SHOWN // 2:  # a client's 60 KB path must not fill the screen
        method, url = truncate(method, 40), truncate(url, SHOWN)
    status_text = str(status) if status is not None else "---"
    if len(method) < METHOD_WIDTH:  # padded as f"{method:<7}" would, without its format call
        method += " " * (METHOD_WIDTH - len(method))
    line = f"{start}{method} {url}  {status_text}  {human_duration(duration)}"
    if error:
        line += f"  {error}"
    return line


def webhook_line(ex: Exchange, tunnel_width: int = 0) -> str:
    """The line that follows a webhook delivery's own once the recorder has judged it: time and
    short id (and tunnel) as on the delivery's line, then provider, event type, delivery id and
    signature::

        10:00:00  01M8V2JDA09PA  -->     stripe invoice.paid [evt_123]  ✓ signature valid
        10:00:01  01M8V2JE3K1QC  -->     github push [72d3162e-...]  ? signature unverified: no secret: set GITHUB_WEBHOOK_SECRET
        10:00:02  01M8V2JF7Q2RD  -->     stripe invoice.paid [evt_123]  ✓ signature valid  ≡ duplicate of 01M8V2JDA09PA

    A delivery whose id was captured before ends with the inspector's mark (``DUPLICATE_MARK``)
    and the first capture's short id. The event type, delivery id and reason come from the
    sender: each is made safe for a terminal, and a very long one is cut (``…``).
    """
    verdict = ex.webhook
    assert verdict is not None, "webhook_line is for a judged delivery"
    return verdict_line(line_start(ex.started_at, ex.id, ex.tunnel, tunnel_width), verdict)


def verdict_line(start: str, verdict: Verdict) -> str:
    """``webhook_line`` from its parts: ``start`` from ``line_start``, then the verdict."""
    event = truncate(escape(verdict.event_type or "?"), SHOWN_FIELD)
    delivery = f" [{truncate(escape(verdict.delivery_id), SHOWN_FIELD)}]" if verdict.delivery_id else ""
    reason = f": {truncate(escape(verdict.reason), SHOWN)}" if verdict.reason else ""
    duplicate = (f"  {DUPLICATE_MARK} duplicate of {escape(stable_short_id(verdict.duplicate_of))}"
                 if verdict.duplicate_of else "")
    return (f"{start}{'-->'.ljust(METHOD_WIDTH)} {escape(verdict.provider)} "
            f"{event}{delivery}  {verdict.mark} signature {verdict.signature.value}{reason}{duplicate}")


def exchange_record(ex: Exchange, fmt: str = "logfmt") -> str:
    """The record of a finished exchange in ngrok's log (``devtunnel http --log``): ngrok's
    ``join connections`` fields (``id``, ``l`` the local service, ``r`` the client), then
    devtunnel's own (``method``, ``path``, ``status``, ``duration_ms``, and ``err``). ngrok writes
    one such record a connection, devtunnel one a request. Every value is escaped by ``record``."""
    status = str(ex.response.status) if ex.response is not None else "-"
    duration = f"{ex.duration * 1000:.1f}" if ex.duration is not None else "-"
    fields = [("obj", "join"), ("id", stable_short_id(ex.id)), ("l", ex.target_url.split("://", 1)[-1]),
              ("r", ex.remote_addr), ("method", "WS" if ex.websocket else ex.request.method),
              ("path", ex.request.url_text), ("status", status), ("duration_ms", duration)]
    if ex.error:
        fields.append(("err", ex.error))
    return record("join connections", fields, fmt=fmt, now=ex.started_at)


class ExchangeLog:
    """Writes one line per finished exchange, flushing at most every ``FLUSH_AFTER`` seconds.

    A flush per line costs a system call per request under load; lines still reach a pipe
    within a fraction of a second.

    A webhook delivery gets a second line (``webhook_line``) once the recorder's thread has
    judged it: ``verdicts`` is called back on the loop, for deliveries only, so the line of a
    request waits for nothing and traffic that is no webhook costs the loop nothing more.
    """

    FLUSH_AFTER = 0.05

    def __init__(self, out: TextIO, tunnels: Sequence[str] = (), ngrok_format: str | None = None,
                 recorded: Callable[[Exchange], bool] | None = None) -> None:
        """``ngrok_format`` (``logfmt`` or ``json``): each exchange's line is its ngrok record
        (``exchange_record``) and a delivery gets no second line. ``recorded`` tells whether an
        exchange is recorded (``AgentService.records``; None: every one is): the line of one that
        is not shows no id, which no command would find."""
        self.out = out
        self._ngrok_format = ngrok_format
        self._recorded = recorded
        # Several tunnels (``devtunnel up``): each line names its tunnel, in a column as wide as
        # the longest name. One tunnel: its name is in the Forwarding line already.
        self._tunnel_width = max(len(escape(name)) for name in tunnels) if len(tunnels) > 1 else 0
        self._lines: list[str] = []
        self._flush: asyncio.TimerHandle | None = None

    def __call__(self, exchange: Exchange) -> None:
        # Kept here, not written: an unbuffered stdout (a terminal, PYTHONUNBUFFERED) would
        # otherwise cost one write() per request.
        if self._ngrok_format is None:
            recorded = self._recorded is None or self._recorded(exchange)
            self._lines.append(exchange_line(exchange, self._tunnel_width, recorded))
        else:
            self._lines.append(exchange_record(exchange, self._ngrok_format))
        if self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)

    def verdicts(self, exchanges: list[Exchange]) -> None:
        """Keep a line for each delivery the recorder has judged (on the loop)."""
        for exchange in exchanges:  # a replay made through the API has its line too (``AgentService.tell_exchange``)
            self._lines.append(webhook_line(exchange, self._tunnel_width))
        if self._lines and self._flush is None:
            self._flush = asyncio.get_running_loop().call_later(self.FLUSH_AFTER, self.flush)

    def verdicts_from(self, loop: asyncio.AbstractEventLoop) -> Callable[[list[Exchange]], None]:
        """A listener for ``Recorder.subscribe_verdicts``: called on the recorder's thread, it
        hands the deliveries to ``verdicts`` on ``loop``."""

        def listener(exchanges: list[Exchange]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the agent is gone
                loop.call_soon_threadsafe(self.verdicts, exchanges)

        return listener

    def flush(self) -> None:
        """Write the lines kept so far (also called once on the way out)."""
        if self._flush is not None:
            self._flush.cancel()
            self._flush = None
        if self._lines:
            self.out.write("\n".join(self._lines) + "\n")
            self._lines.clear()
        self.out.flush()
