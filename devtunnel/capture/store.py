"""The SQLite store of captured exchanges (WAL mode; many readers, one writer).

Layout (``PRAGMA user_version`` is the schema version; ``application_id`` marks our files)::

    exchanges    one small row per exchange: every summary field, no blobs (WITHOUT ROWID,
                 clustered by id, so list views and filters scan little and in id order)
    heads        id -> request and response header blobs (compact, exact bytes)
    req_bodies   id -> request body     (one table per side, each body the last column of its
    res_bodies   id -> response body     row: SQLite builds a zero-filled blob that is not in
                                         memory, so a large body is written in pieces)
    bodies       a view: id -> request and response body
    ws_messages  (id, seq) -> one WebSocket message
    stats        one row: how many exchanges and how many bytes (kept by triggers, so
                 retention never scans the table)

The ``wh_*`` columns of ``exchanges`` hold the webhook verdict (schema 4); ``wh_duplicate_of``
is computed here, when an exchange is written: the id of the first stored exchange (the
smallest id) with the same provider and delivery id. Replays are left out on both sides: a
replay is never a duplicate, and never the delivery others duplicate (its ``replay_of`` says
what it repeats). It may name an exchange that retention or ``delete`` has since removed.

``res`` columns are NULL exactly when the exchange has no response.
"""

from __future__ import annotations

import bisect
import functools
import logging
import os
import sqlite3
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from devtunnel.capture import filters as _filters
from devtunnel.capture.filters.edge import ip_in_sql
from devtunnel.capture.model import Exchange, Headers, Request, Response, RuleMark, WsMessage
from devtunnel.errors import NotFoundError, StoreError
from devtunnel.values.exchange_ids import MIN_SHORT, short_ids
from devtunnel.values.paths import db_path
from devtunnel.webhooks.base import Signature, Verdict

__all__ = [
    "DEFAULT_MAX_EXCHANGES",
    "DEFAULT_MAX_BYTES",
    "SCHEMA_VERSION",
    "Row",
    "Store",
    "encode_headers",
    "decode_headers",
]

log = logging.getLogger("devtunnel.capture")

DEFAULT_MAX_EXCHANGES = 100_000
DEFAULT_MAX_BYTES = 2 * 1024 * 1024 * 1024
SCHEMA_VERSION = 7
APPLICATION_ID = 0x64746E6C  # "dtnl"
_ROW_OVERHEAD = 256
"""Bytes counted per exchange on top of its blobs, for the byte budget."""
_SQLITE_MAX_INT = 2**63 - 1
_ID_ORDER = "sqlite_autoindex_exchanges_1"
"""SQLite's name for the primary key of ``exchanges``: the table itself, in id order."""
_SHORT_IDS_BY_QUERY = 256
"""Up to this many ids, ``short_ids`` asks the index for each one's neighbours; past it, reading
every id once (a few MB for 100,000 exchanges) is faster than two queries per id."""


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


# --- header blobs: a count, every length, then the bytes, so any byte survives and ---------------
# --- decoding is two C-speed calls and some slicing (SQL filters decode one per row) -------------

_COUNT = struct.Struct("<I")


def encode_headers(headers: Headers) -> bytes:
    """The compact blob form of header fields (exact bytes, order and case kept)."""
    fields = headers.fields
    parts = [x for pair in fields for x in pair]
    return struct.pack(f"<I{len(parts)}I", len(fields), *map(len, parts)) + b"".join(parts)


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


def _sql_headers(blob: bytes | None, op: str, a: str, b: str | None) -> int:
    if blob is None:
        return 0
    if op == "has" and a.encode("utf-8").lower() not in blob.lower():
        return 0  # the name is nowhere in the blob: no need to decode it
    return 1 if _filters.headers_match(decode_headers(blob), op, a, b) else 0


# --- schema ---------------------------------------------------------------------------------

