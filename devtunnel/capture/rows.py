"""The row codec: an ``Exchange`` as rows of the store's tables (``capture.schema``), and back.

An exchange is one summary row in ``exchange_rows``, its header blobs in ``heads``, its bodies in
``req_bodies`` and ``res_bodies`` and its WebSocket messages in ``ws_messages``; a ``Row`` is the
summary alone, what list views read.

``wh_duplicate_of`` is computed here, when an exchange is written: the id of the first stored
exchange (the smallest id) with the same provider and delivery id. Replays are left out on both
sides: a replay is never a duplicate, and never the delivery others duplicate (its
``replay_of`` says what it repeats). A delivery whose signature is invalid is never the first
(anyone can post one with a delivery id of their choosing, and the genuine delivery that came
after it must not be marked its duplicate), but it may be a duplicate of the first one that is
not (a stale retry). It may name an exchange that retention or ``delete`` has since removed.
"""

from __future__ import annotations

import functools
import itertools
import sqlite3
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from devtunnel.capture import filters as _filters
from devtunnel.capture.model import Exchange, Headers, Request, Response, RuleMark, WsMessage, body_bytes, cap_each_body, cut_bodies
from devtunnel.values.terminal import read_utf8
from devtunnel.webhooks.base import Signature, Verdict

__all__ = [
    "Row",
    "encode_headers",
    "decode_headers",
    "sql_headers",
    "ROW_COLUMNS",
    "FULL_COLUMNS",
    "to_row",
    "read_exchange",
    "write_exchanges",
]

BUDGET_CUT = 2
"""``req_truncated`` / ``res_truncated`` of a body cut by the agent's body budget (``--body-budget``)
rather than at the body cap (1). A version that knows only 0 and 1 reads it as cut, as it is.

A WebSocket session whose payloads the budget cut (``WsMessage.budget_cut``) has it in
``res_truncated`` too, with a ``res_body_size`` of 0 (its 101 has no body, and no body of 0
bytes is ever cut): ``ws_messages`` has no column to say it in, and one more would be a schema
that older versions refuse to open. Its cut messages read back marked, its response not cut
(``read_exchange``); an older version reads the 101's empty body as cut."""


def _ws_budget_cut(websocket: object, res_truncated: object, res_body_size: object) -> bool:
    """Whether an exchange's columns say its WebSocket payloads were cut by the budget (``BUDGET_CUT``)."""
    return bool(websocket) and res_truncated == BUDGET_CUT and res_body_size == 0


def _truncated(message: Request | Response) -> int:
    """The ``*_truncated`` column of ``message``: 0, 1 (cut), or ``BUDGET_CUT``."""
    if not message.body_truncated:
        return 0
    return BUDGET_CUT if message.body_budget_cut else 1


_ROW_OVERHEAD = 256
"""Bytes counted per exchange on top of its blobs, for the byte budget."""

# sqlite3 binds str, int and float as they are, but asks its adapter registry about every other
# parameter: it builds a key, misses, then looks ``__adapt__`` up on its protocol type, which on
# Python 3.11 raises (and clears) an AttributeError each time. An exchange binds about eighteen
# Nones and blobs, and that lookup was a sixth of the recorder's instructions. Adapters that
# give the value back as it is make it one dict lookup and one C call; what is bound is the same
# object. (Exact types only: a subclass of bytes is asked about as before.)
sqlite3.register_adapter(type(None), {}.get)  # type: ignore[arg-type]  # {}.get(None) is None
sqlite3.register_adapter(bytes, bytes.__bytes__)  # the same bytes object, not a copy


@dataclass(frozen=True, slots=True)
class Row:
    """The light form of an exchange used by list views (no headers, no bodies)."""

    id: str
    tunnel: str
    started_at: float
    method: str
    target: str
    host: str
    status: int | None
    duration: float | None
    size: int
    error: str | None
    replay_of: str | None
    websocket: bool
    edited: bool = False
    """True for a replay sent with changes."""
    webhook: Verdict | None = None
    """The webhook verdict, or None when no provider recognised the request."""
    rule: RuleMark | None = None
    """The rule at the relay that answered or routed it."""
    resigned: str | None = None
    """For a replay signed afresh, the webhook provider that signed it."""
    raw_target: bytes | None = None
    """The target's bytes when ``target`` (the JSON reading) holds a U+FFFD, a byte that was
    not UTF-8 perhaps; else None (``target`` says it all)."""
    held: float | None = None
    """Seconds it waited for the local app (``Exchange.held``); None: it never waited."""
    holding: bool = False
    """True while it still waits for the app (``Exchange.holding``)."""

    @property
    def display_target(self) -> str:
        """The target for a person, as ``Request.display_url`` reads it: a byte that is not
        UTF-8 a surrogate that ``values.terminal.escape`` shows as ``\\xNN``. Escape it."""
        return self.target if self.raw_target is None else read_utf8(self.raw_target)

    def display_target_head(self, limit: int) -> str:
        """The first ``limit`` characters of ``display_target``, read from no more of the target's
        bytes than they can take (4 a character): a view's, of a captured target of megabytes."""
        if self.raw_target is None:
            return self.target[:limit]
        return read_utf8(self.raw_target[: 4 * limit])[:limit]


# --- header blobs: a count, every length, then the bytes, so any byte survives and ---------------
# --- decoding is two C-speed calls and some slicing (SQL filters decode one per row) -------------

_COUNT = struct.Struct("<I")


_chain = itertools.chain.from_iterable


@functools.cache
def _lengths(count: int) -> struct.Struct:
    """The count and ``2 * count`` lengths of a header blob (one compiled format per count)."""
    return struct.Struct(f"<I{2 * count}I")


def encode_headers(headers: Headers) -> bytes:
    """The compact blob form of header fields (exact bytes, order and case kept)."""
    fields = headers.fields
    parts = list(_chain(fields))  # name, value, name, value, ...: no Python loop per field
    return _lengths(len(fields)).pack(len(fields), *map(len, parts)) + b"".join(parts)


def decode_headers(blob: bytes) -> tuple[tuple[bytes, bytes], ...]:
    """Header fields from ``encode_headers`` output."""
    (count,) = _COUNT.unpack_from(blob)
    lengths = struct.unpack_from(f"<{2 * count}I", blob, _COUNT.size)
    pos = _COUNT.size + 8 * count
    fields: list[tuple[bytes, bytes]] = []
    for i in range(0, 2 * count, 2):
        name_end = pos + lengths[i]
        value_end = name_end + lengths[i + 1]
        fields.append((blob[pos:name_end], blob[name_end:value_end]))
        pos = value_end
    return tuple(fields)


def sql_headers(blob: bytes | None, op: str, a: str, b: str | None) -> int:
    """The ``dt_headers`` SQL function: whether a header blob matches a header filter (1 or 0)."""
    if blob is None:
        return 0
    if op == "has" and a.encode("utf-8").lower() not in blob.lower():
        return 0  # the name is nowhere in the blob: no need to decode it
    return 1 if _filters.headers_match(decode_headers(blob), op, a, b) else 0


# --- columns: what a Row reads, what a whole exchange reads, what a write sets ------------------

_BASE_COLUMNS = ("id, tunnel, started_at, method, target_text, host, status, duration, size, "
                 "error, replay_of, websocket, edited, rule_index, rule_action, rule_scope, resigned, held")
_WEBHOOK_COLUMNS = ("wh_provider", "wh_event", "wh_delivery", "wh_signature", "wh_reason", "wh_duplicate_of")
"""Always the last columns read, so ``_verdict(row[-6:])`` finds them."""
# The raw target only where the text reads a U+FFFD: the list shows such a byte as \xNN.
ROW_COLUMNS = (_BASE_COLUMNS + ", CASE WHEN instr(target_text, char(65533)) > 0 THEN target END, "
               + ", ".join(_WEBHOOK_COLUMNS))
FULL_COLUMNS = (_BASE_COLUMNS + ", scheme, ttfb, has_response, target, remote_addr, target_url, "
                "error_message, ws_close_code, req_version, req_body_size, req_truncated, "
                "res_version, res_reason, res_body_size, res_truncated, " + ", ".join(_WEBHOOK_COLUMNS))
_CORE_COLUMNS = (
    "id", "tunnel", "started_at", "method", "target_text", "path", "host", "scheme", "status",
    "duration", "ttfb", "size", "websocket", "has_response", "bytes",
    "target", "remote_addr", "target_url", "error_message", "req_version",
    "req_body_size", "req_truncated", "res_version", "res_reason", "res_body_size", "res_truncated", "edited",
    "run",
)
_RARE_COLUMNS = ("error", "replay_of", "ws_close_code", "rule_index", "rule_action", "rule_scope", "resigned", "held",
                 *_WEBHOOK_COLUMNS)
"""Columns that are NULL for most exchanges: a new exchange with all of them NULL leaves them out
of its insert (13 parameters fewer; sqlite3 binds a None through its adapter registry)."""
_INSERT_COLUMNS = _CORE_COLUMNS + _RARE_COLUMNS
# A plain exchange (nearly all traffic) binds 20 values instead of the 28 of ``_CORE_COLUMNS``: new,
# every rare column NULL, a response, no error message, no WebSocket, not edited, nothing
# truncated, and an ASCII target. Its constant columns are literals, ``target`` is the bytes of
# ``target_text`` (for an ASCII target, ``url_text`` is its bytes as they are) and
# ``res_body_size`` is ``size``. Each value bound costs sqlite3 a call and SQLite a copy of a
# text; a literal costs neither. ``?{4}`` and ``?{11}`` name the row's fifth and twelfth values
# (each ``?`` takes the number after the largest so far). Only those two are numbered: SQLite
# looks a numbered parameter up in a list of them as it compiles, so numbering every value made
# preparing a statement of 256 rows take 125 ms instead of 5.
_PLAIN_ROW = ("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 1, ?, CAST(?{4} AS BLOB), ?, ?, '', ?, ?, 0, ?, ?, ?{11}, "
              "0, 0, ?)")
"""The values of ``_CORE_COLUMNS`` of a plain exchange: id, tunnel, started_at, method, target_text,
path, host, scheme, status, duration, ttfb, size, websocket 0, has_response 1, bytes, target,
remote_addr, target_url, error_message '', req_version, req_body_size, req_truncated 0,
res_version, res_reason, res_body_size, res_truncated 0, edited 0, run."""
_PLAIN_WIDTH = 20


def read_exchange(conn: sqlite3.Connection, r: tuple[object, ...]) -> Exchange:
    """The whole exchange whose ``FULL_COLUMNS`` are ``r``: its heads, bodies and messages are read here."""
    (ex_id, tunnel, started_at, method, _text, _host, status, duration, _size, error, replay_of,
     websocket, edited, rule_index, rule_action, rule_scope, resigned, held, scheme, ttfb, has_response, target, remote_addr, target_url, error_message,
     ws_close_code, req_version, req_body_size, req_truncated, res_version, res_reason,
     res_body_size, res_truncated) = r[:-len(_WEBHOOK_COLUMNS)]
    heads = conn.execute("SELECT req, res FROM heads WHERE id = ?", (ex_id,)).fetchone() or (b"", None)
    bodies = conn.execute("SELECT req, res FROM bodies WHERE id = ?", (ex_id,)).fetchone() or (b"", None)
    request = Request(
        headers=Headers(decode_headers(heads[0])),
        body=bodies[0],
        body_size=req_body_size,  # type: ignore[arg-type]
        body_truncated=bool(req_truncated),
        body_budget_cut=req_truncated == BUDGET_CUT,
        http_version=req_version,  # type: ignore[arg-type]
        method=method,  # type: ignore[arg-type]
        target=target,  # type: ignore[arg-type]
    )
    response = None
    ws_budget_cut = _ws_budget_cut(websocket, res_truncated, res_body_size)
    if ws_budget_cut:
        res_truncated = 0  # said of the session's payloads: its 101 has no body to cut
    if has_response:
        response = Response(
            headers=Headers(decode_headers(heads[1] or b"")),
            body=bodies[1] or b"",
            body_size=res_body_size,  # type: ignore[arg-type]
            body_truncated=bool(res_truncated),
            body_budget_cut=res_truncated == BUDGET_CUT,
            http_version=res_version,  # type: ignore[arg-type]
            status=status,  # type: ignore[arg-type]
            reason=res_reason,  # type: ignore[arg-type]
        )
    messages = [
        WsMessage(sender=s, opcode=o, time=t, payload=p, size=n, budget_cut=ws_budget_cut and n > len(p))
        for s, o, t, n, p in conn.execute(
            "SELECT sender, opcode, time, size, payload FROM ws_messages WHERE id = ? ORDER BY seq", (ex_id,)
        )
    ]
    return Exchange(
        id=ex_id,  # type: ignore[arg-type]
        tunnel=tunnel,  # type: ignore[arg-type]
        started_at=started_at,  # type: ignore[arg-type]
        request=request,
        response=response,
        remote_addr=remote_addr,  # type: ignore[arg-type]
        scheme=scheme,  # type: ignore[arg-type]
        target_url=target_url,  # type: ignore[arg-type]
        ttfb=ttfb,  # type: ignore[arg-type]
        duration=duration,  # type: ignore[arg-type]
        error=error,  # type: ignore[arg-type]
        error_message=error_message,  # type: ignore[arg-type]
        replay_of=replay_of,  # type: ignore[arg-type]
        edited=bool(edited),
        resigned=resigned,  # type: ignore[arg-type]
        websocket=bool(websocket),
        ws_messages=messages,
        ws_close_code=ws_close_code,  # type: ignore[arg-type]
        webhook=_verdict(r[-len(_WEBHOOK_COLUMNS):]),
        rule=_rule_mark(rule_index, rule_action, rule_scope),
        held=None if held is None else abs(held),  # type: ignore[arg-type]
        holding=held is not None and held < 0,  # type: ignore[operator]
    )


def held_column(ex: Exchange) -> float | None:
    """The ``held`` column of an exchange: the seconds it waited for the app, negative while it
    still waits (at least a microsecond then, so that a wait just begun is told apart from none)."""
    if ex.held is None:
        return None
    return -max(ex.held, 1e-6) if ex.holding else ex.held


def to_row(r: tuple[object, ...]) -> Row:
    """The ``Row`` whose ``ROW_COLUMNS`` are ``r``."""
    return Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]),  # type: ignore[arg-type]
               bool(r[12]), _verdict(r[-len(_WEBHOOK_COLUMNS):]), _rule_mark(r[13], r[14], r[15]),
               r[16] if isinstance(r[16], str) else None, r[18] if isinstance(r[18], bytes) else None,
               None if r[17] is None else abs(r[17]), r[17] is not None and r[17] < 0)  # type: ignore[operator, arg-type]


def _verdict(columns: Sequence[object]) -> Verdict | None:
    """The verdict from the ``wh_*`` columns (None when no provider recognised the request)."""
    provider, event, delivery, signature, reason, duplicate_of = columns
    if provider is None:
        return None
    try:
        state = Signature(str(signature))
    except ValueError:  # a state a later version wrote: say no more than that it was not checked
        state = Signature.UNVERIFIED
    return Verdict(str(provider), event, delivery, state, reason or "", duplicate_of)  # type: ignore[arg-type]


def _webhook_values(ex: Exchange) -> tuple[object, ...]:
    """The ``wh_*`` column values of an exchange; ``wh_duplicate_of`` is filled in by ``_mark_duplicates``."""
    v = ex.webhook
    if v is None:
        return (None,) * len(_WEBHOOK_COLUMNS)
    return (v.provider, v.event_type, v.delivery_id, v.signature.value, v.reason or None, None)


_FIRST_DELIVERY = ("SELECT id FROM exchange_rows WHERE wh_delivery = ? AND wh_provider = ? AND replay_of IS NULL "
                   "AND wh_signature IS NOT 'invalid' ORDER BY id LIMIT 1")
# The index on (wh_delivery, wh_provider) holds the id too, in order: the first is one step away.
_POINT_LATER_AT = ("UPDATE exchange_rows SET wh_duplicate_of = ?3 WHERE wh_delivery = ?1 AND wh_provider = ?2 "
                   "AND replay_of IS NULL AND id > ?3 AND wh_duplicate_of IS NOT ?3")


def _deliveries(exchanges: Iterable[Exchange]) -> dict[tuple[str, str], list[tuple[str, bool]]]:
    """The deliveries among ``exchanges`` (no replays) by delivery id and provider: each id, and
    whether its signature is invalid (it may be a duplicate, never the first)."""
    groups: dict[tuple[str, str], list[tuple[str, bool]]] = {}
    for ex in exchanges:
        v = ex.webhook
        if v is not None and v.delivery_id and ex.replay_of is None:
            groups.setdefault((v.delivery_id, v.provider), []).append((ex.id, v.signature is Signature.INVALID))
    return groups


def first_deliveries(conn: sqlite3.Connection, exchanges: Iterable[Exchange]) -> dict[str, str]:
    """What ``_mark_duplicates`` will point each of ``exchanges`` (not written yet) at: the id of
    the first capture of its provider and delivery id whose signature is not invalid, stored or
    among ``exchanges``, by the id of each that came after it."""
    firsts: dict[str, str] = {}
    for (delivery, provider), group in _deliveries(exchanges).items():
        stored = conn.execute(_FIRST_DELIVERY, (delivery, provider)).fetchone()
        candidates = [ex_id for ex_id, invalid in group if not invalid] + ([stored[0]] if stored else [])
        if candidates:
            first = min(candidates)
            firsts.update((ex_id, first) for ex_id, _ in group if ex_id > first)
    return firsts


def _mark_duplicates(conn: sqlite3.Connection, exchanges: Iterable[Exchange]) -> None:
    """Point the deliveries just written at the first stored one of their provider and delivery id
    whose signature is not invalid, those that came after it.

    Usually the first was stored long ago and only the new rows change. When a delivery is
    written after a later one of the same id (ids follow arrival, writes follow the end of each
    exchange), the later ones are pointed at it.
    """
    for (delivery, provider), group in _deliveries(exchanges).items():
        found = conn.execute(_FIRST_DELIVERY, (delivery, provider)).fetchone()
        if found is None:  # only invalid ones: none is the delivery the others repeat
            continue
        first = found[0]
        if any(ex_id == first for ex_id, _ in group):
            conn.execute(_POINT_LATER_AT, (delivery, provider, first))
        else:
            ids = [ex_id for ex_id, _ in group if ex_id > first]
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                conn.execute(f"UPDATE exchange_rows SET wh_duplicate_of = ? WHERE id IN ({', '.join('?' * len(chunk))})",
                             [first, *chunk])


def _rule_mark(index: object, action: object, scope: object) -> RuleMark | None:
    if not isinstance(index, int) or not isinstance(action, str):
        return None
    return RuleMark(index, action, scope if isinstance(scope, str) else "tunnel")


def write_exchanges(
    conn: sqlite3.Connection, exchanges: Iterable[Exchange], room: int | None = None, run: str | None = None
) -> tuple[int, int, int]:
    """Upsert exchanges: a few many-row statements per table (a later version of an id wins).

    ``run`` is the id of the agent run recording them (``runs.Run.id``), kept in each row's ``run``
    column: what the agent API's own scope lists. A stored exchange written again without one keeps
    the run that recorded it.

    With ``room``, an exchange that counts more bytes than that (its bodies larger than the store
    keeps) is written again with its bodies cut to fit (``model.cut_bodies``: marked cut, real
    sizes kept) before this returns; otherwise retention would delete it with everything older.
    Rare, so the common case pays one comparison per exchange. So is one with a body or a WebSocket
    message larger than SQLite takes in one value (``_largest_body``: a body cap above 1 GB), cut to
    that (``model.cap_each_body``) rather than failing its write; only those over ``_LARGE_BODY`` are
    looked at.

    Call it inside a write transaction: which ids are stored already is read first, and must
    not change before the writes. Ids not stored yet (nearly all: ids grow with time, and an
    exchange is written once unless it was seen live) take plain inserts, with nothing older to
    remove; ``stats`` counts them here, once per call. Stored ones are updated in place, and lose
    the bodies and messages their new version has not. An empty request body has no row.

    Returns what ``stats`` holds after the writes (how many exchanges, how many bytes) and how
    many blobs it opened on ``conn`` (one per body over ``_LARGE_BODY``: ``Store`` counts them).
    """
    latest = {ex.id: ex for ex in exchanges}
    stored, n, total = _stored_ids(conn, latest)
    # The parameters of each statement, row after row in one flat list (``_execute_rows``).
    plain: list[object] = []  # new and plain (``_PLAIN_ROW``)
    fresh: list[object] = []  # new, every rare column NULL
    fresh_rare: list[object] = []
    again: list[object] = []
    heads: list[object] = []
    req_rows: list[object] = []
    res_rows: list[object] = []
    large: list[tuple[str, str, bytes]] = []
    messages: list[object] = []
    hooked: list[Exchange] = []  # with a webhook verdict
    over: list[tuple[Exchange, int]] = []  # larger than ``room``: the exchange and its bytes
    too_big: list[Exchange] = []  # a body larger than SQLite takes: written without it, then again cut
    fresh_bytes = 0
    for ex_id, ex in latest.items():
        req, res = ex.request, ex.response
        req_heads = encode_headers(req.headers)
        req_body = bytes(req.body)
        rule = ex.rule
        if res is None:
            res_heads = res_body = None
            blob_bytes = _ROW_OVERHEAD + len(req_heads) + len(req_body) + len(req.target)
            has_response = 0
            res_version = res_reason = res_body_size = res_truncated = None
        else:
            res_heads = encode_headers(res.headers)
            res_body = bytes(res.body)
            blob_bytes = (_ROW_OVERHEAD + len(req_heads) + len(req_body) + len(req.target) + len(res_heads)
                          + len(res_body))
            has_response = 1
            res_version, res_reason, res_body_size = res.http_version, res.reason, res.body_size
            res_truncated = _truncated(res)
        if ex.ws_messages:
            blob_bytes += sum(len(m.payload) for m in ex.ws_messages)
            for i, m in enumerate(ex.ws_messages):
                if len(m.payload) > _LARGE_BODY and len(m.payload) > _largest_body(conn):
                    too_big.append(ex)  # the message is left out here, and the session written again cut
                    continue
                messages += (ex_id, i, m.sender, m.opcode, m.time, m.size, bytes(m.payload))
            if res is not None and not res_truncated and not res.body_size and any(m.budget_cut for m in ex.ws_messages):
                res_truncated = BUDGET_CUT  # the payloads' cut, where ``_ws_budget_cut`` reads it
        if room is not None and blob_bytes > room:
            over.append((ex, blob_bytes))
        common = (ex.error is None and ex.replay_of is None and ex.ws_close_code is None and rule is None
                  and ex.resigned is None and ex.webhook is None and ex.held is None)
        new = ex_id not in stored
        if new:
            fresh_bytes += blob_bytes
        target = req.target
        if (new and common and res is not None and not res_truncated and not ex.error_message and not ex.websocket
                and not ex.edited and not req.body_truncated and target.isascii()):
            text = target.decode("ascii")  # what ``url_text`` is for an ASCII target
            plain += (ex_id, ex.tunnel, ex.started_at, req.method, text, text.partition("?")[0], req.host,
                      ex.scheme, res.status, ex.duration, ex.ttfb, res_body_size, blob_bytes, ex.remote_addr,
                      ex.target_url, req.http_version, req.body_size, res_version, res_reason, run)
        else:
            row: tuple[object, ...] = (
                ex_id, ex.tunnel, ex.started_at, req.method, req.url_text, req.path, req.host, ex.scheme,
                ex.status, ex.duration, ex.ttfb, ex.size, 1 if ex.websocket else 0,
                has_response, blob_bytes, target, ex.remote_addr, ex.target_url,
                ex.error_message, req.http_version, req.body_size, _truncated(req),
                res_version, res_reason, res_body_size, res_truncated, 1 if ex.edited else 0, run,
            )
            if new and common:
                fresh += row
            else:
                if ex.webhook is not None:
                    hooked.append(ex)
                row += (ex.error, ex.replay_of, ex.ws_close_code,
                        *((None, None, None) if rule is None else (rule.index, rule.action, rule.scope)),
                        ex.resigned, held_column(ex), *_webhook_values(ex))
                if new:
                    fresh_rare += row
                else:
                    again += row
        heads += (ex_id, req_heads, res_heads)
        # No row for an empty request body (most requests); a response body has one, even empty.
        if req_body:
            if len(req_body) > _LARGE_BODY:
                if len(req_body) > _largest_body(conn):
                    too_big.append(ex)
                else:
                    large.append((ex_id, "req", req_body))
            else:
                req_rows += (ex_id, req_body)
        if res_body is not None:
            if len(res_body) > _LARGE_BODY:
                if len(res_body) > _largest_body(conn):
                    too_big.append(ex)
                else:
                    large.append((ex_id, "res", res_body))
            else:
                res_rows += (ex_id, res_body)
    _execute_rows(conn, "insert_plain", plain)
    _execute_rows(conn, "insert", fresh)
    _execute_rows(conn, "insert_rare", fresh_rare)
    if plain or fresh or fresh_rare:
        added = (len(plain) // _PLAIN_WIDTH + len(fresh) // len(_CORE_COLUMNS)
                 + len(fresh_rare) // len(_INSERT_COLUMNS))
        conn.execute("UPDATE stats SET n = n + ?, bytes = bytes + ?", (added, fresh_bytes))
        n, total = n + added, total + fresh_bytes
    _execute_rows(conn, "upsert", again)  # the update trigger moves the byte count
    _mark_duplicates(conn, hooked)
    if stored:
        # A newer version of a stored exchange leaves nothing of the older one's heads, bodies or
        # messages behind: they go first, and every row inserted below is a new one.
        rewritten = [ex_id for ex_id in latest if ex_id in stored]
        for kind in ("unheads", "unreq", "unres", "unmessage"):
            _execute_rows(conn, kind, rewritten)
    _execute_rows(conn, "heads", heads)
    _execute_rows(conn, "req_bodies", req_rows)
    _execute_rows(conn, "res_bodies", res_rows)
    for ex_id, side, body in large:
        _write_large_body(conn, ex_id, side, body)
    if messages:
        _execute_rows(conn, "messages", messages)
    if again:  # the update trigger moved the byte count by what it found in the rows replaced
        n, total = conn.execute("SELECT n, bytes FROM stats").fetchone()
    if (over and room is not None) or too_big:  # each again, cut to fit: stored now, it is updated in place
        again_cut = {ex.id: cut_bodies(ex, body_bytes(ex) - (size - room)) for ex, size in over if room is not None}
        for ex in too_big:
            again_cut[ex.id] = cap_each_body(again_cut.get(ex.id, ex), _largest_body(conn))
        n, total, blobs = write_exchanges(conn, again_cut.values(), run=run)
        return n, total, blobs + len(large)
    return n, total, len(large)


def _largest_body(conn: sqlite3.Connection) -> int:
    """The largest body SQLite stores in one row of ``req_bodies`` or ``res_bodies``: its limit on
    a value and a row (``SQLITE_LIMIT_LENGTH``, 1,000,000,000 bytes unless built otherwise), less
    room for the row's id and header."""
    return conn.getlimit(sqlite3.SQLITE_LIMIT_LENGTH) - 1024


def _stored_ids(conn: sqlite3.Connection, latest: dict[str, Exchange]) -> tuple[set[str], int, int]:
    """Which of these ids are stored already, and what ``stats`` holds (exchanges, bytes).

    Ids grow with time: one above the largest stored id is new without a look. The others (an
    exchange that began before one written already, or one written before while it ran) are
    looked up in one statement. The counts come with the largest id: one statement fewer than
    reading them after the writes (each is a GIL handoff in the agent).
    """
    n, total, top = conn.execute("SELECT n, bytes, (SELECT max(id) FROM exchange_rows) FROM stats").fetchone()
    if top is None:
        return set(), n, total
    maybe = [ex_id for ex_id in latest if ex_id <= top]
    stored: set[str] = set()
    for start in range(0, len(maybe), 500):
        chunk = maybe[start:start + 500]
        stored.update(r[0] for r in conn.execute(
            f"SELECT id FROM exchange_rows WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
    return stored, n, total


_LARGE_BODY = 256 * 1024
"""Bodies above this size are written piece by piece through SQLite's incremental blob I/O."""


def _write_large_body(conn: sqlite3.Connection, ex_id: str, side: str, body: bytes) -> None:
    """Write one large body in pieces.

    Bound as a parameter, a 10 MiB body is copied whole by sqlite3 and again into the record
    SQLite builds; a zero-filled blob (which SQLite keeps as a length, the body being its row's
    last column) written in 256 KiB pieces needs neither copy, which keeps the writer's peak
    memory flat.
    """
    table = f"{side}_bodies"
    cur = conn.execute(f"INSERT OR REPLACE INTO {table} (id, body) VALUES (?, zeroblob(?))", (ex_id, len(body)))
    rowid = cur.lastrowid
    assert rowid is not None
    view = memoryview(body)
    with conn.blobopen(table, "body", rowid) as blob:
        for start in range(0, len(view), _LARGE_BODY):
            blob.write(view[start : start + _LARGE_BODY])


# Statements that take rows, as (text before the rows, text after them); each row is one
# parenthesised group of ``?``.
#
# New rows go in with ``INSERT OR FAIL``. A statement of many rows that may abort (``INSERT``'s
# default on a constraint, and ``OR REPLACE``'s) makes SQLite keep a statement journal: a copy
# of every page the statement changes that existed before it, so that it can undo the
# statement alone. Past 64 KiB the copy goes to a temporary file, created, unlinked, written
# and read back: the openat, unlink, access and pwrite64 calls seen in the agent, about one
# file per write transaction. ``OR FAIL`` stops at a violated constraint without undoing the
# statement's earlier rows, which is never needed here: any error rolls the whole transaction
# back (``Store._writing``), and the recorder retries the batch one exchange at a time.
_ROW_STATEMENTS: dict[str, tuple[str, str, int]] = {
    "insert_plain": (f"INSERT OR FAIL INTO exchange_rows ({', '.join(_CORE_COLUMNS)}) VALUES ", "", _PLAIN_WIDTH),
    "insert": (f"INSERT OR FAIL INTO exchange_rows ({', '.join(_CORE_COLUMNS)}) VALUES ", "", len(_CORE_COLUMNS)),
    "insert_rare": (f"INSERT OR FAIL INTO exchange_rows ({', '.join(_INSERT_COLUMNS)}) VALUES ", "",
                    len(_INSERT_COLUMNS)),
    "upsert": (
        f"INSERT INTO exchange_rows ({', '.join(_INSERT_COLUMNS)}) VALUES ",
        " ON CONFLICT(id) DO UPDATE SET " + ", ".join(  # written again without a run: the one that recorded it stays
            f"{c} = coalesce(excluded.{c}, {c})" if c == "run" else f"{c} = excluded.{c}" for c in _INSERT_COLUMNS[1:]),
        len(_INSERT_COLUMNS),
    ),
    "heads": ("INSERT OR FAIL INTO heads (id, req, res) VALUES ", "", 3),
    "req_bodies": ("INSERT OR FAIL INTO req_bodies (id, body) VALUES ", "", 2),
    "res_bodies": ("INSERT OR FAIL INTO res_bodies (id, body) VALUES ", "", 2),
    "unheads": ("DELETE FROM heads WHERE id IN (", ")", 0),
    "unreq": ("DELETE FROM req_bodies WHERE id IN (", ")", 0),
    "unres": ("DELETE FROM res_bodies WHERE id IN (", ")", 0),
    "unmessage": ("DELETE FROM ws_messages WHERE id IN (", ")", 0),
    "messages": ("INSERT OR FAIL INTO ws_messages (id, seq, sender, opcode, time, size, payload) VALUES ", "", 7),
}
# Rows per statement: a batch is cut into these sizes, largest first, so the few statement
# texts stay in sqlite3's statement cache.
_ROWS_PER_STATEMENT = (256, 128, 64, 32, 16, 8, 4, 2, 1)


@functools.cache
def _rows_sql(kind: str, rows: int) -> str:
    head, tail, width = _ROW_STATEMENTS[kind]
    if kind == "insert_plain":
        return head + ", ".join(_PLAIN_ROW.format(*range(r * width + 1, r * width + width + 1))
                                for r in range(rows))  # numbered from 1: the row's first is r * width + 1
    group = "?" if width == 0 else "(" + ", ".join("?" * width) + ")"
    return head + ", ".join([group] * rows) + tail


def _execute_rows(conn: sqlite3.Connection, kind: str, params: Sequence[object]) -> None:
    """Like ``executemany``, but many rows per statement; ``params`` holds the rows' values one
    row after another (built so: no tuple per row to flatten here).

    sqlite3 lets go of the GIL around every statement it steps; ``executemany`` steps once per
    row, and each time the writer thread must win the GIL back from the event loop. A statement
    of up to 256 rows costs that once.
    """
    width = _ROW_STATEMENTS[kind][2] or 1
    if len(params) % width:
        raise ValueError(f"{len(params)} values for rows of {width}")
    start, total = 0, len(params) // width
    for size in _ROWS_PER_STATEMENT:
        while total - start >= size:
            conn.execute(_rows_sql(kind, size), params[start * width : (start + size) * width])
            start += size
