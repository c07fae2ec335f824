"""Fill a capture store fast: a few distinct exchanges recorded through ``Store.put_many``, then
copied under fresh ids with one ``executemany`` per table in one transaction.

The copies take every column the recorded rows have (read from the database itself), so the
store stays valid whatever columns the schema grows; only ``id`` and ``started_at`` change.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from devtunnel.capture.model import Exchange, new_id
from devtunnel.capture.store import Store

TEMPLATES = 1000
"""Distinct exchanges recorded through the store; the rest are copies of them."""


def fill(db: Path, rows: int, make: Callable[[int, float], Exchange], *, max_exchanges: int = 1_000_000,
         rate: float = 100.0) -> None:
    """Store ``rows`` exchanges in ``db``, ``rate`` a second ending now; number n copies ``make(n % TEMPLATES)``."""
    start = time.time() - rows / rate
    store = Store(db, max_exchanges=max(max_exchanges, rows))
    templates = [make(n, start) for n in range(min(rows, TEMPLATES))]
    store.put_many(templates)
    store.close()
    if rows <= TEMPLATES:
        return
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        conn.execute("BEGIN")
        # Indexes are built once at the end, from sorted data, rather than kept up row by row.
        indexes = conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL").fetchall()
        for name, _ in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        template_ids = [t.id for t in templates]
        ids = [new_id(start + n / rate) for n in range(rows)]
        # The templates took the first places (made with the same clock); copies follow them.
        for table in ("exchange_rows", "heads", "req_bodies", "res_bodies"):
            columns = [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]
            source = {r[0]: r for r in conn.execute(f"SELECT {', '.join(columns)} FROM {table}")}
            at = columns.index("started_at") if "started_at" in columns else -1
            marks = ", ".join("?" * len(columns))
            sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"

            def copies(source=source, at=at):  # type: ignore[no-untyped-def]
                for n in range(len(template_ids), rows):
                    row = source.get(template_ids[n % len(template_ids)])
                    if row is None:
                        continue
                    row = list(row)
                    row[0] = ids[n]
                    if at >= 0:
                        row[at] = start + n / rate
                    yield row

            conn.executemany(sql, copies())
        for _, sql in indexes:
            conn.execute(sql)
        # The store counts what it writes itself (schema 8): these copies are counted here.
        conn.execute("UPDATE stats SET n = (SELECT count(*) FROM exchange_rows), "
                     "bytes = (SELECT coalesce(sum(bytes), 0) FROM exchange_rows)")
        conn.execute("COMMIT")
    finally:
        conn.close()