_SCHEMA_V1 = """
CREATE TABLE exchanges (
    id TEXT PRIMARY KEY,
    tunnel TEXT NOT NULL,
    started_at REAL NOT NULL,
    method TEXT NOT NULL,
    target_text TEXT NOT NULL,
    path TEXT NOT NULL,
    host TEXT NOT NULL,
    scheme TEXT NOT NULL,
    status INTEGER,
    duration REAL,
    ttfb REAL,
    size INTEGER NOT NULL,
    error TEXT,
    replay_of TEXT,
    websocket INTEGER NOT NULL,
    has_response INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    target BLOB NOT NULL,
    remote_addr TEXT NOT NULL,
    target_url TEXT NOT NULL,
    error_message TEXT NOT NULL,
    ws_close_code INTEGER,
    req_version TEXT NOT NULL,
    req_body_size INTEGER NOT NULL,
    req_truncated INTEGER NOT NULL,
    res_version TEXT,
    res_reason TEXT,
    res_body_size INTEGER,
    res_truncated INTEGER
) WITHOUT ROWID;
CREATE TABLE heads (id TEXT PRIMARY KEY, req BLOB NOT NULL, res BLOB) WITHOUT ROWID;
CREATE TABLE bodies (id TEXT PRIMARY KEY, req BLOB NOT NULL, res BLOB);
CREATE TABLE ws_messages (
    id TEXT NOT NULL, seq INTEGER NOT NULL, sender TEXT NOT NULL, opcode INTEGER NOT NULL,
    time REAL NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL,
    PRIMARY KEY (id, seq)
);
CREATE TABLE stats (n INTEGER NOT NULL, bytes INTEGER NOT NULL);
INSERT INTO stats VALUES (0, 0);
CREATE TRIGGER exchanges_insert AFTER INSERT ON exchanges BEGIN
    UPDATE stats SET n = n + 1, bytes = bytes + NEW.bytes;
END;
CREATE TRIGGER exchanges_update AFTER UPDATE OF bytes ON exchanges BEGIN
    UPDATE stats SET bytes = bytes - OLD.bytes + NEW.bytes;
END;
CREATE TRIGGER exchanges_delete AFTER DELETE ON exchanges BEGIN
    UPDATE stats SET n = n - 1, bytes = bytes - OLD.bytes;
    DELETE FROM heads WHERE id = OLD.id;
    DELETE FROM bodies WHERE id = OLD.id;
    DELETE FROM ws_messages WHERE id = OLD.id;
END;
"""

# Version 2: bodies move to one table per side. In ``bodies (id, req, res)`` a large request
# body was not the row's last column, and SQLite then builds a zero-filled blob in memory, and
# the record around it: a 10 MiB upload cost the recorder 20 MiB more for a moment.
_SCHEMA_V2 = """
CREATE TABLE req_bodies (id TEXT PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE res_bodies (id TEXT PRIMARY KEY, body BLOB NOT NULL);
INSERT INTO req_bodies (id, body) SELECT id, req FROM bodies;
INSERT INTO res_bodies (id, body) SELECT id, res FROM bodies WHERE res IS NOT NULL;
DROP TABLE bodies;
CREATE VIEW bodies (id, req, res) AS
    SELECT q.id, q.body, s.body FROM req_bodies q LEFT JOIN res_bodies s ON s.id = q.id;
DROP TRIGGER exchanges_delete;
CREATE TRIGGER exchanges_delete AFTER DELETE ON exchanges BEGIN
    UPDATE stats SET n = n - 1, bytes = bytes - OLD.bytes;
    DELETE FROM heads WHERE id = OLD.id;
    DELETE FROM req_bodies WHERE id = OLD.id;
    DELETE FROM res_bodies WHERE id = OLD.id;
    DELETE FROM ws_messages WHERE id = OLD.id;
END;
"""

# Version 3: a replay sent with changes is marked (adding a column with a constant default
# rewrites nothing, so the upgrade is instant at any size).
_SCHEMA_V3 = """
ALTER TABLE exchanges ADD COLUMN edited INTEGER NOT NULL DEFAULT 0;
"""

# Version 4: the webhook verdict of each exchange, with indexes for its filters. Partial
# indexes: traffic that is no webhook costs them nothing, and every filter's clause implies
# the column is not NULL, so SQLite can use them.
_SCHEMA_V4 = """
ALTER TABLE exchanges ADD COLUMN wh_provider TEXT;
ALTER TABLE exchanges ADD COLUMN wh_event TEXT;
ALTER TABLE exchanges ADD COLUMN wh_delivery TEXT;
ALTER TABLE exchanges ADD COLUMN wh_signature TEXT;
ALTER TABLE exchanges ADD COLUMN wh_reason TEXT;
ALTER TABLE exchanges ADD COLUMN wh_duplicate_of TEXT;
CREATE INDEX exchanges_wh_delivery ON exchanges (wh_delivery, wh_provider) WHERE wh_delivery IS NOT NULL;
CREATE INDEX exchanges_wh_provider ON exchanges (wh_provider) WHERE wh_provider IS NOT NULL;
CREATE INDEX exchanges_wh_signature ON exchanges (wh_signature) WHERE wh_signature IS NOT NULL;
CREATE INDEX exchanges_wh_duplicate ON exchanges (wh_duplicate_of) WHERE wh_duplicate_of IS NOT NULL;
"""

# Version 5: the rule at the relay that answered or routed an exchange (docs/policy.md).
_SCHEMA_V5 = """
ALTER TABLE exchanges ADD COLUMN rule_index INTEGER;
ALTER TABLE exchanges ADD COLUMN rule_action TEXT;
ALTER TABLE exchanges ADD COLUMN rule_scope TEXT;
"""

# Version 6: a replay of a webhook delivery signed afresh names the provider that signed it.
_SCHEMA_V6 = """
ALTER TABLE exchanges ADD COLUMN resigned TEXT;
"""

