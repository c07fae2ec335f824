"""The capture store's SQLite schema, and the migrations that bring an older file up to it.

Layout (``PRAGMA user_version`` is the schema version; ``application_id`` marks our files)::

    exchange_rows  one small row per exchange: every summary field, no blobs (WITHOUT ROWID,
                   clustered by id, so list views and filters scan little and in id order), and
                   the run that recorded it (schema 12; NULL: not known)
    exchanges      a view of exchange_rows, for an older devtunnel still running on the file
                   (it reads through it; a write is refused: version 9 below)
    heads          id -> request and response header blobs (compact, exact bytes)
    req_bodies     id -> request body     (one table per side, each body the last column of its
    res_bodies     id -> response body     row: SQLite builds a zero-filled blob that is not in
                                           memory, so a large body is written in pieces)
    bodies         a view: id -> request and response body (one row per exchange; an empty
                   request body has no row in req_bodies and reads as x'')
    ws_messages    (id, seq) -> one WebSocket message
    stats          one row: how many exchanges and how many bytes (kept by ``capture.rows``
                   and ``capture.store`` as they write and delete, and by a trigger for an
                   exchange updated in place: retention never scans the table)
    runs           run -> the agent process (machine, pid, start time) of a recorder, and when it
                   was last seen (``capture.runs``)
    in_flight      id -> the run that stored the exchange unfinished and has not finished it yet

The ``wh_*`` columns of ``exchange_rows`` hold the webhook verdict (schema 4; written by
``capture.rows``). ``res`` columns are NULL exactly when the exchange has no response.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from devtunnel.errors import StoreError

__all__ = ["SCHEMA_VERSION", "APPLICATION_ID", "UpgradeNeeded", "prepare_schema"]

log = logging.getLogger("devtunnel.capture")

SCHEMA_VERSION = 12
APPLICATION_ID = 0x64746E6C  # "dtnl"

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

# Version 8: the recorder's writes and retention's deletes cost less. The insert and delete
# triggers ran a program per row (the stats update; four deletes of the exchange's other rows):
# the writer counts the exchanges it inserts once per transaction, and deletes the other rows
# of the exchanges it deletes by range or by id (``capture.store``). An empty request body has no
# row, so the view has a row for each exchange and reads each side by a lookup (only the side a
# filter asks for is read, as fast as the join it replaces); files of earlier versions keep their
# empty rows, which read the same. Nothing is rewritten: the upgrade is instant.
_SCHEMA_V8 = """
DROP TRIGGER IF EXISTS exchanges_insert;
DROP TRIGGER IF EXISTS exchanges_delete;
DROP VIEW bodies;
CREATE VIEW bodies (id, req, res) AS
    SELECT e.id, coalesce((SELECT body FROM req_bodies WHERE id = e.id), x''),
           (SELECT body FROM res_bodies WHERE id = e.id) FROM exchanges e;
