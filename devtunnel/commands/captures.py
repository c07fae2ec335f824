"""``devtunnel requests | show | export | replay | diff``: the capture store from the command line.

Every command reads the same SQLite store (``--db``, default ``values.paths.db_path()``), read-only
where it only reads. Captured text is escaped before it reaches the terminal. Bad input (an
unknown id, an unreadable database, an unwritable file) is one line on stderr and exit 1; bad
usage (a bad filter or flag value, a filter regex that took too long) exits 2. ``diff`` exits 2 for both, as its 1 means
"different" as in diff(1).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import stat
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from devtunnel.capture.bodies import pretty_json, readable_body
from devtunnel.capture.diff import diff_exchanges, render_unified
from devtunnel.capture.filters import And, Not, excerpt, leaves, parse
from devtunnel.capture.filters.fields import Replay
from devtunnel.capture.filters.webhook import DeliveryId
from devtunnel.capture.edit import Edit, check_header
from devtunnel.capture.jsonpath import parse_assignment
from devtunnel.capture.model import Exchange, Request, Response, held_json, held_text
from devtunnel.capture.marks import path_mark
from devtunnel.capture.outcome import replay_outcome, status_line, uncounted_headers
from devtunnel.capture.rows import Row
from devtunnel.capture.verdict import DUPLICATE_MARK, Signature, Verdict
from devtunnel.capture.store import Store, path_mode
from devtunnel.commands.config import settings_of, store_path
from devtunnel.commands.output import (
    Column,
    err,
    hex_preview,
    human_duration,
    safe,
    table,
    utf8_output,
)
from devtunnel.config import webhook_context
from devtunnel.errors import (
    ConfigError,
    DevtunnelError,
    EditError,
    ExportError,
    FilterSyntaxError,
    FilterTimeoutError,
    NotFoundError,
    ReplayError,
    StoreError,
)
from devtunnel.exit_codes import EXIT_DIFF_ERROR, EXIT_ERROR, EXIT_OK, EXIT_USAGE
from devtunnel.export import BY_START_TIME, EXPORTERS, PIECES, options_of
from devtunnel.export.base import base_url_parts
from devtunnel.export.agent_json import capture_json
from devtunnel.agent.exchange_log import line_start, request_line, verdict_line
from devtunnel.agent.hold import CONNECT_TIMEOUT, RETRY_INTERVAL, still_down, still_refused, target_listens
from devtunnel.commands.agent_api import agent_tunnels, candidates, no_agent, places_text
from devtunnel.replay import destination, not_recorded, once_per_delivery, replay_many
from devtunnel.values.exchange_ids import id_time, time_prefix
from devtunnel.values.sizes import format_size
from devtunnel.values.app_state import app_state_words
from devtunnel.values.terminal import escape, quoted, unescape
from devtunnel.values.urls import is_localhost_name, origin
from devtunnel.webhooks import expired_signature
from devtunnel.webhooks.resign import unknown_provider
from devtunnel.webhooks.context import WebhookContext

__all__ = ["run"]


def _db_path(args: argparse.Namespace) -> Path:
    return store_path(args)  # --db, else store.path from DEVTUNNEL_DB, devtunnel.toml or the default


def _open(args: argparse.Namespace, *, readonly: bool = True) -> Store:
    path = _db_path(args)
    if path_mode(path) is None:
        raise StoreError(f"no captures yet at {path}")
    if readonly:
        return Store(path, readonly=True)
    # A write applies retention: with the configured limits, as the agent does, so a replay
    # from here never trims a store the user allowed to grow past the defaults.
    limits = settings_of(args).store
    return Store(path, max_exchanges=limits.max_exchanges, max_bytes=limits.max_bytes)


def _filter(expression: str) -> Any:
    try:
        return parse(expression)
    except FilterSyntaxError as exc:
        # The column counts in the whole expression; the quote is the part around it.
        raise ConfigError(f"invalid filter {quoted(excerpt(expression, exc.position))}: {exc}") from exc


def _get(store: Store, ident: str) -> Exchange:
    """The exchange ``ident`` names (an id, or a unique prefix of one), or the one capture of the
    webhook delivery id ``ident`` (``evt_...`` from the delivery line, a GitHub delivery GUID:
    ``stripe events resend evt_...``), replays of it left out. A delivery id captured more than
    once is said to be one, with the ids of its captures."""
    try:
        return store.get(ident)
    except NotFoundError:
        rows = store.rows(DeliveryId(ident), limit=4) if ident else []
        if not rows:
            raise
        originals = store.rows(And([DeliveryId(ident), Not(Replay())]), limit=2)
        if len(originals) == 1:
            return store.get(originals[0].id)
    shown = store.short_ids([row.id for row in rows[:3]])
    ids = ", ".join(shown[row.id] for row in rows[:3]) + (" ..." if len(rows) > 3 else "")
    raise NotFoundError(f"{quoted(ident)} is not an exchange id but a webhook delivery id, captured as {ids} "
                        f"(devtunnel requests --filter delivery:{ident} lists its captures)")


REPLAY_UNASKED = 100
"""The most matches ``replay --filter`` sends without ``--limit``: past it, it sends nothing and
says how many match (a filter such as ``status:500`` on a big store matches thousands)."""


def _resolve(store: Store, ids: list[str], expression: str, limit: int = 0, *,
             most: int | None = None, originals: bool = False) -> list[Exchange]:
    """The exchanges named by ``ids`` (unique prefixes allowed) or the newest ``limit`` matching
    ``expression`` (every one when 0), oldest first.

    Args:
        most: with ``--filter`` and no ``--limit``, refuse when more than this many match
            (``replay``: each match is sent again).
        originals: leave replays out of what ``expression`` matches, unless it names them
            (``replay``: sending the replays of a delivery beside it sent it once for each).
    """
    _check_selection(ids, expression, limit)
    if ids:
        found = {ex.id: ex for ex in (_get(store, i) for i in ids)}
        return [found[k] for k in sorted(found)]
    if expression:
        flt = _filter(expression)
        if originals and not any(isinstance(leaf, Replay) for leaf in leaves(flt)):
            flt = And([flt, Not(Replay())])
        if not limit and most is not None:
            # Light rows, at most one past the bound: the store is not read through to count.
            if len(store.rows(flt, limit=most + 1)) > most:
                count = store.count(flt)
                raise ConfigError(f"{count} exchanges match {quoted(expression)}, more than {most}: give --limit N "
                                  "for the newest N, or --limit 0 to send every one")
        exchanges = store.query(flt, limit=limit or None, newest_first=bool(limit))
        if not exchanges:
            also = " but replays, left out (add replay to the filter to send them)" if (
                originals and isinstance(flt, And) and store.rows(_filter(expression), limit=1)) else ""
            raise NotFoundError(f"no exchange matches {quoted(expression)}{also}")
        return exchanges[::-1] if limit else exchanges
    raise AssertionError("checked by _check_selection")


def _check_selection(ids: list[str], expression: str, limit: int) -> None:
    """Refuse (bad usage) what names no exchanges: ids and ``--filter`` both or neither, a
    ``--limit`` with ids or below 0."""
    if limit < 0:
        raise ConfigError("--limit must be 0 (all) or more")
    if ids and expression:
        raise ConfigError("give exchange ids or --filter, not both")
    if ids and limit:
        raise ConfigError("--limit applies to --filter; give the ids to use, or --filter EXPR --limit N")
    if not ids and not expression:
        raise ConfigError("give one or more exchange ids, or --filter EXPR")


# requests ------------------------------------------------------------------------------


def _row_summary(row: Row) -> dict[str, Any]:
    """The same keys as ``Exchange.summary()``, from a light row."""
    return {
        "id": row.id,
        "tunnel": row.tunnel,
        "started_at": row.started_at,
        "method": row.method,
        "path": row.target,
        "host": row.host,
        "status": row.status,
        "duration_ms": None if row.duration is None else round(row.duration * 1000, 3),
        "size": row.size,
        "error": row.error,
        "replay_of": row.replay_of,
        "edited": row.edited,
        "resigned": row.resigned,
        "websocket": row.websocket,
        "webhook": None if row.webhook is None else row.webhook.to_json(),
        "rule": None if row.rule is None else row.rule.to_json(),
        **held_json(row.held, row.holding),
    }


def _status_cell(row: Row) -> str:
    if row.error:
        kind = row.error.removeprefix("local_")
        return f"ERR {kind}" if row.status is None else f"{row.status} ERR"
    if row.status is None:
        if row.holding:
            return "held"  # waits for the app devtunnel runs to come back (--hold)
        return "…" if row.duration is None else "-"
    return f"{row.status} ws" if row.websocket else str(row.status)


_REQUEST_COLUMNS = [
    Column("ID"),
    Column("TIME", optional=3),
    Column("TUNNEL", optional=1),
    # A method and an event type can be as long as their sender likes (an edited replay's
    # method; the event type comes from a delivery's body): they are cut, as the inspector cuts them.
    Column("METHOD", max_width=16),  # VERSION-CONTROL and BASELINE-CONTROL whole
    Column("STATUS"),
    Column("DURATION", align=">"),
    Column("SIZE", align=">", optional=2),
    # A delivery's signature mark and event type say more than the end of its path: the path is
    # cut first, then the event type (to "✓ stripe payment_intent…"), and EVENT goes last of all.
    Column("EVENT", flexible=True, min_width=24, optional=4, max_width=40),
    Column("PATH", flexible=True),
]
"""The columns of ``requests``; EVENT only when a listed request is a webhook delivery."""


def event_cell(verdict: Verdict | None, note: str = "") -> str:
    """``✓ stripe invoice.paid`` (``≡`` after the mark for a duplicate delivery, ``note`` after
    them): the inspector's EVENT column as text; ``""`` for a request that is no webhook delivery."""
    if verdict is None:
        return ""
    duplicate = DUPLICATE_MARK if verdict.duplicate_of else ""
    return f"{verdict.mark}{duplicate}{note} {verdict.provider} {verdict.event_type or '?'}"


def _webhook_lines(verdict: Verdict, now: Verdict | None = None) -> list[str]:
    """``show``'s lines for a webhook delivery: provider, event and delivery id, signature, duplicate.

    ``now``: the signature judged again with the secrets known now (``judged_now``), shown instead
    of the one recorded, which the line still names."""
    delivery = f"  (delivery {safe(verdict.delivery_id)})" if verdict.delivery_id else ""
    judged = verdict if now is None else now
    signature = f"{judged.mark} {judged.signature.value}" + (f": {safe(judged.reason)}" if judged.reason else "")
    if now is not None:
        signature += f"  (judged now; {verdict.signature.value} when captured, before {safe(verdict.missing_secret)} was set)"
    lines = [f"webhook   {safe(verdict.provider)} {safe(verdict.event_type or '?')}{delivery}",
             f"signature {signature}"]
    if verdict.duplicate_of:
        lines.append(f"duplicate {DUPLICATE_MARK} of {safe(verdict.duplicate_of)}  (the first capture of this delivery id)")
    return lines


def judged_now(exchange: Exchange, context: WebhookContext) -> Verdict | None:
    """The verdict on ``exchange`` with the secrets known now, when it was recorded unverified for
    want of a secret and one is known now (the user set the variable after the capture); else None.

    Judged as the recorder judges (``WebhookContext.judge``, the timestamp's age at the time the
    delivery came): what the agent would have said had the secret been set."""
    recorded = exchange.webhook
    if recorded is None or not recorded.missing_secret or not exchange.complete:
        return None
    verdict = context.judge(exchange)
    if verdict is None or verdict.signature is Signature.UNVERIFIED:
        return None
    return replace(verdict, duplicate_of=recorded.duplicate_of)


_PAGE = 1000
"""Rows ``requests --json --limit 0`` reads and prints at a time."""


def _newest_rows(store: Store, flt: Any, limit: int | None) -> list[Row]:
    """The newest ``limit`` rows matching ``flt`` (every one when None), oldest first like a log."""
    rows = store.rows(flt, limit=limit, newest_first=True)
    rows.reverse()
    return rows


def _all_rows(store: Store, flt: Any) -> Iterator[Row]:
    """Every row matching ``flt``, oldest first, read a page at a time (keyset paging: a million
    of them are never all in memory). Those stored after the first page was read are left out,
    as a single read would have."""
    newest = store.rows(flt, limit=1, newest_first=True)
    after: str | None = None
    while newest:
        page = store.rows_after(flt, after, limit=_PAGE)
        for row in page:
            if row.id > newest[0].id:
                return
            yield row
        if len(page) < _PAGE:
            return
        after = page[-1].id


def _print_json(rows: Iterable[Row]) -> None:
    """``json.dumps(list, indent=2)`` of the rows' summaries, written one summary at a time: the
    list and its text were built whole (3.9 GB for a million rows)."""
    opening = "["
    for row in rows:
        # JSON strings hold no newline: indenting every line of an element is what indent=2 does.
        sys.stdout.write(opening + "\n  " + json.dumps(_row_summary(row), indent=2).replace("\n", "\n  "))
        opening = ","
    print("[]" if opening == "[" else "\n]")


def _requests(args: argparse.Namespace) -> int:
    flt = _filter(args.filter)
    if args.limit is None:
        args.limit = _FOLLOW_FIRST if args.follow else 50
    if args.limit < 0:
        raise ConfigError("--limit must be 0 (all) or more")
    path = _db_path(args)
    if args.follow:
        return _follow(args, flt, path)
    if path_mode(path) is None:
        # Nothing captured yet is an empty list, as with an empty database, not an error: a
        # script reading --json on a fresh machine gets [] and exit 0.
        print("[]" if args.json else f"no requests captured yet (no capture database at {safe(str(path))})")
        return 0
    store = _open(args)
    if args.json:
        if not args.limit:
            _print_json(_all_rows(store, flt))
            return 0
        rows, matching = _listed_rows(store, flt, args.limit)
        _print_json(rows)
        _say_more(args, len(rows), matching)  # (on stderr: stdout stays the JSON list alone)
        return 0
    rows, matching = _listed_rows(store, flt, args.limit) if args.limit else (_newest_rows(store, flt, None), None)
    if not rows:
        print("no matching requests" if args.filter else "no requests captured yet")
        return 0
    short = store.short_ids(r.id for r in rows)  # what show, export, replay and diff take
    now = _judged_now_rows(store, rows, args)
    cells = [
        [
            short[r.id],
            datetime.fromtimestamp(r.started_at).strftime("%H:%M:%S"),
            r.tunnel,
            r.method,
            _status_cell(r),
            human_duration(r.duration),
            format_size(r.size),
            event_cell(now[r.id], JUDGED_NOW_MARK) if r.id in now else event_cell(r.webhook),
            path_mark(r) + r.display_target,
        ]
        for r in rows
    ]
    columns = _REQUEST_COLUMNS
    if not any(r.webhook for r in rows):
        columns = [c for c in columns if c.title != "EVENT"]
        cells = [row[:-2] + row[-1:] for row in cells]
    for line in table(columns, cells):
        print(line)
    if now:
        variables = ", ".join(sorted({r.webhook.missing_secret for r in rows if r.id in now and r.webhook is not None}))
        print(f"{JUDGED_NOW_MARK} judged now: unverified when captured, before {safe(variables)} was set (devtunnel show ID)")
    _say_more(args, len(rows), matching)
    return 0


def _listed_rows(store: Store, flt: Any, limit: int) -> tuple[list[Row], int | None]:
    """The newest ``limit`` rows matching ``flt``, oldest first, and how many match in all when
    that is more than ``limit`` (None when every match is there): counted only then, in the same
    view of the store as the rows."""
    with store.together():
        rows = store.rows(flt, limit=limit + 1, newest_first=True)  # one past: are there more?
        matching = store.count(flt) if len(rows) > limit else None
    del rows[limit:]
    rows.reverse()
    return rows, matching


def _say_more(args: argparse.Namespace, shown: int, matching: int | None) -> None:
    """One line on stderr when ``requests`` left older matches out (``--limit``, 50 unless given),
    as ``replay --filter`` says it: how many it shows of how many, and how to see them."""
    if matching is None or matching <= shown:
        return
    what = "matching requests" if args.filter else "requests"
    err(f"showing the newest {shown} of {matching} {what}: --limit N (-n N) shows more, --limit 0 all of them")


JUDGED_NOW_MARK = "*"
"""After the signature mark of ``requests``: the delivery was judged again with a secret set since."""


def _judged_now_rows(store: Store, rows: list[Row], args: argparse.Namespace) -> dict[str, Verdict]:
    """``judged_now`` of the listed deliveries recorded unverified for want of a secret that is
    known now, by id: only those are read whole."""
    wanting = [(r, r.webhook.provider) for r in rows if r.webhook is not None and r.webhook.missing_secret]
    if not wanting:
        return {}
    context = webhook_context(settings_of(args))
    now: dict[str, Verdict] = {}
    for row, provider in wanting:
        if not context.for_tunnel(row.tunnel).secrets.get(provider):
            continue
        try:
            exchange = store.get(row.id)
        except NotFoundError:  # deleted since it was listed
            continue
        if (verdict := judged_now(exchange, context)) is not None:
            now[row.id] = verdict
    return now


_FOLLOW_FIRST = 10
"""Requests ``requests --follow`` prints before it follows, unless ``--limit`` says (as ``tail -f``)."""

FOLLOW_EVERY = 0.25
"""Seconds between two looks at the store while following."""

FOLLOW_BACK = 5.0
"""Seconds of start times read again on each look, before the newest exchange seen.

The store is keyed by id, which is the start time: an exchange is written when it ends, so one
that began before the newest seen can still arrive. Any exchange that runs longer than the
agent's ``LIVE_AFTER`` (half a second) is written once as it is then, and is then followed by
id until it ends; what arrives later, and earlier than this, was held up longer than any
writer's batch. A replay from another process (``devtunnel replay``) is written when it ends:
one that took longer than this, while newer requests were seen, is not printed."""


def _line(row: Row, tunnel_width: int) -> list[str]:
    """What ``devtunnel http --no-tui`` prints for this exchange: its line, and a delivery's verdict."""
    start = line_start(row.started_at, row.id, row.tunnel, tunnel_width)
    lines = [request_line(start, "WS" if row.websocket else row.method, path_mark(row) + row.display_target,
                          row.status, row.duration, row.error)]
    if row.webhook is not None:
        lines.append(verdict_line(start, row.webhook))
    return lines


class _Follower:
    """Finds the exchanges of a store that ended since the last look, each once.

    Every look reads the rows whose id (its start time) is at most ``FOLLOW_BACK`` seconds
    older than the newest id seen (an index range: the rows of those seconds), and the rows
    seen running, by id. A row ends when it has a duration; ``matching_rows`` then says whether
    it matches the filter, which may only come true as it ends (``status:>=400``). Nothing is
    read while SQLite's change number stays put, but the store is looked at anyway every
    ``_FOLLOW_ANYWAY`` seconds (a store replaced under the reader starts its number again).
    """

    def __init__(self, store: Store, flt: Any) -> None:
        self.store = store
        self.flt = flt
        self.running: set[str] = set()
        """Ids seen without a duration yet."""
        self.seen: set[str] = set()
        """Ids of ended rows already looked at (shown or not) that a look may read again."""
        self.newest = time.time()
        """The start of the newest id seen (now, before any)."""
        self.version: int | None = None
        self.read_at = 0.0

    def window(self, back: float = FOLLOW_BACK) -> str:
        """The ids a look reads again begin at this prefix."""
        return time_prefix(self.newest - back)

    def look(self, report: bool = True) -> list[Row]:
        """The rows that ended since the last look and match the filter, oldest first (none
        reported with ``report`` False: the first look takes the store as it is)."""
        _, version = self.store.look()
        now = time.monotonic()
        if version == self.version and now - self.read_at < _FOLLOW_ANYWAY:
            return []
        self.version, self.read_at = version, now
        ended: list[str] = []

        def saw(row: Row) -> None:
            if row.duration is None:
                self.running.add(row.id)
            elif row.id not in self.seen:
                self.seen.add(row.id)
                self.running.discard(row.id)
                ended.append(row.id)

        after: str | None = self.window()
        while True:
            page = self.store.rows_after(None, after, limit=_PAGE)
            for row in page:
                saw(row)
            if len(page) < _PAGE:
                break
            after = page[-1].id
        if page:
            self.newest = max(self.newest, id_time(page[-1].id) or 0.0)
        earlier = sorted(self.running.difference(ended))
        if earlier:
            rows = self.store.rows_by_id(earlier)
            self.running.difference_update(set(earlier) - {row.id for row in rows})  # deleted while running
            for row in rows:
                saw(row)
        forgotten = self.window(2 * FOLLOW_BACK)
        self.seen = {ident for ident in self.seen if ident >= forgotten}
        if not report or not ended:
            return []
        return self.store.matching_rows(ended, self.flt)


_FOLLOW_ANYWAY = 2.0
"""Seconds after which ``requests --follow`` reads the store even though its change number did not move."""


def _follow(args: argparse.Namespace, flt: Any, path: Path) -> int:
    """``requests --follow``: the newest ``--limit`` requests that ended (0: all), then each one
    as it ends, until Ctrl-C. A store that does not exist yet is waited for."""
    try:
        if path_mode(path) is None:
            err(f"waiting for captures (no capture database at {safe(str(path))} yet)")
            while path_mode(path) is None:
                time.sleep(FOLLOW_EVERY)
        store = _open(args)
        width = 0

        follower = _Follower(store, flt)

        def put(rows: Iterable[Row]) -> None:
            nonlocal width
            for row in rows:
                if row.id >= follower.window(2 * FOLLOW_BACK):
                    follower.seen.add(row.id)  # shown once, whichever look finds it
                if args.json:
                    sys.stdout.write(json.dumps(_row_summary(row)) + "\n")
                else:
                    width = max(width, len(escape(row.tunnel)))
                    sys.stdout.write("".join(line + "\n" for line in _line(row, width)))
            sys.stdout.flush()

        follower.look(report=False)  # what has ended is not new; what runs is followed
        put(row for row in (_all_rows(store, flt) if not args.limit else _newest_rows(store, flt, args.limit))
            if row.duration is not None and row.id not in follower.running)
        while True:
            time.sleep(FOLLOW_EVERY)
            put(follower.look())
    except KeyboardInterrupt:
        return 0


# show ----------------------------------------------------------------------------------

_PREVIEW_BYTES = 64


def _body_lines(message: Request | Response) -> list[str]:
    if not message.body and not message.body_size:
        return []
    cut = ""
    if message.body_truncated:
        why = message.body_cut_why
        cut = f" (first {format_size(len(message.body))} of {format_size(message.body_size)} recorded{'; ' + why if why else ''})"
    # Decoded and judged as the inspector shows it; its notes are our words, not captured text.
    body = readable_body(message)
    notes = [f"[{note}]" for note in body.notes]
    if body.kind != "binary":
        text = body.data.decode("utf-8")
        # A broken JSON body is shown as sent: it is worth seeing as it is.
        text = (pretty_json(text) or text) if body.kind == "json" else text
        # CRLF line ends are ordinary in bodies; a lone CR is shown, as it could overwrite a line.
        lines = [safe(line.removesuffix("\r"), keep_newlines=True) for line in text.split("\n")]
        return ["", *notes, *lines, *([f"[body cut{cut}]"] if cut else [])]
    head = f"[binary body, {body.size} bytes{cut}; first {min(_PREVIEW_BYTES, len(body.data))} bytes:]"
    return ["", *notes, head, *hex_preview(body.data, _PREVIEW_BYTES)]


def _header_lines(message: Request | Response) -> list[str]:
    return [f"{safe(n)}: {safe(v)}" for n, v in message.headers.display_items()]


def _request_lines(req: Request) -> list[str]:
    return [f"{safe(req.method)} {safe(req.display_url)} HTTP/{safe(req.http_version)}", *_header_lines(req), *_body_lines(req)]


def _response_lines(resp: Response) -> list[str]:
    return [f"HTTP/{safe(resp.http_version)} {safe(status_line(resp))}", *_header_lines(resp), *_body_lines(resp)]


def _show_text(ex: Exchange, replays: list[Row], now: Verdict | None = None) -> list[str]:
    started = datetime.fromtimestamp(ex.started_at).astimezone().isoformat(sep=" ", timespec="milliseconds")
    # Ids and error kinds are read from the database, a file anyone may have written: escaped.
    lines = [f"exchange  {safe(ex.id)}", f"tunnel    {safe(ex.tunnel)}", f"started   {started}"]
    if ex.remote_addr:
        lines.append(f"from      {safe(ex.remote_addr)}")
    if ex.target_url:
        lines.append(f"target    {safe(ex.target_url)}")
    timing = f"total {human_duration(ex.duration)}" if ex.complete else "in flight"
    if ex.ttfb is not None:
        timing = f"first byte {human_duration(ex.ttfb)}, {timing}"
    if ex.held is not None:
        timing += f"; held {held_text(ex)}"
    lines.append(f"timing    {timing}")
    if ex.replay_of:
        kind = "edited replay of" if ex.edited else "replay of"
        lines.append(f"{kind} {safe(ex.replay_of)}  (devtunnel diff {safe(ex.replay_of)} {safe(ex.id)})")
        if ex.resigned:
            lines.append(f"signature re-signed ({safe(ex.resigned)})")
    for r in replays:
        lines.append(f"replayed  {safe(r.id)}  {safe(_status_cell(r))}")
    if ex.error:
        lines.append(f"error     {safe(ex.error)}: {safe(ex.error_message)}")
    if ex.rule is not None:
        lines.append(f"rule      {safe(ex.rule.label())} (at the relay)")
    if ex.webhook is not None:
        lines += _webhook_lines(ex.webhook, now)
    lines += ["", "── request " + "─" * 40, *_request_lines(ex.request)]
    if ex.response is not None:
        lines += ["", "── response " + "─" * 39, *_response_lines(ex.response)]
    if ex.websocket:
        lines += ["", f"── websocket: {len(ex.ws_messages)} messages, close code {ex.ws_close_code} " + "─" * 10]
        for m in ex.ws_messages:
            arrow = "→" if m.sender == "client" else "←"
            when = datetime.fromtimestamp(m.time).strftime("%H:%M:%S.%f")[:-3]
            if m.opcode == 1:
                preview = safe(m.payload.decode("utf-8", "replace"))
            else:
                preview = "binary " + m.payload[:32].hex(" ")
            if m.size > len(m.payload):  # past the body cap (or the budget): the record has its size, not all of it
                why = m.cut_why
                preview += f"  (recorded {len(m.payload)} of {m.size} bytes{'; ' + why if why else ''})"
            lines.append(f"{when} {arrow} {format_size(m.size):>8}  {preview}")
    return lines


def _show(args: argparse.Namespace) -> int:
    store = _open(args)
    ex = _get(store, args.id)
    if args.json:
        print(json.dumps(capture_json(ex), indent=2))
        return 0
    replays = store.rows(Replay(of=ex.id))  # not every replay's row, to keep this one's
    now = judged_now(ex, webhook_context(settings_of(args))) if ex.webhook is not None else None
    print("\n".join(_show_text(ex, replays, now)))
    return 0


# export --------------------------------------------------------------------------------


@contextmanager
def _whole(path: Path) -> Iterator[IO[bytes]]:
    """The file to write ``path`` through, whole or not at all: PATH.part, renamed PATH once the
    block ends without an error. A failure (a full disk) leaves a file that was there as it was;
    a file replaced keeps its permissions (an export of credentials into a file made 0600).

    Raises:
        ExportError: a write failed, naming ``path`` and why.
    """
    # A link (-o ~/bin/upload.sh -> ~/scripts/upload.sh) is written through, not replaced.
    target = Path(os.path.realpath(path))
    part = target.with_name(target.name + ".part")
    try:
        try:
            mode: int | None = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = None
        with part.open("wb") as file:
            if mode is not None:
                os.fchmod(file.fileno(), mode)
            yield file
        part.replace(target)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    finally:
        part.unlink(missing_ok=True)


def _write_new(path: Path, data: bytes) -> bool:
    """Write the side file ``path``, never over a file that is there: True when written, False
    when one holding exactly ``data`` is there already (an earlier export of the same exchange).

    Raises:
        ExportError: a file of that name holds other bytes (it is left as it was).
    """
    try:
        file = path.open("xb")
    except FileExistsError:
        if _holds(path, data):
            return False
        raise _taken(path) from None
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    try:
        with file:
            file.write(data)
    except OSError as exc:
        path.unlink(missing_ok=True)  # made here: what it holds would pass for the whole body
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from exc
    return True


def _taken(path: Path) -> ExportError:
    """The error for a side file whose name a file of other bytes holds."""
    return ExportError(f"refusing to replace {path.absolute()}: a file of that name is there; move it away and "
                       "export again, or export with -o FILE to put the side files next to FILE")


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` is a file of exactly the bytes ``data``."""
    try:
        return path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _side_file(folder: Path, name: str) -> Path:
    """Where a side file goes: its name is the path the text spells, which must lie in ``folder``."""
    path = Path(name)
    if folder.resolve() not in path.resolve().parents:
        raise ExportError(f"refusing to write a side file outside {folder}: {quoted(name)}")
    return path


def _destination_options(format: str, to: str | None) -> dict[str, object]:
    """The exporter options ``--to URL`` or ``--to local`` stands for."""
    if to is None:
        return {}
    if "base_url" not in options_of(format):
        raise ConfigError(f"--to applies to curl, httpie and har; the {format} format names no URL")
    if to == "local":
        return {"local": True}
    try:
        base_url_parts(to)
    except ExportError as exc:
        raise ConfigError(f"--to: {exc}") from None
    return {"base_url": to}


def _for_terminal(text: str) -> str:
    """Raw HTTP text made safe to show: CRLF line ends as newlines, a lone CR and other controls escaped."""
    return "\n".join(safe(line, keep_newlines=True) for line in text.split("\r\n"))


class _SignatureNotices:
    """Which exported deliveries carry a captured signature their receiver now refuses for its
    timestamp's age alone (``webhooks.expired_signature``): an export sends it as captured, so
    the command says so on stderr, once per delivery (a few, then how many more), with the
    replay that signs afresh. A pytest module signs afresh at run time, but only by schemes
    known here: a custom provider's delivery that no devtunnel.toml here describes is said
    (``resign.unknown_provider``, as a replay says it). Nothing for a redacted export (its
    signatures are placeholders)."""

    SHOWN = 3

    def __init__(self, args: argparse.Namespace, context: WebhookContext) -> None:
        self.pytest = args.format == "pytest"
        self.context = None if args.redact else context
        self.now = time.time()
        self.found: list[tuple[str, str, bool]] = []
        """The first ``SHOWN``: (exchange id, what to say, whether to point at the replay that signs afresh)"""
        self.more = 0
        """How many more there are (counted, not kept: an export of a million is read a chunk at a time)."""

    def _add(self, ident: str, text: str, replay: bool) -> None:
        if len(self.found) < self.SHOWN:
            self.found.append((ident, text, replay))
        else:
            self.more += 1

    def see(self, exchange: Exchange) -> Exchange:
        if self.context is not None and exchange.webhook is not None:
            providers = self.context.for_tunnel(exchange.tunnel).providers
            if self.pytest:  # signed afresh at run time, but only by a scheme known here
                if unknown := unknown_provider(exchange.webhook, providers):
                    self._add(exchange.id, f"its test sends the captured signature: {unknown}", False)
            elif expired := expired_signature(exchange.request, scheme=exchange.scheme, now=self.now,
                                              providers=providers):
                self._add(exchange.id, f"carries its captured {expired[0].title} signature, which its "
                                       f"receiver will now refuse: {expired[1]}", True)
        return exchange

    def report(self, store: Store) -> None:
        if not self.found:
            return
        short = store.short_ids(ident for ident, _, _ in self.found)
        for ident, text, replay in self.found:
            shown = short.get(ident, ident)
            hint = f"; devtunnel replay {shown} signs it afresh" if replay else ""
            print(f"devtunnel: {shown} {safe(text)}{hint}", file=sys.stderr)
        if self.more:
            more = self.more
            print(f"devtunnel: and {more} more deliver{'ies' if more != 1 else 'y'} sent with an expired or unknown "
                  "signature", file=sys.stderr)


def _export(args: argparse.Namespace) -> int:
    """Every format is written as it is read (``export.PIECES``): the matches' ids (and start
    times) are read, then the exchanges a chunk at a time, each piece of text written with its
    side files before the next is read. (Every match and the whole text were held: 0.46 GB for
    25,000 exchanges as HAR, 0.12 GB as curl.) With ``-o`` the text goes to FILE whole or not at
    all (``_whole``); to stdout, it goes as it comes."""
    if args.format not in EXPORTERS:
        raise ConfigError(f"unknown format {quoted(args.format)}; use one of {', '.join(sorted(EXPORTERS))}")
    options = _destination_options(args.format, args.to)
    # "-o -" is stdout, as for curl: it wrote a file named "-" in the current folder.
    out = Path(args.output) if args.output and args.output != "-" else None
    if out is not None and out.is_dir():
        raise ExportError(f"cannot write {out}: it is a folder")
    folder = out.parent if out is not None else Path(".")
    store = _open(args)
    if args.redact:
        options["redact"] = True
    webhooks = webhook_context(settings_of(args))  # read once: the notices and a pytest module's signing
    expired = _SignatureNotices(args, webhooks)
    if "body_dir" in options_of(args.format):
        options["body_dir"] = str(folder)
    if "webhooks" in options_of(args.format):  # the variables devtunnel.toml names, as a replay signs from
        options["webhooks"] = webhooks
    if "path" in options_of(args.format) and out is not None:  # a pytest module's command to run it
        options["path"] = args.output
    if args.asserts is not None:
        if "asserts" not in options_of(args.format):
            raise ConfigError(f"--assert applies to the pytest format; the {args.format} format asserts nothing")
        options["asserts"] = args.asserts
    matches = _Matches(store, _export_keys(store, args), expired.see)
    pieces = PIECES[args.format](matches, **options)
    side = _SideFiles(folder)
    try:
        if out is not None:
            with _whole(out) as file:
                for piece in pieces:
                    side.write(piece.files)  # before the text that names them
                    file.write(piece.text.encode("utf-8"))
        else:
            shown = _Stdout()
            for piece in pieces:
                side.write(piece.files)
                shown.write(piece.text)
            shown.end()
    except BrokenPipeError:
        raise  # the reader (head, less) went away: what it read may name the side files written
    except BaseException:
        side.remove()  # a failed export leaves none behind, nothing in the way of the same export again
        raise
    for line in side.said:
        print(line, file=sys.stderr)
    expired.report(store)
    if out is not None:
        print(f"wrote {safe(str(out))}" + (" (run it with pytest: pip install pytest httpx)" if args.format == "pytest" else ""), file=sys.stderr)
    return 0


def _export_keys(store: Store, args: argparse.Namespace) -> list[str]:
    """The ids of the exchanges ``export`` writes, in the order its format lists them: by id
    (oldest first), or by start time for HAR (ties in id order). Only ids and start times are read."""
    _check_selection(args.ids, args.filter, args.limit)
    if args.ids:
        found = {ex.id: ex.started_at for ex in (_get(store, i) for i in args.ids)}
        keys = [(found[ident], ident) for ident in sorted(found)]
    else:
        keys = store.start_keys(_filter(args.filter), limit=args.limit or None)
        if not keys:
            raise NotFoundError(f"no exchange matches {quoted(args.filter)}")
    if args.format in BY_START_TIME:
        keys.sort(key=lambda key: key[0])  # stable: those that started together stay in id order
    return [key[1] for key in keys]


class _Matches:
    """The exchanges of an export, read from the store a chunk at a time (``Store.exchanges_by_id``)
    each time they are iterated (a pytest module's are, twice); ``see`` is given each one the first time."""

    def __init__(self, store: Store, ids: list[str], see: Callable[[Exchange], Exchange]) -> None:
        self.store, self.ids, self.see = store, ids, see
        self.passes = 0

    def __iter__(self) -> Iterator[Exchange]:
        first = self.passes == 0
        self.passes += 1
        for exchange in self.store.exchanges_by_id(self.ids):
            yield self.see(exchange) if first else exchange


class _SideFiles:
    """The side files of an export, written as the pieces naming them come, into ``folder``.

    Side files are named by the export, not by the user: none replaces a file that is there (one
    of the same bytes is kept). If the export fails (a file of that name with other bytes, a full
    disk, an exchange the format cannot express), ``remove`` takes away those it made: no text
    naming a side file cut short, nothing in the way of the same export run again."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: list[Path] = []
        self.said: list[str] = []
        """What to say on stderr once the export is done (a line per side file)."""

    def write(self, files: dict[str, bytes]) -> None:
        for name, data in files.items():
            path = _side_file(self.folder, name)
            new = _write_new(path, data)
            if new:
                self.made.append(path)
            self.said.append(f"{'wrote' if new else 'kept (same bytes)'} {safe(str(path.absolute()))} "
                             f"({format_size(len(data))})")

    def remove(self) -> None:
        for path in self.made:
            path.unlink(missing_ok=True)


class _Stdout:
    """An export's text written to stdout as it comes: the bytes ``-o`` writes (UTF-8 whatever the
    locale's encoding), and a newline at the end if the text has none. On a terminal, text holding
    a CR (raw HTTP's CRLF) is shown with CRLF as newlines and other controls escaped, as a
    terminal would run a lone CR as "back to the start of the line" and hide what came before."""

    NOTICE = ("devtunnel: shown for the terminal (CRLF as newlines, other controls escaped); "
              "use -o FILE or a pipe for the exact bytes")

    def __init__(self) -> None:
        self.terminal = sys.stdout.isatty()
        self.as_text = utf8_output() or self.terminal
        self.carry = ""
        """A CR ending the last piece, held for the next: it may begin a CRLF (on a terminal only)."""
        self.noted = False
        self.last = ""
        if not self.as_text:
            sys.stdout.flush()

    def write(self, text: str) -> None:
        if self.terminal:
            text, self.carry = self.carry + text, ""
            if text.endswith("\r"):
                text, self.carry = text[:-1], "\r"
            if "\r" in text:
                shown = _for_terminal(text)
                if not self.noted and shown != text.replace("\r\n", "\n"):
                    print(self.NOTICE, file=sys.stderr)
                    self.noted = True
                text = shown
        self._put(text)

    def _put(self, text: str) -> None:
        if not text:
            return
        self.last = text[-1]
        if self.as_text:
            sys.stdout.write(text)
        else:  # data for a file or a pipe: the bytes -o writes, whatever the locale's encoding
            sys.stdout.buffer.write(text.encode("utf-8"))

    def end(self) -> None:
        if self.carry:  # a lone CR at the very end, escaped
            self.carry = ""
            if not self.noted:
                print(self.NOTICE, file=sys.stderr)
            self._put(_for_terminal("\r"))
        if self.last != "\n":
            self._put("\n")


# replay --------------------------------------------------------------------------------


def _edit(args: argparse.Namespace) -> Edit | None:
    """The edit the flags describe: ``--header 'NAME: VALUE'`` sets one header, ``'NAME:'`` deletes it.

    The method is sent as typed (methods are case-sensitive); ``Edit`` checks every field.
    """
    set_headers: list[tuple[str, str]] = []
    remove: list[str] = []
    for spec in args.header:
        name, sep, value = spec.partition(":")
        name, value = name.strip(), value.strip()
        if not sep or not name:
            raise ConfigError(f"--header takes 'NAME: VALUE' (or 'NAME:' to delete), not {quoted(spec)}")
        try:  # said with the flag as typed, not the edit's field (set_headers, item 3)
            check_header(name, value or None, f"--header {quoted(spec)}")
        except ReplayError as exc:
            raise ConfigError(str(exc)) from None
        if value:
            set_headers.append((name, value))
        else:
            remove.append(name)
    body: bytes | None = None
    if args.body is not None:
        if args.body.startswith("@"):
            if not args.body[1:]:
                raise ConfigError("--body @FILE: give the file's path after @")
            try:
                body = Path(args.body[1:]).read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read {args.body[1:]}: {exc.strerror or exc}") from exc
        else:
            body = args.body.encode("utf-8")
    if args.path is not None and not args.path.startswith("/"):
        raise ConfigError(f"--path must start with /, not {quoted(args.path)}")
    for text in args.set:
        parse_assignment(text)  # a malformed --set is bad usage (ConfigError), before anything is read
    try:
        edit = Edit(
            method=args.method,
            target=args.path.encode("utf-8") if args.path is not None else None,
            set_headers=set_headers,  # type: ignore[arg-type]
            remove_headers=tuple(remove),
            body=body,
            set_fields=tuple(args.set),
            as_captured=args.as_captured,
            sign_unverified=args.sign_unverified,
        )
    except ReplayError as exc:  # an edit the flags describe badly: bad usage, nothing was sent
        raise ConfigError(str(exc)) from None
    return None if edit.is_empty else edit


def _outcome_lines(original: Exchange, result: Exchange, ignore_headers: list[str]) -> list[str]:
    """The line printed for one replay, and the first line of an error body under it."""
    outcome = replay_outcome(original, result, ignore_headers=ignore_headers)
    verdict = outcome.verdict
    if outcome.differs:
        verdict += f": devtunnel diff {original.id} {result.id}"
    if result.resigned:
        verdict += f"  re-signed ({result.resigned})"
    lines = [f"{safe(original.id)} -> {safe(result.id)}  {safe(outcome.status)}  {human_duration(result.duration)}  {safe(verdict)}"]
    if outcome.error_body:
        lines.append(f"  {safe(outcome.error_body)}")
    return lines


_APP_DOWN = ("starting", "crashed", "restarting")
"""The states of an app devtunnel runs that come back by themselves (``values.app_state``): a
tunnel with ``--hold`` holds its requests while its app is in one. In another than these and
``ready`` (``exited``, ``failed``) it will not come back by itself, and nothing is held for it."""


def _hold_of(tunnel: dict[str, Any]) -> float:
    """The seconds a tunnel of ``/api/tunnels`` holds its requests (its ``hold``'s ``timeout``; an
    agent from before that field says it only of an app, as ``app.hold``); 0: it holds none."""
    for holder, key in ((tunnel.get("hold"), "timeout"), (tunnel.get("app"), "hold")):
        value = holder.get(key) if isinstance(holder, dict) else None
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0:
            return float(value)
    return 0.0


_HeldAt = dict[tuple[str, str], tuple[tuple[str, int], float]]
"""Tunnels (name, target) a running agent holds requests for: where its API is, and the hold."""


def _held_tunnels(places: list[tuple[str, int]], wanted: set[tuple[str, str]],
                  api: str | None) -> tuple[_HeldAt, set[tuple[str, str]]]:
    """Of the tunnels ``wanted`` (name, target), those an agent answering at ``places`` holds
    requests for (``--hold``), and those an agent there runs at all, holding or not. Both empty
    when no agent answers.

    Raises:
        DevtunnelError: ``api`` (``--api``) names the place, and no agent answers there.
    """
    found: _HeldAt = {}
    running: set[tuple[str, str]] = set()
    answered = False
    for place in places:
        tunnels = agent_tunnels(*place)
        answered = answered or tunnels is not None
        for tunnel in tunnels or []:
            key = _key_of(tunnel)
            if key in wanted:
                running.add(key)
                if (hold := _hold_of(tunnel)) > 0:
                    found.setdefault(key, (place, hold))
    if api and not answered:
        raise no_agent(places, "leave --api out to send the replay without asking one")
    return found, running


def _key_of(tunnel: dict[str, Any]) -> tuple[str, str] | None:
    """A tunnel of ``/api/tunnels`` as (name, target), or None when it says no target."""
    config = tunnel.get("config")
    return (str(tunnel.get("name")), str(config.get("addr"))) if isinstance(config, dict) else None


def _wait_for_apps(args: argparse.Namespace, originals: list[Exchange],
                   places: list[tuple[str, int]]) -> tuple[dict[tuple[str, str], tuple[float, str]], set[tuple[str, str]]]:
    """Wait as a request of an exchange's tunnel waits at its gate when a running agent (at
    ``places``) holds that tunnel's requests (``--hold``, ``agent/hold.py``): while its app
    (``--run``) is down, as the agent says, and while its target refuses connections, asked as the
    gate asks it (``hold.target_listens``); at most the hold. For each tunnel (name, target) waited
    for: the seconds waited, and the reason a held request is given when the hold ran out first
    (``hold.still_down``, ``hold.still_refused``), else ''. Without a running agent: nothing.
    Then the tunnels (name, target) an agent there runs, whether it holds their requests or not."""
    wanted = {(o.tunnel, o.target_url) for o in originals if o.target_url}
    held, running = _held_tunnels(places, wanted, args.api) if wanted else ({}, set())
    waited: dict[tuple[str, str], tuple[float, str]] = {}
    start = time.monotonic()
    for (name, target), (place, hold) in held.items():
        reason = _wait_for_tunnel(name, target, place, hold, start + hold)
        if reason is not None:
            waited[(name, target)] = (time.monotonic() - start, reason)
    return waited, running


def _say_unasked(originals: list[Exchange], results: list[Exchange], running: set[tuple[str, str]],
                 places: list[tuple[str, int]]) -> None:
    """For each tunnel whose target refused a replay that no agent at ``places`` runs: say so,
    once. Its agent may hold its requests while its app restarts (``--hold``) with its API on
    another port (``http --api-port``): the replay, not told, went out at once."""
    said: set[tuple[str, str]] = set()
    for original, result in zip(originals, results):
        key = (original.tunnel, original.target_url)
        if result.error != "local_refused" or key in running or key in said:
            continue
        said.add(key)
        err(f"tunnel {original.tunnel}: its target refused the replay, which waited for nothing: no devtunnel"
            f" agent at {places_text(places)} runs this tunnel to say whether it holds requests while its app"
            " restarts (--hold); --api URL names its agent's API if that listens elsewhere")


def _wait_for_tunnel(name: str, target: str, place: tuple[str, int], hold: float, deadline: float) -> str | None:
    """Wait for tunnel ``name`` (to ``target``) of the agent at ``place`` as its gate waits, until
    ``deadline`` (``time.monotonic``): None if it did not wait, '' once it waited and the app and
    target are up (or the agent holds nothing more), else the reason its held requests are given.
    Each thing it waits for is said on stderr once."""
    address = _probe_address(target)
    said: list[str] = []
    while True:
        tunnel = next((t for t in agent_tunnels(*place) or [] if _key_of(t) == (name, target)), None)
        if tunnel is None or _hold_of(tunnel) <= 0 or tunnel.get("state") == "stopped":
            break  # the agent holds nothing for it now: sent as it would be without one
        app = tunnel.get("app") if isinstance(tunnel.get("app"), dict) else None
        if app is not None and app.get("state") in _APP_DOWN:
            words = {False: "not up yet", True: "restarting", None: "not ready"}[_came_up(app)]
            waits, why = f"its app is {words}; the replay waits for it", _still_down(app, hold)
        elif (app is not None and app.get("state") != "ready") or address is None:
            break  # it will not come back by itself (exited, failed): held for nothing
        else:
            host, port = address
            where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            try:
                if asyncio.run(target_listens(host, port)):
                    break
            except OSError as exc:  # not a refusal: the gate holds nothing for it, the replay fails as it fails
                failed = f"no answer in {CONNECT_TIMEOUT:g} s" if isinstance(exc, TimeoutError) else exc.strerror or str(exc)
                err(f"tunnel {name}: connecting to its target {where} failed ({escape(failed)}): not waited for"
                    " (the tunnel holds requests only while its target refuses them)")
                break
            waits = f"its target {where} refuses connections; the replay waits for it to accept one"
            why = still_refused(hold)
        if waits not in said:
            err(f"tunnel {name}: {waits}, up to {hold:g} s (--hold)")
            said.append(waits)
        if time.monotonic() >= deadline:
            return why
        time.sleep(RETRY_INTERVAL)
    return "" if said else None


def _probe_address(target: str) -> tuple[str, int] | None:
    """Where a replay to ``target`` connects (``replay``: a localhost name over http at 127.0.0.1),
    or None when ``target`` is no URL with a host."""
    found = origin(target)
    if found is None:
        return None
    scheme, host, port = found
    return ("127.0.0.1" if scheme == "http" and is_localhost_name(host) else host), port


def _came_up(app: dict[str, Any]) -> bool | None:
    """Whether the app of ``/api/tunnels`` was ever ready in this run of the agent (its
    ``ready_count``). An agent from before that field does not say: then only an app in its first
    start (``starting``, never restarted) surely was not, and one that restarted is not known
    (it may have crashed each time it started): None."""
    count = app.get("ready_count")
    if isinstance(count, int) and not isinstance(count, bool):
        return count > 0
    return False if app.get("state") == "starting" and app.get("restarts") == 0 else None


def _still_down(app: dict[str, Any], hold: float) -> str:
    """The reason a replay the hold ran out on is given while the app is down (``hold.still_down``),
    with its state as the agent API said it, in the words the agent's own held requests get:
    ``local app restarting: the app is still down after 30 s (restarting (2): exited with code 1: ...)``,
    ``local app not up yet`` for an app never ready, ``local app down`` when that is not known."""
    if not isinstance(app.get("state"), str):
        return still_down(hold, came_up=None)
    restarts, exit_code, message = app.get("restarts"), app.get("exit_code"), app.get("message")
    restarts = restarts if isinstance(restarts, int) and not isinstance(restarts, bool) else 0
    state = app_state_words(app["state"], restarts=restarts,
                            exit_code=exit_code if isinstance(exit_code, int) and not isinstance(exit_code, bool) else None,
                            message=unescape(message) if isinstance(message, str) else "")
    return still_down(hold, state, came_up=_came_up(app))


async def _send_replays(originals: list[Exchange], args: argparse.Namespace, edit: Edit | None,
                        judge: WebhookContext, expired: dict[str, str]) -> list[Exchange]:
    """``replay_many`` of ``originals``, except that nothing is sent to a target in ``expired``
    (the hold ran out on its app: a request of its tunnel would get 503): each of those fails
    with the reason given, as built as it would have been sent."""
    if not expired:
        return await replay_many(originals, to=args.to, edit=edit, verify=not args.insecure, webhooks=judge)
    import httpx

    def origin(url: httpx.URL) -> tuple[str, str, int | None]:
        # (a localhost name is sent to 127.0.0.1: ``replay``)
        return url.scheme, "127.0.0.1" if is_localhost_name(url.host) else url.host, url.port

    down = {origin(httpx.URL(target)): why for target, why in expired.items()}

    class HeldOff(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport(verify=not args.insecure, trust_env=False)

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            reason = down.get(origin(request.url))
            if reason is not None:
                raise httpx.ConnectError(reason, request=request)
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    async with httpx.AsyncClient(timeout=30.0, verify=not args.insecure, trust_env=False,
                                 transport=HeldOff()) as client:
        return await replay_many(originals, to=args.to, edit=edit, client=client, webhooks=judge)


def _replay(args: argparse.Namespace) -> int:
    if args.to is not None and not args.to.startswith(("http://", "https://")):
        raise ConfigError(f"--to must be an http:// or https:// URL, not {quoted(args.to)}")
    if args.to is not None:
        try:  # a malformed URL (http://[::1, a port that is none) is bad usage too, said before anything
            destination(args.to)
        except ReplayError as exc:
            raise ConfigError(f"--to: {exc}") from None
    if args.to is not None and args.api:
        raise ConfigError("--to URL sends there, where nothing is held: --api names the agent asked whether a"
                          " tunnel holds requests, for a replay to the tunnel's target; give one of them")
    # Where the agent is asked whether a tunnel holds its requests; a bad --api said before anything.
    places = candidates(args.api, settings_of(args).agent.api_port)
    for name in args.ignore_header:
        if not name or any(c in name for c in ": \t\r\n"):
            raise ConfigError(f"--ignore-header takes a header name such as X-Build, not {quoted(name)}")
    ignore_headers = [*settings_of(args).replay.ignore_headers, *args.ignore_header]
    edit = _edit(args)
    store = _open(args, readonly=False)
    originals = _resolve(store, args.ids, args.filter, args.limit or 0,
                         most=REPLAY_UNASKED if args.limit is None else None, originals=True)
    if args.filter:
        originals, repeats = once_per_delivery(originals)
        if repeats:
            err(f"{repeats} {'match repeats a delivery' if repeats == 1 else 'matches repeat deliveries'} sent"
                " in this replay (the same provider and delivery id: the provider's retries), left out: each"
                " delivery is sent once; give their ids to send them too")
    several = len(originals) > 1
    skipped: dict[str, str] = {}
    if edit is not None and several:
        # An edit that does not fit one capture (--set event.text on a Slack slash command's form
        # among event callbacks) leaves that one out, named; the others are sent.
        for original in originals:
            try:
                edit.apply(original)
            except EditError as exc:
                skipped[original.id] = str(exc)
        if skipped:
            _say_by_exchange(store, {ident: f"not sent: {why}" for ident, why in skipped.items()})
            if len(skipped) == len(originals):
                return EXIT_USAGE  # nothing fits: bad usage, as for one capture
            originals = [o for o in originals if o.id not in skipped]
    # Every request is checked before the first is sent: a ReplayError means nothing went out.
    # One context for re-signing what is sent and for the verdict on it, as the agent's recorder gives:
    # config secrets and custom providers as well as the conventional variables.
    judge = webhook_context(settings_of(args))
    # Sent to its tunnel's target, a replay waits for the app a running agent holds requests for.
    waited, running = _wait_for_apps(args, originals, places) if args.to is None else ({}, set())
    expired = {target: reason for (_, target), (_, reason) in waited.items() if reason}
    try:
        results = asyncio.run(_send_replays(originals, args, edit, judge, expired))
    except ReplayError as exc:  # nothing was sent; one a rule at the relay answered went to no service
        if args.to is None and any(not o.target_url for o in originals):
            raise ReplayError(f"{exc} with --to URL") from None
        raise
    for original, result in zip(originals, results):
        result.held = waited.get((original.tunnel, original.target_url), (None, ""))[0]
        if reason := expired.get(original.target_url, ""):  # not sent (``_send_replays``): recorded as a request the hold ran out on is
            result.error, result.error_message = "app_restarting", reason
    results = [replace(r, webhook=judge.judge(r)) if r.complete else r for r in results]
    unrecorded: StoreError | None = None
    try:
        store.put_many(results)
    except StoreError as exc:  # they were sent all the same: each is printed, then this is said
        unrecorded = exc
    # What kept a signature from being refreshed, said once however many replays it concerns
    # (naming them when there are several).
    if several:
        _say_by_exchange(store, {o.id: r.signature_notice for o, r in zip(originals, results) if r.signature_notice})
    else:
        for notice in dict.fromkeys(r.signature_notice for r in results if r.signature_notice):
            err(notice)
    summaries = []
    for original, result in zip(originals, results):
        summaries.append(result.summary())
        if not args.json:
            print("\n".join(_outcome_lines(original, result, ignore_headers)))
    if args.json:
        print(json.dumps(summaries, indent=2))
    if args.to is None:
        _say_unasked(originals, results, running, places)
    if unrecorded is not None:
        err(str(not_recorded(results, unrecorded)))
        return EXIT_ERROR
    return EXIT_OK if not skipped and all(answered(r) for r in results) else EXIT_ERROR


def answered(result: Exchange) -> bool:
    """Whether a replay got an answer that is no error, the rule of ``replay``'s exit status.

    A webhook delivery needs a 2xx, as its provider counts a delivery (and ``send`` exits); any
    other request an answer below 400 (a redirect is not followed: it is the answer). A 4xx, a
    5xx or no answer at all (refused, timed out, held past the app's hold) is an error."""
    response = result.response
    if result.error or response is None:
        return False
    if result.webhook is not None:
        return 200 <= response.status < 300
    return response.status < 400


NAMED_AT_MOST = 10
"""Exchange ids one line on stderr names; past them, how many more."""


def _say_by_exchange(store: Store, said: dict[str, str]) -> None:
    """One line on stderr per thing to say (``said``: by exchange id), naming the exchanges it
    concerns by the short ids ``requests`` prints: ``devtunnel: 01M8V2JD, 01M8V2JE: signature not
    refreshed: ...``."""
    by_text: dict[str, list[str]] = {}
    for ident, text in said.items():
        by_text.setdefault(text, []).append(ident)
    try:
        short = store.short_ids(said)
    except StoreError:
        short = {}
    for text, idents in by_text.items():
        names = ", ".join(short.get(i, i) for i in idents[:NAMED_AT_MOST])
        if len(idents) > NAMED_AT_MOST:
            names += f" and {len(idents) - NAMED_AT_MOST} more"
        err(f"{names}: {text}")


# diff ----------------------------------------------------------------------------------


def _diff(args: argparse.Namespace) -> int:
    """Exit 0 same, 1 different, as diff(1). Volatile response headers (a Date a second later) are
    shown but not counted unless ``--strict``: the same rule and names as replay's verdict
    (``VOLATILE_HEADERS`` and ``[replay] ignore_headers``), so "same response" there is exit 0 here."""
    volatile = () if args.strict else uncounted_headers(settings_of(args).replay.ignore_headers)
    store = _open(args)
    a = _get(store, args.a)
    b = _get(store, args.b)
    result = diff_exchanges(a, b, side=args.side, ignore=tuple(args.ignore), volatile=volatile)
    text = render_unified(result)
    if text:
        # The diff's lines went through the terminal rule, backslashes single as in a body (as
        # the inspector shows them); this pass, the same rule, catches the ids and titles and
        # leaves those lines as they are (safe() would double each backslash of their escapes).
        print(escape(text, keep="\n\t", double_backslash=False).rstrip("\n"))
    return 0 if all(s.identical for s in result.sections) else 1


_HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "requests": _requests,
    "show": _show,
    "export": _export,
    "replay": _replay,
    "diff": _diff,
}


def run(args: argparse.Namespace) -> int:
    """Run one capture command; returns the exit code (``devtunnel.exit_codes``)."""
    error_exit = EXIT_DIFF_ERROR if args.command == "diff" else EXIT_ERROR
    try:
        return _HANDLERS[args.command](args)
    except (ConfigError, FilterTimeoutError, EditError) as exc:  # bad usage: a bad filter, a --set that does not fit ...
        err(str(exc))
        return EXIT_DIFF_ERROR if args.command == "diff" else EXIT_USAGE
    except DevtunnelError as exc:
        err(str(exc))
        return error_exit
    except BrokenPipeError:
        raise  # the reader (head, less) went away: cli.main ends quietly
    except OSError as exc:
        err(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return error_exit