# Version 7: indexes for the column filters a list view counts over a large store (status,
# method, tunnel; at 1M exchanges ``status:5xx`` counts in 13 ms instead of a 280 ms scan, and
# ``~e`` in under 1 ms instead of 320 ms from a partial index of the few that failed). Each
# holds the id too (the key of a WITHOUT ROWID table), so an equality reads its matches in id
# order. Indexes only: nothing else in the file changes.
_SCHEMA_V7 = """
CREATE INDEX IF NOT EXISTS exchanges_status ON exchanges (status);
CREATE INDEX IF NOT EXISTS exchanges_method ON exchanges (method COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS exchanges_tunnel ON exchanges (tunnel COLLATE NOCASE);
CREATE INDEX IF NOT EXISTS exchanges_error ON exchanges (error) WHERE error IS NOT NULL;
"""

_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5, 6: _SCHEMA_V6,
                               7: _SCHEMA_V7}
"""Script that brings a database from version ``n - 1`` to ``n``."""

_BASE_COLUMNS = ("id, tunnel, started_at, method, target_text, host, status, duration, size, "
                 "error, replay_of, websocket, edited, rule_index, rule_action, rule_scope, resigned")
_WEBHOOK_COLUMNS = ("wh_provider", "wh_event", "wh_delivery", "wh_signature", "wh_reason", "wh_duplicate_of")
"""Always the last columns read, so ``_verdict(row[-6:])`` finds them."""
_ROW_COLUMNS = _BASE_COLUMNS + ", " + ", ".join(_WEBHOOK_COLUMNS)
_FULL_COLUMNS = (_BASE_COLUMNS + ", scheme, ttfb, has_response, target, remote_addr, target_url, "
                 "error_message, ws_close_code, req_version, req_body_size, req_truncated, "
                 "res_version, res_reason, res_body_size, res_truncated, " + ", ".join(_WEBHOOK_COLUMNS))
_INSERT_COLUMNS = (
    "id", "tunnel", "started_at", "method", "target_text", "path", "host", "scheme", "status",
    "duration", "ttfb", "size", "error", "replay_of", "websocket", "has_response", "bytes",
    "target", "remote_addr", "target_url", "error_message", "ws_close_code", "req_version",
    "req_body_size", "req_truncated", "res_version", "res_reason", "res_body_size", "res_truncated",
    "edited", "rule_index", "rule_action", "rule_scope", "resigned",
    *_WEBHOOK_COLUMNS,
)