"""

# Version 9: a devtunnel of an earlier version still running on the file when a newer one upgrades
# it cannot write it any more. Such a process checked the schema once, when it opened the file, and
# goes on with its own statements: from schema 7, an insert counted by the trigger that version 8
# dropped, deletes whose trigger counted them out and removed the exchange's other rows. Its
# exchanges went in uncounted, and ``stats`` (the total shown, what retention prunes) drifted for
# good. Every write transaction of theirs writes ``exchanges``; that name is now a view, which
# SQLite refuses to modify ("cannot modify exchanges because it is a view"), so the transaction
# rolls back whole: the old recorder logs each exchange it could not store ("dropped exchange ID:
# ... cannot modify exchanges because it is a view"). Their reads go through the view unchanged
# (except a page by ``INDEXED BY`` the old primary key's name). A trigger keeping the count for
# them instead would cost every exchange this version writes and deletes a trigger program (about
# 5,800 instructions in a test of insert and delete triggers whose WHEN was false;
# ``docs/architecture.md``); the view costs nothing: the table is renamed, nothing is rewritten.
_SCHEMA_V9 = """
ALTER TABLE exchanges RENAME TO exchange_rows;
CREATE VIEW exchanges AS SELECT * FROM exchange_rows;
"""

# Version 10: which agent run holds each exchange stored unfinished, and when each run was last
# seen, so that the exchanges of an agent killed outright are ended by whoever finds it gone
# (``capture.runs``). Two new tables; nothing is rewritten. Exchanges stored unfinished before the
# upgrade have no owner on record and are left as they are. An agent of schema 9 still running on
# the file goes on writing ``exchange_rows`` as before; it claims nothing.
_SCHEMA_V10 = """
CREATE TABLE runs (run TEXT PRIMARY KEY, machine TEXT NOT NULL, pid INTEGER NOT NULL, start INTEGER,
                   seen_at REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE in_flight (id TEXT PRIMARY KEY, run TEXT NOT NULL) WITHOUT ROWID;
CREATE INDEX in_flight_run ON in_flight (run);
"""

# Version 11: how long a request waited for the local app devtunnel runs (``--hold``) before it
# was sent, negative while it still waits (``rows.held_column``): the inspector tells a held request
# from a slow one. One nullable column: nothing is rewritten, and a writer of schema 10 still
# running on the file goes on writing its rows (it leaves the column NULL: never held).
_SCHEMA_V11 = """
ALTER TABLE exchange_rows ADD COLUMN held REAL;
"""

# Version 12: the agent run that recorded each exchange (``runs.Run.id``, bound with the row's other
# values: no statement more per write), so that the agent API's list and clear of its own captures
# (``scope=agent``) hold what its recorder stored, replays through its API included, and not what
# another agent recorded under the same tunnel name (two agents on one port share the name remembered
# for it). Exchanges stored before the upgrade, or without a run (an import, a replay from the command
# line), have NULL: the agent API counts those of its tunnels' names since it started as its own. The index is partial: those cost it nothing, and creating it reads the
# table once without writing a row of it. A writer of schema 11 still running on the file names its
# columns in each insert and update, so it goes on writing its rows, with no run (NULL).
_SCHEMA_V12 = """
ALTER TABLE exchange_rows ADD COLUMN run TEXT;
CREATE INDEX exchange_rows_run ON exchange_rows (run) WHERE run IS NOT NULL;
"""

_MIGRATIONS: dict[int, str] = {1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5, 6: _SCHEMA_V6,
                               7: _SCHEMA_V7, 8: _SCHEMA_V8, 9: _SCHEMA_V9, 10: _SCHEMA_V10, 11: _SCHEMA_V11,
                               12: _SCHEMA_V12}
"""Script that brings a database from version ``n - 1`` to ``n``."""


class UpgradeNeeded(StoreError):
    """A read-only open met a file of an older schema (``Store`` upgrades it when it may write it)."""


def prepare_schema(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    """Check that the file behind ``conn`` is ours (or empty) and bring it to ``SCHEMA_VERSION``.

    A read-only open checks only. Raises ``StoreError`` naming ``path``; sqlite3 errors pass
    through for the caller to translate.
    """
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"{path} was written by a newer devtunnel (schema {version}, this one reads "
            f"{SCHEMA_VERSION}); upgrade devtunnel or pass --db"
        )
    if version == 0:
        has_tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if has_tables:
            raise StoreError(f"{path} is not a devtunnel database (it holds other tables); "
                             "move it away or pass --db")
    elif app_id != APPLICATION_ID:
        raise StoreError(f"{path} is not a devtunnel database (application id {app_id}); "
                         "move it away or pass --db")
    if version == SCHEMA_VERSION:
        return
    if readonly and version == 0:  # an empty file (``touch``, a copy that failed): made ours by a first writer
        raise UpgradeNeeded(f"{path} is empty, not a devtunnel database yet, and this user cannot write it to make "
                            "one; fix its permissions or pass --db")
    if readonly:
        raise UpgradeNeeded(f"{path} is of an older devtunnel (schema {version}) and needs an upgrade to schema "
                            f"{SCHEMA_VERSION}, which this user cannot write; fix its permissions or pass --db")
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if version == 0 or "locked" not in str(exc):
            raise
        # The one transaction of an upgrade holds the lock for as long as it takes (25 s for 1 GB of
        # schema 1): "locked by another process; close it" would send the user after the wrong thing.
        raise StoreError(f"{path} is being upgraded to schema {SCHEMA_VERSION} by another devtunnel (a large file "
                         "takes a while); try again when it is done, or pass --db") from exc
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if 0 < version < SCHEMA_VERSION:
            # Schema 9 made ``exchanges`` a view, which refuses the writes of every earlier writer;
            # schema 10 only adds tables, which a schema 9 writer leaves alone, and 11 and 12 a column each.
            old_writer = ("can no longer record to it" if version < 9 else
                          "records on, but what it leaves in flight if it is killed stays so" if version < 10 else
                          "records on, but does not mark the requests it holds for its app" if version < 11 else
                          "records on, but its API's list and clear of its own captures take in those of another "
                          "agent's tunnel of the same name")
            log.warning("%s: upgrading the capture database from schema %d to %d (once; a large one "
                        "takes a while); an older devtunnel still running on it %s: restart it with "
                        "this version", path, version, SCHEMA_VERSION, old_writer)
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _split_script(_MIGRATIONS[target]):
                conn.execute(statement)
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:  # SQLite rolls back by itself on a full disk or an I/O error
            conn.execute("ROLLBACK")
        raise


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