class Store:
    """Captured exchanges in one SQLite file.

    ``Store(path)`` creates the file (and its folder) if needed. Every sqlite3 error is raised
    as ``StoreError`` with a one-line message naming the file and what to do. Thread-safe: one
    connection per thread. ``filter`` arguments are a filter expression string or a compiled
    ``devtunnel.capture.filters.Filter``; ``None`` matches everything. Order is by id (oldest
    first) unless ``newest_first``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        max_exchanges: int = DEFAULT_MAX_EXCHANGES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        readonly: bool = False,
        busy_timeout: float = 5.0,
    ) -> None:
        """Open (or create) the store.

        Args:
            path: the database file (``values.paths.db_path()`` when None).
            max_exchanges: keep at most this many exchanges; the oldest go first.
            max_bytes: keep at most about this many bytes of captures; the oldest go first.
            readonly: open for reading only (never creates or migrates).
            busy_timeout: seconds to wait for another process's lock before failing.
        """
        self.path = Path(path) if path is not None else db_path()
        self.max_exchanges = max_exchanges
        self.max_bytes = max_bytes
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._sort_plans: dict[str, bool] = {}
        self._conn()  # fail now, with a clear message, rather than at the first put

    path: Path

    # --- connections and errors -----------------------------------------------------------

    def _error(self, exc: BaseException) -> StoreError:
        """Translate a foreign error into one line that names the file and what to do."""
        name = str(self.path)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        low = detail.lower()
        if "not a database" in low or "malformed" in low or "file is encrypted" in low:
            return StoreError(f"{name} is not a devtunnel database ({detail}); move it away or pass --db")
        if "locked" in low or "busy" in low:
            return StoreError(f"{name} is locked by another process ({detail}); close it or pass --db")
        if "readonly" in low or "read-only" in low:
            return StoreError(f"{name} is read-only ({detail}); fix its permissions or pass --db")
        if "unable to open" in low:
            return StoreError(
                f"cannot open {name} ({detail}); check that its folder exists and is writable, or pass --db"
            )
        if "full" in low:
            return StoreError(f"{name}: the disk is full ({detail}); free some space or pass --db")
        return StoreError(f"{name}: {detail}")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._open()
        self._local.conn = conn
        return conn

    def _open(self) -> sqlite3.Connection:
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a database file; pass --db with a file path")
        if self.readonly and not self.path.exists():
            raise StoreError(f"{self.path} does not exist; record some traffic first or pass --db")
        if not self.readonly:
            folder = self.path.parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder {folder} ({exc.strerror}); pass --db with a writable path"
                ) from exc
            # SQLite would open a read-only file read-only without a word and fail at the first
            # write; WAL also needs to create files next to the database.
            if self.path.exists() and not os.access(self.path, os.W_OK):
                raise StoreError(f"{self.path} is read-only; fix its permissions or pass --db")
            if not os.access(folder, os.W_OK | os.X_OK):
                raise StoreError(f"cannot write in the folder {folder} (permission denied); "
                                 "fix its permissions or pass --db")
        uri = f"file:{quote(str(self.path.absolute()))}?mode={'ro' if self.readonly else 'rwc'}"
        try:
            return self._connect(uri)
        except sqlite3.Error as exc:
            # A WAL database in a folder we cannot write has no -shm file to share, so SQLite
            # refuses even to read it. Nobody can be writing it through a path we cannot write
            # either (short of its owner), so read it as an immutable file.
            if not (self.readonly and "readonly" in str(exc)):
                raise self._error(exc) from exc
            try:
                return self._connect(uri + "&immutable=1")
            except sqlite3.Error as exc2:
                raise self._error(exc2) from exc2

    def _connect(self, uri: str) -> sqlite3.Connection:
        conn = sqlite3.connect(uri, uri=True, timeout=self.busy_timeout, isolation_level=None,
                               check_same_thread=False)
        try:
            conn.create_function("REGEXP", 2, _filters.regexp, deterministic=True)
            conn.create_function("dt_headers", 4, _sql_headers, deterministic=True)
            conn.create_function("dt_ip_in", 2, ip_in_sql, deterministic=True)
            # The schema check comes first: another application's file is refused before WAL,
            # a lasting change to the file, is switched on.
            with self._schema_lock:
                if not self._schema_ready:
                    self._prepare_schema(conn)
                    self._schema_ready = True
            if not self.readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
        return conn

    def _prepare_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer devtunnel (schema {version}, this one reads "
                f"{SCHEMA_VERSION}); upgrade devtunnel or pass --db"
            )
        if version == 0:
            has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if has_tables:
                raise StoreError(f"{self.path} is not a devtunnel database (it holds other tables); "
                                 "move it away or pass --db")
        elif app_id != APPLICATION_ID:
            raise StoreError(f"{self.path} is not a devtunnel database (application id {app_id}); "
                             "move it away or pass --db")
        if version == SCHEMA_VERSION:
            return
        if self.readonly:
            raise StoreError(f"{self.path} needs an upgrade that a read-only open cannot do; open it writable once")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-read under the write lock: another process may have migrated meanwhile.
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if 0 < version < SCHEMA_VERSION:
                log.warning("%s: upgrading the capture database from schema %d to %d (once; a large one "
                            "takes a while)", self.path, version, SCHEMA_VERSION)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in _split_script(_MIGRATIONS[target]):
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise self._error(exc) from exc

    @contextmanager
    def _writing(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE takes the write lock up front, so a busy
        database waits in the busy handler instead of failing at the first write)."""
        if self.readonly:
            raise StoreError(f"{self.path} is open read-only; this needs a writable store")
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(exc, sqlite3.Error):
                raise self._error(exc) from exc
            if isinstance(exc, (UnicodeEncodeError, OverflowError, TypeError, ValueError)):
                raise StoreError(f"{self.path}: an exchange could not be stored ({exc})") from exc
            raise

    # --- writing --------------------------------------------------------------------------

    def put(self, exchange: Exchange) -> None:
        """Insert or replace one exchange (by id), then apply retention."""
        self.put_many([exchange])

    def put_many(self, exchanges: Iterable[Exchange]) -> None:
        """Insert or replace many exchanges in one transaction, then apply retention."""
        with self._writing() as conn:
            _write(conn, exchanges)
            self._retain(conn)

    def _retain(self, conn: sqlite3.Connection) -> None:
        n, total = conn.execute("SELECT n, bytes FROM stats").fetchone()
        if n > self.max_exchanges:
            conn.execute(
                "DELETE FROM exchanges WHERE id IN (SELECT id FROM exchanges ORDER BY id LIMIT ?)",
                (n - self.max_exchanges,),
            )
            n, total = conn.execute("SELECT n, bytes FROM stats").fetchone()
        while total > self.max_bytes and n > 0:
            excess = total - self.max_bytes
            doomed: list[str] = []
            freed = 0
            for ex_id, size in conn.execute("SELECT id, bytes FROM exchanges ORDER BY id LIMIT 256"):
                doomed.append(ex_id)
                freed += size
                if freed >= excess:
                    break
            _delete(conn, doomed)
            n, total = conn.execute("SELECT n, bytes FROM stats").fetchone()

    def delete(self, ids: Iterable[str]) -> int:
        """Delete these exchanges; returns how many were deleted."""
        with self._writing() as conn:
            return _delete(conn, list(ids))

    def clear(self) -> None:
        """Delete every exchange."""
        with self._writing() as conn:
            for table in ("heads", "req_bodies", "res_bodies", "ws_messages"):
                conn.execute(f"DELETE FROM {table}")
            conn.execute("DELETE FROM exchanges")

    # --- reading --------------------------------------------------------------------------

    def get(self, exchange_id: str) -> Exchange:
        """The exchange with this id (a unique prefix also works); NotFoundError otherwise."""
        with self._reading() as conn:
            full_id = self._resolve(conn, exchange_id)
            row = conn.execute(f"SELECT {_FULL_COLUMNS} FROM exchanges WHERE id = ?", (full_id,)).fetchone()
            if row is None:  # deleted between the two statements
                raise NotFoundError(f"no exchange with id {exchange_id}")
            return self._build(conn, row)

    def _resolve(self, conn: sqlite3.Connection, prefix: str) -> str:
        if not prefix:
            raise NotFoundError("no exchange id given")
        if conn.execute("SELECT 1 FROM exchanges WHERE id = ?", (prefix,)).fetchone():
            return prefix
        found: list[str] = []
        matches = 0
        for p in {prefix, prefix.upper(), prefix.lower()}:
            # A range on the primary key instead of LIKE: no wildcards, and it uses the index.
            bounds = (p, p + "\U0010ffff")
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM exchanges WHERE id >= ? AND id < ? ORDER BY id LIMIT 3", bounds)]
            found += ids
            if len(ids) > 1:
                matches += conn.execute("SELECT count(*) FROM exchanges WHERE id >= ? AND id < ?", bounds).fetchone()[0]
            else:
                matches += len(ids)
        if not found:
            raise NotFoundError(f"no exchange with id {prefix}")
        if matches > 1:
            some = ", ".join(sorted(found)[:3]) + (", ..." if matches > 3 else "")
            raise NotFoundError(f"the id prefix {prefix} is ambiguous: {matches} matches ({some}); type more of it")
        return found[0]

    def short_ids(self, ids: Iterable[str], minimum: int = MIN_SHORT) -> dict[str, str]:
        """The shortest prefix of each id that no other stored id starts with, at least ``minimum`` long.

        What ``devtunnel requests`` prints: like git's abbreviated hashes, a prefix may need to grow
        when more exchanges of the same second are stored later.
        """
        wanted = list(ids)
        with self._reading() as conn:
            if len(wanted) > _SHORT_IDS_BY_QUERY:
                every = [r[0] for r in conn.execute("SELECT id FROM exchanges ORDER BY id")]

                def around(exchange_id: str) -> tuple[str, str | None, str | None]:
                    at = bisect.bisect_left(every, exchange_id)
                    after = at + 1 if at < len(every) and every[at] == exchange_id else at
                    return exchange_id, every[at - 1] if at else None, every[after] if after < len(every) else None
            else:
                def around(exchange_id: str) -> tuple[str, str | None, str | None]:
                    before = conn.execute("SELECT max(id) FROM exchanges WHERE id < ?", (exchange_id,)).fetchone()[0]
                    after = conn.execute("SELECT min(id) FROM exchanges WHERE id > ?", (exchange_id,)).fetchone()[0]
                    return exchange_id, before, after

            return short_ids([around(i) for i in wanted], minimum)

    def query(self, filter: object = None, *, limit: int | None = None, offset: int = 0,
              newest_first: bool = False) -> list[Exchange]:
        """Full exchanges matching ``filter``."""
        sql, params = self._select(_FULL_COLUMNS, filter, limit, offset, newest_first)
        with self._reading() as conn:
            return [self._build(conn, row) for row in conn.execute(sql, params).fetchall()]

    def rows(self, filter: object = None, *, limit: int | None = None, offset: int = 0,
             newest_first: bool = False) -> list[Row]:
        """Light rows matching ``filter`` (fast: no bodies are read)."""
        sql, params = self._select(_ROW_COLUMNS, filter, limit, offset, newest_first)
        with self._reading() as conn:
            return [_row(r) for r in conn.execute(sql, params)]

    def rows_by_id(self, ids: Sequence[str]) -> list[Row]:
        """Light rows for these ids, in the given order (missing ids are skipped)."""
        found: dict[str, Row] = {}
        with self._reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                marks = ", ".join("?" * len(chunk))
                for r in conn.execute(f"SELECT {_ROW_COLUMNS} FROM exchanges WHERE id IN ({marks})", chunk):
                    found[r[0]] = _row(r)
        return [found[i] for i in ids if i in found]

    def ids(self, filter: object = None) -> list[str]:
        """Every matching id, oldest first (what a virtualised list holds)."""
        sql, params = self._select("id", filter, None, 0, False)
        with self._reading() as conn:
            return [r[0] for r in conn.execute(sql, params)]

    def rows_after(self, filter: object = None, after: str | None = None, *, limit: int,
                   skip: int = 0) -> list[Row]:
        """Keyset paging: the ``limit`` matching rows just after the id ``after`` (None: the oldest),
        oldest first, passing over ``skip`` of them first. Costs the rows read, not the store's size."""
        return self._page(filter, after, limit, skip, newest_first=False)

    def rows_before(self, filter: object = None, before: str | None = None, *, limit: int,
                    skip: int = 0) -> list[Row]:
        """Keyset paging: the ``limit`` matching rows just before the id ``before`` (None: the newest),
        oldest first, passing over the ``skip`` nearest to ``before`` first."""
        return self._page(filter, before, limit, skip, newest_first=True)[::-1]

    def _page(self, filter: object, key: str | None, limit: int, skip: int, *, newest_first: bool) -> list[Row]:
        where, params = _filters.compile_filter(filter).sql()
        if key is not None:
            where, params = f"e.id {'<' if newest_first else '>'} ? AND {where}", [key, *params]
        order = "DESC" if newest_first else "ASC"
        sql = f"SELECT {_ROW_COLUMNS} FROM exchanges e WHERE {where} ORDER BY e.id {order} LIMIT ? OFFSET ?"
        params += [min(limit, _SQLITE_MAX_INT), min(skip, _SQLITE_MAX_INT)]
        with self._reading() as conn:
            if self._sorts(conn, sql, params):
                # A range on an indexed column would read every match and sort them for one page;
                # walking the table in id order stops after the page instead. (The primary key of
                # a WITHOUT ROWID table is this index; NOT INDEXED would not keep SQLite off the
                # others.)
                sql = sql.replace("FROM exchanges e WHERE", f"FROM exchanges e INDEXED BY {_ID_ORDER} WHERE", 1)
            return [_row(r) for r in conn.execute(sql, params)]

    def _sorts(self, conn: sqlite3.Connection, sql: str, params: list[object]) -> bool:
        """Whether SQLite would sort the result of ``sql`` (remembered per statement text)."""
        plans = self._sort_plans
        if sql not in plans:
            if len(plans) > 256:
                plans.clear()
            plan = conn.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall()
            plans[sql] = any("TEMP B-TREE" in str(step[-1]) for step in plan)
        return plans[sql]

    def matching_rows(self, ids: Sequence[str], filter: object = None) -> list[Row]:
        """Light rows of those of ``ids`` that match ``filter``, oldest first (missing ids skipped)."""
        where, params = _filters.compile_filter(filter).sql()
        found: list[Row] = []
        with self._reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                marks = ", ".join("?" * len(chunk))
                sql = f"SELECT {_ROW_COLUMNS} FROM exchanges e WHERE e.id IN ({marks}) AND {where}"
                found += [_row(r) for r in conn.execute(sql, [*chunk, *params])]
        found.sort(key=lambda row: row.id)
        return found

    def count_before(self, exchange_id: str, filter: object = None) -> int:
        """How many exchanges matching ``filter`` have an id before ``exchange_id`` (its position)."""
        where, params = _filters.compile_filter(filter).sql()
        with self._reading() as conn:
            return int(conn.execute(f"SELECT count(*) FROM exchanges e WHERE e.id < ? AND {where}",
                                    [exchange_id, *params]).fetchone()[0])

    def count_estimate(self, filter: object = None, *, sample: int = 5_000) -> tuple[int, bool]:
        """How many exchanges match, at once: ``(count, exact)``.

        Without a filter the count is exact (kept by triggers). With one, the share of matches
        among the newest ``sample`` exchanges scales the total (exact when the store is no larger).
        """
        flt = _filters.compile_filter(filter)
        with self._reading() as conn:
            total = int(conn.execute("SELECT n FROM stats").fetchone()[0])
            if isinstance(flt, _filters.MatchAll):
                return total, True
            # Bodies and headers cost far more per row than columns: look at fewer of them.
            size = max(500, sample // (10 if flt.cost >= 3 else 1))
            where, params = flt.sql()
            matched = int(conn.execute(
                f"SELECT count(*) FROM (SELECT * FROM exchanges ORDER BY id DESC LIMIT ?) e WHERE {where}",
                [size, *params]).fetchone()[0])
        if total <= size:
            return matched, True
        return round(matched * total / size), False

    def count(self, filter: object = None) -> int:
        """How many exchanges match."""
        flt = _filters.compile_filter(filter)
        with self._reading() as conn:
            if isinstance(flt, _filters.MatchAll):
                return int(conn.execute("SELECT n FROM stats").fetchone()[0])
            where, params = flt.sql()
            return int(conn.execute(f"SELECT count(*) FROM exchanges e WHERE {where}", params).fetchone()[0])

    def total_bytes(self) -> int:
        """The bytes counted against ``max_bytes`` (blobs plus a fixed overhead per exchange)."""
        with self._reading() as conn:
            return int(conn.execute("SELECT bytes FROM stats").fetchone()[0])

    def close(self) -> None:
        """Close this thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # --- helpers --------------------------------------------------------------------------

    def _select(self, columns: str, filter: object, limit: int | None, offset: int,
                newest_first: bool) -> tuple[str, list[object]]:
        where, params = _filters.compile_filter(filter).sql()
        sql = f"SELECT {columns} FROM exchanges e WHERE {where} ORDER BY e.id {'DESC' if newest_first else 'ASC'}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            # SQLite integers stop at 2**63 - 1; a larger limit or offset asked for means the same.
            params = [*params, -1 if limit is None else min(limit, _SQLITE_MAX_INT), min(offset, _SQLITE_MAX_INT)]
        return sql, params

    def _build(self, conn: sqlite3.Connection, r: tuple[object, ...]) -> Exchange:
        (ex_id, tunnel, started_at, method, _text, _host, status, duration, _size, error, replay_of,
         websocket, edited, rule_index, rule_action, rule_scope, resigned, scheme, ttfb, has_response, target, remote_addr, target_url, error_message,
         ws_close_code, req_version, req_body_size, req_truncated, res_version, res_reason,
         res_body_size, res_truncated) = r[:-len(_WEBHOOK_COLUMNS)]
        heads = conn.execute("SELECT req, res FROM heads WHERE id = ?", (ex_id,)).fetchone() or (b"", None)
        bodies = conn.execute("SELECT req, res FROM bodies WHERE id = ?", (ex_id,)).fetchone() or (b"", None)
        request = Request(
            headers=Headers(decode_headers(heads[0])),
            body=bodies[0],
            body_size=req_body_size,  # type: ignore[arg-type]
            body_truncated=bool(req_truncated),
            http_version=req_version,  # type: ignore[arg-type]
            method=method,  # type: ignore[arg-type]
            target=target,  # type: ignore[arg-type]
        )
        response = None
        if has_response:
            response = Response(
                headers=Headers(decode_headers(heads[1] or b"")),
                body=bodies[1] or b"",
                body_size=res_body_size,  # type: ignore[arg-type]
                body_truncated=bool(res_truncated),
                http_version=res_version,  # type: ignore[arg-type]
                status=status,  # type: ignore[arg-type]
                reason=res_reason,  # type: ignore[arg-type]
            )
        messages = [
            WsMessage(sender=s, opcode=o, time=t, payload=p, size=n)
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
        )


def _row(r: tuple[object, ...]) -> Row:
    return Row(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], bool(r[11]),  # type: ignore[arg-type]
               bool(r[12]), _verdict(r[-len(_WEBHOOK_COLUMNS):]), _rule_mark(r[13], r[14], r[15]),
               r[16] if isinstance(r[16], str) else None)


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


_FIRST_DELIVERY = ("SELECT id FROM exchanges WHERE wh_delivery = ? AND wh_provider = ? AND replay_of IS NULL "
                   "ORDER BY id LIMIT 1")
# The index on (wh_delivery, wh_provider) holds the id too, in order: the first is one step away.
_POINT_LATER_AT = ("UPDATE exchanges SET wh_duplicate_of = ?3 WHERE wh_delivery = ?1 AND wh_provider = ?2 "
                   "AND replay_of IS NULL AND id > ?3 AND wh_duplicate_of IS NOT ?3")


def _mark_duplicates(conn: sqlite3.Connection, exchanges: Iterable[Exchange]) -> None:
    """Point the deliveries just written at the first stored one of their provider and delivery id.

    Usually the first was stored long ago and only the new rows change. When a delivery is
    written after a later one of the same id (ids follow arrival, writes follow the end of each
    exchange), the later ones are pointed at it.
    """
    groups: dict[tuple[str, str], list[str]] = {}
    for ex in exchanges:
        v = ex.webhook
        if v is not None and v.delivery_id and ex.replay_of is None:
            groups.setdefault((v.delivery_id, v.provider), []).append(ex.id)
    for (delivery, provider), ids in groups.items():
        first = conn.execute(_FIRST_DELIVERY, (delivery, provider)).fetchone()[0]
        if first in ids:
            conn.execute(_POINT_LATER_AT, (delivery, provider, first))
        else:
            for start in range(0, len(ids), 500):
                chunk = ids[start:start + 500]
                conn.execute(f"UPDATE exchanges SET wh_duplicate_of = ? WHERE id IN ({', '.join('?' * len(chunk))})",
                             [first, *chunk])


def _rule_mark(index: object, action: object, scope: object) -> RuleMark | None:
    if not isinstance(index, int) or not isinstance(action, str):
        return None
    return RuleMark(index, action, scope if isinstance(scope, str) else "tunnel")


def _write(conn: sqlite3.Connection, exchanges: Iterable[Exchange]) -> None:
    """Upsert exchanges: a few many-row statements per table (a later version of an id wins)."""
    latest = {ex.id: ex for ex in exchanges}
    summaries: list[tuple[object, ...]] = []
    heads: list[tuple[object, ...]] = []
    bodies: list[tuple[str, bytes, bytes | None]] = []
    messages: list[tuple[object, ...]] = []
    for ex in latest.values():
        req, res = ex.request, ex.response
        req_heads = encode_headers(req.headers)
        res_heads = encode_headers(res.headers) if res is not None else None
        blob_bytes = (len(req_heads) + len(req.body) + len(req.target)
                      + (len(res_heads or b"") + len(res.body) if res is not None else 0)
                      + sum(len(m.payload) for m in ex.ws_messages))
        summaries.append((
            ex.id, ex.tunnel, ex.started_at, req.method, req.url_text, req.path, req.host, ex.scheme,
            ex.status, ex.duration, ex.ttfb, ex.size, ex.error, ex.replay_of, int(bool(ex.websocket)),
            int(res is not None), _ROW_OVERHEAD + blob_bytes, req.target, ex.remote_addr, ex.target_url,
            ex.error_message, ex.ws_close_code, req.http_version, req.body_size, int(req.body_truncated),
            None if res is None else res.http_version, None if res is None else res.reason,
            None if res is None else res.body_size, None if res is None else int(res.body_truncated),
            int(ex.edited), None if ex.rule is None else ex.rule.index, None if ex.rule is None else ex.rule.action,
            None if ex.rule is None else ex.rule.scope, ex.resigned,
            *_webhook_values(ex),
        ))
        heads.append((ex.id, req_heads, res_heads))
        bodies.append((ex.id, bytes(req.body), None if res is None else bytes(res.body)))
        messages += [(ex.id, i, m.sender, m.opcode, m.time, m.size, bytes(m.payload))
                     for i, m in enumerate(ex.ws_messages)]
    _execute_rows(conn, "upsert", summaries)
    _mark_duplicates(conn, latest.values())
    _execute_rows(conn, "heads", heads)
    large: list[tuple[str, str, bytes]] = []
    req_rows: list[tuple[object, ...]] = []
    res_rows: list[tuple[object, ...]] = []
    for ex_id, req_body, res_body in bodies:
        for side, body, rows in (("req", req_body, req_rows), ("res", res_body, res_rows)):
            if body is None:
                continue
            if len(body) > _LARGE_BODY:
                large.append((ex_id, side, body))
            else:
                rows.append((ex_id, body))
    _execute_rows(conn, "req_bodies", req_rows)
    _execute_rows(conn, "res_bodies", res_rows)
    # A newer version of an exchange without a response leaves no older response body behind.
    _execute_rows(conn, "unres", [(row[0],) for row in bodies if row[2] is None])
    for ex_id, side, body in large:
        _write_large_body(conn, ex_id, side, body)
    _execute_rows(conn, "unmessage", [(i,) for i in latest])
    if messages:
        _execute_rows(conn, "messages", messages)


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
_ROW_STATEMENTS: dict[str, tuple[str, str, int]] = {
    "upsert": (
        f"INSERT INTO exchanges ({', '.join(_INSERT_COLUMNS)}) VALUES ",
        " ON CONFLICT(id) DO UPDATE SET " + ", ".join(f"{c} = excluded.{c}" for c in _INSERT_COLUMNS[1:]),
        len(_INSERT_COLUMNS),
    ),
    "heads": ("INSERT OR REPLACE INTO heads (id, req, res) VALUES ", "", 3),
    "req_bodies": ("INSERT OR REPLACE INTO req_bodies (id, body) VALUES ", "", 2),
    "res_bodies": ("INSERT OR REPLACE INTO res_bodies (id, body) VALUES ", "", 2),
    "unres": ("DELETE FROM res_bodies WHERE id IN (", ")", 0),
    "unmessage": ("DELETE FROM ws_messages WHERE id IN (", ")", 0),
    "messages": ("INSERT INTO ws_messages (id, seq, sender, opcode, time, size, payload) VALUES ", "", 7),
}
# Rows per statement: a batch is cut into these sizes, largest first, so the few statement
# texts stay in sqlite3's statement cache.
_ROWS_PER_STATEMENT = (256, 128, 64, 32, 16, 8, 4, 2, 1)


@functools.cache
def _rows_sql(kind: str, rows: int) -> str:
    head, tail, width = _ROW_STATEMENTS[kind]
    group = "?" if width == 0 else "(" + ", ".join("?" * width) + ")"
    return head + ", ".join([group] * rows) + tail


def _execute_rows(conn: sqlite3.Connection, kind: str, rows: list[tuple[object, ...]]) -> None:
    """Like ``executemany``, but many rows per statement.

    sqlite3 lets go of the GIL around every statement it steps; ``executemany`` steps once per
    row, and each time the writer thread must win the GIL back from the event loop. A statement
    of up to 256 rows costs that once.
    """
    start, total = 0, len(rows)
    for size in _ROWS_PER_STATEMENT:
        while total - start >= size:
            params = [value for row in rows[start : start + size] for value in row]
            conn.execute(_rows_sql(kind, size), params)
            start += size


def _delete(conn: sqlite3.Connection, ids: list[str]) -> int:
    deleted = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        cur = conn.execute(f"DELETE FROM exchanges WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
        deleted += cur.rowcount
    return deleted


def _split_script(script: str) -> list[str]:
    """Statements of a migration script (triggers hold ';' inside BEGIN ... END)."""
    statements: list[str] = []
    current = ""
    for line in script.strip().splitlines():
        current += line + "\n"
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements
