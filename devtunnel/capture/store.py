"""The SQLite store of captured exchanges (WAL mode; many readers, one writer).

The file's layout and its migrations are in ``capture.schema``; how an exchange becomes rows and
back is in ``capture.rows``. This module holds the connections, the transactions, retention and
the queries (filters, keyset paging, counts, id prefixes).
"""

from __future__ import annotations

import bisect
import errno
import itertools
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal
from urllib.parse import quote

try:
    import resource
except ImportError:  # Windows: no file size limit of this kind
    resource = None  # type: ignore[assignment]

from devtunnel.capture import filters as _filters
from devtunnel.capture import runs as _runs
from devtunnel.capture.filters.edge import ip_in_sql
from devtunnel.capture.model import Exchange
from devtunnel.capture.runs import Run
from devtunnel.capture.rows import (
    FULL_COLUMNS, ROW_COLUMNS, Row, first_deliveries, read_exchange, sql_headers, to_row, write_exchanges,
)
from devtunnel.capture.schema import UpgradeNeeded, prepare_schema
from devtunnel.errors import NotFoundError, StoreError
from devtunnel.values.exchange_ids import MIN_SHORT, short_ids
from devtunnel.values.paths import PRIVATE_FILE_MODE, db_path, make_private_folder

__all__ = ["DEFAULT_MAX_EXCHANGES", "DEFAULT_MAX_BYTES", "RETENTION_RUN", "WAL_KEPT", "Store", "file_identity", "path_mode"]

DEFAULT_MAX_EXCHANGES = 100_000
DEFAULT_MAX_BYTES = 2 * 1024 * 1024 * 1024
RETENTION_RUN = 64
"""Past a limit, retention deletes the oldest down to the limit less ``1 / RETENTION_RUN`` of it
(1,562 below 100,000 exchanges; 32 MiB below 2 GiB), not to the limit itself: at the limit a
write transaction deletes once every 16 batches of 100 instead of with each one (retention's
read of the oldest, its range delete per table and its ``stats`` update, each statement a GIL
release in the agent). The store never holds more than its limits. A run is at most
``_RUN_EXCHANGES`` exchanges and ``_RUN_BYTES`` bytes below the limit, so that no write
transaction of a large store spends long deleting."""
_RUN_EXCHANGES = 2_048
_RUN_BYTES = 32 * 1024 * 1024
_SQLITE_MAX_INT = 2**63 - 1
WAL_KEPT = 64 * 1024 * 1024
"""Bytes of the ``-wal`` file kept on disk once SQLite has folded it into the database and starts it
over (``PRAGMA journal_size_limit``). The log grows to the largest transaction, and much further
while another program keeps a read open (every commit meanwhile is appended); without a limit
SQLite reuses the file from its start but keeps it at its largest until the last connection
closes: hundreds of MB for as long as the agent runs."""
QUERY_REGEX_BUDGET = 10.0
"""Seconds from its start after which a query runs no more filter regexes (each search:
``filters.REGEX_TIMEOUT``): one that would stops with ``FilterTimeoutError``."""
CLEAR_RUN = 5_000
"""Exchanges ``clear`` deletes in one write transaction (about 40 ms at a million; the whole store
in one held the recorder's writes back 2.5 s)."""
BLOBS_PER_CONNECTION = 256
"""Blobs a thread's connection opens (the writer: one per body over 256 KiB) before it is opened
again. CPython's sqlite3 keeps a weak reference to every blob a connection opened, dead ones
too, until the connection closes (python/cpython#144424): an agent's writer, whose connection
lives as long as the agent, grew by one for each large body it recorded. Opening it again costs
a few statements once per 64 MiB or more written."""
_ID_ORDER = "sqlite_autoindex_exchange_rows_1"
"""SQLite's name for the primary key of ``exchange_rows``: the table itself, in id order."""
_SHORT_IDS_BY_QUERY = 256
"""Up to this many ids, ``short_ids`` asks the index for each one's neighbours; past it, reading
the stored ids from the first one's neighbour to the last one's once is faster than two queries
per id (when they are at most ``_SHORT_IDS_SPAN`` times as many). It read every id of the store:
100 MB and 0.4 s for the newest 1,000 of a million (``devtunnel requests -n 1000``)."""
_SHORT_IDS_SPAN = 32
"""Stored ids read per id asked for, at most, before ``short_ids`` asks for each one's neighbours."""
GONE_EVERY = 5.0
"""Seconds between two looks of a store's reads at whether an agent run with exchanges in flight is
gone (``end_gone_runs``); the first read looks at once."""

INDEX_EVERY = 1.0
"""Seconds between two looks of a read-only store's reads at whether its ``-shm`` was deleted or
replaced (``Store.follow_companions``)."""


class Store:
    """Captured exchanges in one SQLite file.

    ``Store(path)`` creates the file (and its folder) if needed. Every sqlite3 error is raised
    as ``StoreError`` with a one-line message naming the file and what to do. Thread-safe: one
    connection per thread. ``filter`` arguments are a filter expression string or a compiled
    ``devtunnel.capture.filters.Filter``; ``None`` matches everything. Order is by id (oldest
    first) unless ``newest_first``. A query whose filter regex takes too long (one search more
    than ``filters.REGEX_TIMEOUT``, all of them more than ``QUERY_REGEX_BUDGET``) raises
    ``FilterTimeoutError``.
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
            max_exchanges: keep at most this many exchanges; the oldest go first, down to
                ``1 / RETENTION_RUN`` of the limit below it (so deletes come in runs; at most
                2,048 below it).
            max_bytes: keep at most about this many bytes of captures; the oldest go first, as
                for ``max_exchanges``.
            readonly: open for reading only (never creates or migrates).
            busy_timeout: seconds to wait for another process's lock before failing.
        """
        self.path = Path(path) if path is not None else db_path()
        self.max_exchanges = max_exchanges
        self.max_bytes = max_bytes
        self.readonly = readonly
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._open_conns: dict[int, tuple[threading.Thread, sqlite3.Connection]] = {}
        """Every thread's connection, by thread id (``_close_all``); those of threads that ended are
        closed when another is opened."""
        self._conns_lock = threading.Lock()
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._sort_plans: dict[str, bool] = {}
        self._generation = 0
        """Bumped when ``follow_path`` moves to another file: each thread's connection opens again."""
        self._file: tuple[int, int] | None = None
        """The device and inode of the file the connections have open (None: unknown)."""
        self._companions: tuple[tuple[int, int] | None, ...] = ()
        """The identities of that file's ``-wal`` and ``-shm`` (None: not there)."""
        self._claimed: set[str] = set()
        self._remaking = False
        """``_start_afresh`` is opening the cut file again (``_open`` lets it)."""
        self._afresh = False
        """Made a new empty store after its file was cut to 0 bytes, and that file is still 0 bytes
        (the new pages in the ``-wal`` until a checkpoint may fold them in)."""
        """Ids this store wrote unfinished for a run (``put_many(run=...)``) and not finished since."""
        self._next_gone_look = 0.0  # when a read looks for gone runs again (``GONE_EVERY``)
        self._next_index_look = 0.0  # when a read-only store's read looks at its -shm again (``INDEX_EVERY``)
        self._note_file()  # fail now, with a clear message, rather than at the first put

    path: Path

    # --- connections and errors -----------------------------------------------------------

    def _error(self, exc: BaseException) -> StoreError:
        """Translate a foreign error into one line that names the file and what to do."""
        name = str(self.path)
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        low = detail.lower()
        if "malformed" in low:
            return StoreError(f"{name} is damaged ({detail}); move it away or pass --db")
        if "not a database" in low or "file is encrypted" in low:
            return StoreError(f"{name} is not a devtunnel database ({detail}); move it away or pass --db")
        if "locked" in low or "busy" in low:
            return StoreError(f"{name} is locked by another process ({detail}); close it or pass --db")
        if "readonly" in low or "read-only" in low:
            return StoreError(f"{name} is read-only ({detail}); fix its permissions or pass --db")
        if "unable to open" in low:
            return StoreError(
                f"cannot open {name} ({detail}); check that its folder exists and is writable, or pass --db"
            )
        if "full" in low or ("disk i/o" in low and _disk_full(self.path.parent)):
            return StoreError(f"{name}: the disk is full ({detail}); free some space or pass --db")
        if "disk i/o" in low and _now_read_only(self.path):
            # Its file system went read-only under it (ext4's errors=remount-ro after a disk error,
            # ``mount -o remount,ro``): SQLite says no more than "disk I/O error".
            return StoreError(f"{name} is on a file system that is now read-only ({detail}); remount it read-write "
                              "or pass --db with a writable path")
        if "disk i/o" in low:
            return StoreError(self._io_error(detail))
        return StoreError(f"{name}: {detail}")

    def _io_error(self, detail: str) -> str:
        """What a "disk I/O error" most likely means. SQLite says no more: a write refused for the
        process's file size limit (EFBIG), a disk quota (EDQUOT) and a failing disk all read alike
        (and a full disk, when it made the ``-shm`` file: ``_error`` looks at the free space first)."""
        limit = _file_size_limit()
        if limit is not None:
            sizes = [0]
            for path in (self.path, *self._companion_paths()):
                with suppress(OSError):
                    sizes.append(path.stat().st_size)
            if max(sizes) + _GROWTH >= limit:
                return (f"{self.path}: the file size limit of this process ({limit} bytes, ulimit -f) stops it from "
                        f"growing ({detail}); raise the limit or pass --db")
        return (f"{self.path}: a read or write failed ({detail}): the disk may be over a quota, failing or gone; "
                "check it or pass --db")

    def _conn(self) -> sqlite3.Connection:
        local = self._local
        conn: sqlite3.Connection | None = getattr(local, "conn", None)
        if conn is not None:
            if local.generation == self._generation:
                return conn
            local.conn = None
            conn.close()  # on the file that was at the path before ``follow_path`` moved on
        generation = self._generation
        conn = self._open()
        local.conn, local.generation, local.blobs = conn, generation, 0
        with self._conns_lock:
            ended = [ident for ident, (thread, _) in self._open_conns.items() if not thread.is_alive()]
            stale = [self._open_conns.pop(ident)[1] for ident in ended]
            self._open_conns[threading.get_ident()] = (threading.current_thread(), conn)
        for old in stale:  # a thread's local storage went with it; its connection is let go here
            with suppress(sqlite3.Error):
                old.close()
        return conn

    def _close_all(self) -> None:
        """Close every thread's connection now (each opens again at its next use), not at its next use
        as a new generation does: SQLite shares one mapping of the ``-shm`` among all the connections
        of a process to a file, and maps the one at the path only once the last of them is closed. A
        read under way in another thread fails once."""
        with self._conns_lock:
            conns, self._open_conns = [conn for _, conn in self._open_conns.values()], {}
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()

    def _opened_blobs(self, count: int) -> None:
        """This thread's connection opened ``count`` more blobs: past ``BLOBS_PER_CONNECTION``,
        close it (its next use opens another), which lets go of what each blob left on it."""
        local = self._local
        local.blobs = getattr(local, "blobs", 0) + count
        if local.blobs >= BLOBS_PER_CONNECTION:
            self.close()

    def follow_path(self) -> Literal["deleted", "replaced", "emptied"] | None:
        """Move to the file now at the path if it is no longer the one open (one ``stat`` when not).

        For a long-lived writer (the agent) whose file is deleted (``rm captures.db*``) or
        replaced while it runs: SQLite would go on writing into the file it has open, unlinked,
        where nobody else sees it. Returns ``"deleted"`` when nothing was at the path and a new
        database was created there (as ``Store(path)`` does), ``"replaced"`` when another file is
        there and is now the one read and written, None when the path still holds the open file.
        Every thread's connection opens again at its next use. What was written between the
        change and the call went into the file left behind.

        ``"emptied"``: the open file was cut to 0 bytes (``: > captures.db``, a tool "clearing"
        it). A database in WAL mode is never 0 bytes (its first page says WAL), so it was cut
        under SQLite, whose ``-wal`` still holds pages of what was there: SQLite went on writing
        into that mix, and every program opening the file after refused it as "not a database".
        The store starts afresh in the same file (``_start_afresh``): empty, as ``Store(path)``
        makes a new one.

        Call it from one thread (the recorder's writer), every second or so.

        Raises:
            StoreError: the file now at the path is refused as ``Store(path)`` refuses it (not
                a devtunnel database, a newer schema, read-only). Every thread's reads and
                writes raise it too, until the path holds a file this store can use and
                ``follow_path`` is called again.
        """
        try:
            st = _stat(self.path)
        except OSError:
            return None  # cannot tell (a folder we may no longer search): the writes say what is wrong
        now = None if st is None else (st.st_dev, st.st_ino)
        if st is not None and now == self._file:
            if st.st_size or self.readonly:
                self._afresh = False
                return None
            if self._afresh:  # made afresh, its pages still in the -wal (a read held them): not cut again
                self._fold()
                return None
            self._start_afresh()
            return "emptied"
        # What is still in the old file's -wal goes into the old file, wherever it went: a file moved
        # away (``mv captures.db kept.db``) leaves its -wal at the path, removed below.
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and not self.readonly:
            with suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        # The old file's -wal and -shm, if still at the path (``rm captures.db`` alone, or another
        # file moved onto it), would be taken for the new file's by SQLite: they would corrupt it.
        for companion, known in zip(self._companion_paths(), self._companions):
            if known is not None and _identity(companion) == known:
                companion.unlink(missing_ok=True)
        self._companions = ()
        with self._schema_lock:
            self._schema_ready = False  # the new file is checked (or created) as at the start
        self._generation += 1
        self._note_file()  # raises StoreError for a file it refuses; the next call tries again
        return "deleted" if now is None else "replaced"

    def _start_afresh(self) -> None:
        """Make the open file, cut to 0 bytes under SQLite, a new empty store, through SQLite.

        The pages of an empty store, made in memory, are copied over the whole database (SQLite's
        backup, one write transaction: the lock, the ``-wal`` and its index stay consistent for
        every connection, in this process and others), then folded into the file. Deleting the
        ``-wal`` and ``-shm`` instead would leave the connections of other threads and programs on
        the old ones.

        Raises:
            StoreError: SQLite refused (the file is locked for longer than the busy timeout ...).
        """
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.generation != self._generation:
            # No connection of this thread on the file to copy through: every one is closed, and the
            # -wal and -shm of the old content removed (readers elsewhere follow the new -shm).
            self._generation += 1
            self._close_all()
            for companion in self._companion_paths():
                companion.unlink(missing_ok=True)
            with self._schema_lock:
                self._schema_ready = False
            self._remaking = True
            try:
                self._note_file()
            finally:
                self._remaking = False
            self._claimed.clear()
            return
        fresh = sqlite3.connect(":memory:", isolation_level=None)
        try:
            fresh.execute(f"PRAGMA page_size = {int(conn.execute('PRAGMA page_size').fetchone()[0])}")
            prepare_schema(fresh, self.path, readonly=False)
            fresh.backup(conn)
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        finally:
            fresh.close()
        self._claimed.clear()
        self._afresh = True
        # Its first page into the file now, waiting for reads of the old content to end (up to the
        # busy timeout): SQLite takes a 0-byte file for a new database, and the next connection
        # opened on it would delete the -wal that holds the new store.
        with suppress(sqlite3.Error):
            conn.execute("PRAGMA wal_checkpoint(FULL)").fetchone()
        with suppress(OSError):
            self._afresh = os.stat(self.path).st_size == 0

    def _fold(self) -> None:
        """Fold the ``-wal`` into the database as far as no read holds it (waiting for no one)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and self._local.generation == self._generation:
            with suppress(sqlite3.Error):
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def follow_companions(self) -> Literal["-wal", "-shm"] | None:
        """Open the database again, with a new ``-wal`` or ``-shm``, when the one noted at the open was
        deleted or replaced (``rm captures.db-wal``, a cleaner of temporary files); which one, when it
        did (two ``stat``).

        The ``-wal``: SQLite would go on writing into the one it has open, unlinked: what it wrote
        since would be seen by no other process (which could not even read the file: its log is gone)
        and lost with a ``kill -9``. It is folded into the database first.

        The ``-shm`` (the log's index, and the locks of its readers and writer): SQLite goes on with
        the one it has mapped, unlinked, while a program opening the file after makes a new one; a
        reader on the old one saw none of the writes made through the new one (the inspector stood
        still), and two writers on two of them do not lock each other out. A read-only store looks
        at its own (``_follow_index``, at most every ``INDEX_EVERY`` seconds of its reads).

        Every thread's connection opens again at its next use, on the new files. Call it from the
        writer's thread (the recorder's), every second or so.
        """
        known = self._companions
        if self.readonly or not known:
            return None
        wal, shm = self._companion_paths()
        if known[0] is not None and _identity(wal) != known[0]:
            which: Literal["-wal", "-shm"] = "-wal"
        elif known[1] is not None and _identity(shm) != known[1]:
            which = "-shm"
        else:
            return None
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            try:
                busy = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
            except sqlite3.Error:
                busy = 1
            if busy:
                return None  # a read holds pages of the old log: the next call tries again
        self._generation += 1
        if which == "-shm":
            # A -shm made meanwhile by another program (a reader) indexes a log this one has since
            # folded and emptied: the new one is made afresh, first, from the empty log.
            with suppress(OSError):
                shm.unlink()
            self._close_all()
        self._note_file()
        return which

    def _follow_index(self) -> None:
        """A read-only store's ``follow_companions`` for its ``-shm`` alone: open again on the one at the
        path when it is another than the one noted at the open. None there: the old one is kept (a
        reader making one could not know of the writes made through the old one meanwhile; the writer
        makes the new one, and the reader follows it then)."""
        self._next_index_look = time.monotonic() + INDEX_EVERY
        known = self._companions
        if len(known) < 2 or known[1] is None:
            return
        now = _identity(self._companion_paths()[1])
        if now is None or now == known[1]:
            return
        self._generation += 1
        self._close_all()
        self._note_file()

    def _note_file(self) -> None:
        """Open this thread's connection and note which files it has open (for ``follow_path``)."""
        try:
            # A first read makes SQLite open (and create) the -wal and -shm of a WAL database.
            self._conn().execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.Error as exc:
            raise self._error(exc) from exc
        self._file = _identity(self.path)
        self._companions = tuple(_identity(p) for p in self._companion_paths())

    def _companion_paths(self) -> list[Path]:
        return [self.path.with_name(self.path.name + suffix) for suffix in _COMPANIONS]

    def _open(self) -> sqlite3.Connection:
        mode = path_mode(self.path)
        if mode is not None and stat.S_ISDIR(mode):
            raise StoreError(f"{self.path} is a directory, not a database file; pass --db with a file path")
        if mode is not None and not stat.S_ISREG(mode):
            # A device (``--db /dev/null``), a FIFO or a socket: SQLite would fail with an I/O error
            # after making a journal beside it, or wait for good on a FIFO opened to read.
            raise StoreError(f"{self.path} is not a regular file; pass --db with a file path")
        if self.readonly and mode is None:
            raise StoreError(f"{self.path} does not exist; record some traffic first or pass --db")
        if (self.readonly or self._file is not None) and not self._remaking and cut_under_its_log(self.path):
            # Opened on it, SQLite would take it for a new database and delete the -wal that the
            # writer's connections still use: the writer makes it a new store (``follow_path``) first.
            # (A writer's first open may: a -wal left by a writer killed is nobody's.)
            raise StoreError(_CUT.format(path=self.path))
        if not self.readonly:
            folder = self.path.parent
            try:
                make_private_folder(folder)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the folder {folder} ({exc.strerror}); pass --db with a writable path"
                ) from exc
            # SQLite would open a read-only file read-only without a word and fail at the first
            # write; WAL also needs to create files next to the database.
            if mode is not None and not os.access(self.path, os.W_OK):
                if _on_read_only_mount(folder):
                    raise StoreError(f"{self.path} is on a read-only file system; pass --db with a writable path")
                raise StoreError(f"{self.path} is read-only; fix its permissions or pass --db")
            if not os.access(folder, os.W_OK | os.X_OK):
                if _on_read_only_mount(folder):
                    raise StoreError(f"cannot write in the folder {folder} (a read-only file system); "
                                     "pass --db with a writable path")
                raise StoreError(f"cannot write in the folder {folder} (permission denied); "
                                 "fix its permissions or pass --db")
        if not self.readonly:
            _create_private(self.path)
        uri = f"file:{quote(str(self.path.absolute()))}?mode={'ro' if self.readonly else 'rwc'}"
        try:
            return self._connect(uri)
        except sqlite3.Error as exc:
            # A WAL database in a folder we cannot write has no -shm file to share, so SQLite
            # refuses even to read it ("readonly" for a permission; "unable to open" on a
            # read-only file system, or an immutable folder). Nobody can be writing it through a
            # path we cannot write either (short of its owner), so read it as an immutable file.
            unwritable = "readonly" in str(exc) or not os.access(self.path.parent, os.W_OK)
            if not (self.readonly and unwritable):
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
            conn.create_function("dt_headers", 4, sql_headers, deterministic=True)
            conn.create_function("dt_ip_in", 2, ip_in_sql, deterministic=True)
            # The schema check comes first: another application's file is refused before WAL,
            # a lasting change to the file, is switched on.
            with self._schema_lock:
                if not self._schema_ready:
                    try:
                        prepare_schema(conn, self.path, readonly=self.readonly)
                    except UpgradeNeeded:
                        # devtunnel was upgraded, and a reader (``requests``, the inspector) opens
                        # the file before an agent has: upgrade it as any writer would, if we may.
                        if not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK)):
                            raise
                        if cut_under_its_log(self.path):  # not made a store here: its writer does
                            raise StoreError(_CUT.format(path=self.path)) from None
                        Store(self.path, busy_timeout=self.busy_timeout).close()
                    self._schema_ready = True
            if not self.readonly:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(f"PRAGMA secure_delete = {_AGED_OUT}")
                conn.execute(f"PRAGMA journal_size_limit = {WAL_KEPT}")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        now = time.monotonic()
        if now >= self._next_gone_look:
            self._look_for_gone_runs()
        if self.readonly and now >= self._next_index_look:
            self._follow_index()
        conn = self._conn()
        with _filters.regex_budget(QUERY_REGEX_BUDGET):
            try:
                yield conn
            except sqlite3.Error as exc:
                # A REGEXP stopped for its time bound reaches us as "user-defined function
                # raised exception": say what happened instead.
                timeout = _filters.regex_timeout()
                if timeout is not None:
                    raise timeout from exc
                raise self._error(exc) from exc

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """``_reading`` in one read transaction: every statement sees the store as at the first.
        A full exchange is read in several (its row, heads, bodies, messages); between them the
        agent's retention deleted the oldest, and ``export --filter`` failed on an exchange whose
        row had been read and whose headers were gone."""
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if conn.in_transaction:  # SQLite ends it by itself after some errors
                    conn.execute("COMMIT")

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

    def put(self, exchange: Exchange, *, run: Run | None = None) -> None:
        """Insert or replace one exchange (by id), then apply retention (``run``: as for ``put_many``)."""
        self.put_many([exchange], run=run)

    def put_many(self, exchanges: Iterable[Exchange], *, run: Run | None = None) -> None:
        """Insert or replace many exchanges in one transaction, then apply retention.

        An exchange larger than the store keeps (``max_bytes``, less what one retention run deletes
        below it) is stored with its bodies cut to fit, not deleted by the retention of its own
        write with everything older (a store of 5 MB was left empty by one 9 MB response).

        With ``run`` (the recorder's), each exchange is stored as recorded by it (``runs.RecordedBy``),
        each one stored unfinished is claimed by it, and one stored finished is released: if the
        run's process is gone before it finishes them, whoever finds it gone ends them
        (``end_gone_runs``).
        """
        batch = exchanges if run is None else list(exchanges)
        unfinished: list[str] = []
        finished: list[str] = []
        with self._writing() as conn:
            n, total, blobs = write_exchanges(conn, batch, self.max_bytes - self._bytes_run(),
                                              None if run is None else run.id)
            if run is not None:
                # Only ids claimed before are released: a batch of exchanges never seen live costs
                # no statement.
                unfinished = [ex.id for ex in batch if ex.duration is None]
                if unfinished:
                    _runs.claim(conn, run, unfinished, time.time())
                if self._claimed:
                    finished = [ex.id for ex in batch if ex.duration is not None and ex.id in self._claimed]
                    if finished:
                        _runs.release(conn, finished)
            self._retain(conn, n, total)
        if blobs:
            self._opened_blobs(blobs)
        self._claimed.update(unfinished)
        self._claimed.difference_update(finished)

    @property
    def claimed(self) -> int:
        """How many exchanges this store holds in flight for a run (``put_many(run=...)``)."""
        return len(self._claimed)

    def heartbeat(self, run: Run) -> None:
        """Say that ``run`` is alive, while it holds exchanges in flight (call it every ``runs.HEARTBEAT``
        seconds). A run taken for gone meanwhile (not seen for ``runs.LEASE`` seconds) claims them again."""
        claimed = list(self._claimed)
        if not claimed:
            return
        with self._writing() as conn:
            now = time.time()
            if not _runs.heartbeat(conn, run, now):
                _runs.claim(conn, run, claimed, now)
            elif conn.execute("SELECT 1 FROM in_flight WHERE run = ? LIMIT 1", (run.id,)).fetchone() is None:
                self._claimed.clear()  # retention or a delete took them all

    def end_gone_runs(self) -> list[str]:
        """End the exchanges in flight of every agent run that is gone (``capture.runs``): error
        ``agent_gone``, their duration up to when the run was last seen. Returns their ids.

        A read-only store does it through a connection of its own when this user may write the
        file; when it may not, or another process holds the write lock, nothing is ended (the next
        look may).
        """
        self._next_gone_look = time.monotonic() + GONE_EVERY
        with self._reading() as conn:
            if not _runs.gone_runs(conn, time.time()):
                return []
        if not self.readonly:
            with self._writing() as conn:
                return _runs.end_gone(conn, time.time())
        if not (os.access(self.path, os.W_OK) and os.access(self.path.parent, os.W_OK | os.X_OK)):
            return []
        try:
            writer = sqlite3.connect(f"file:{quote(str(self.path.absolute()))}?mode=rw", uri=True,
                                     timeout=min(self.busy_timeout, 1.0), isolation_level=None)
        except sqlite3.Error:
            return []
        try:
            writer.execute("BEGIN IMMEDIATE")
            ended = _runs.end_gone(writer, time.time())
            writer.execute("COMMIT")
            return ended
        except sqlite3.Error:
            return []  # busy, or the file is troubled: the reads say what is wrong
        finally:
            writer.close()

    def _look_for_gone_runs(self) -> None:
        """``end_gone_runs`` from a read, every ``GONE_EVERY`` seconds; a failure is the read's to tell."""
        self._next_gone_look = time.monotonic() + GONE_EVERY
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None and conn.in_transaction:
            return  # a read within this thread's write: the next read looks
        with suppress(StoreError, sqlite3.Error):
            self.end_gone_runs()

    def _retain(self, conn: sqlite3.Connection, n: int, total: int) -> None:
        """Delete the oldest exchanges past the limits (``n`` and ``total``: what ``stats`` holds)."""
        if n > self.max_exchanges:
            # One row about the doomed, not a row each: sqlite3 lets go of the GIL for every row
            # and column it reads, and in the agent each time the event loop may take it.
            excess = n - self.max_exchanges + min(self.max_exchanges // RETENTION_RUN, _RUN_EXCHANGES)
            doomed, last, size = conn.execute(_OLDEST, (excess,)).fetchone()
            if doomed:
                _delete_oldest(conn, last, doomed, size)
                n, total = n - doomed, total - size
        while total > self.max_bytes and n > 0:
            excess = total - self.max_bytes + self._bytes_run()
            doomed = freed = 0
            for last, size in conn.execute("SELECT id, bytes FROM exchange_rows ORDER BY id LIMIT 256"):
                doomed += 1
                freed += size
                if freed >= excess:
                    break
            if not doomed:
                break
            _delete_oldest(conn, last, doomed, freed)
            n, total = n - doomed, total - freed

    def _bytes_run(self) -> int:
        """Bytes below ``max_bytes`` that retention deletes down to once past it."""
        return min(self.max_bytes // RETENTION_RUN, _RUN_BYTES)

    def delete(self, ids: Iterable[str]) -> int:
        """Delete these exchanges; returns how many were deleted. What they held is overwritten
        in the file (``_overwriting``)."""
        with self._writing() as conn, _overwriting(conn):
            return _delete(conn, list(ids))

    def clear(self) -> None:
        """Delete every exchange, overwriting what they held in the file (``_overwriting``).

        The oldest go first, ``CLEAR_RUN`` at a time, each run a write transaction of its own:
        one transaction for a million held the write lock for seconds, and the agent's recorder
        waited as long. What is stored meanwhile with a later id than the newest at the start stays.
        """
        with self._reading() as conn:
            newest = conn.execute("SELECT max(id) FROM exchange_rows").fetchone()[0]
        while newest is not None:
            with self._writing() as conn, _overwriting(conn):
                doomed, last, size = conn.execute(_OLDEST_UP_TO, (newest, CLEAR_RUN)).fetchone()
                if not doomed:
                    break
                _delete_oldest(conn, last, doomed, size)
                if last >= newest and conn.execute("SELECT 1 FROM exchange_rows LIMIT 1").fetchone() is None:
                    conn.execute("UPDATE stats SET n = 0, bytes = 0")
            if last >= newest:
                break

    def clear_matching(self, flt: _filters.Filter) -> None:
        """Delete the exchanges ``flt`` matches, as ``clear`` deletes all: the oldest first,
        ``CLEAR_RUN`` in each write transaction (recording goes on between them); those stored
        meanwhile with a later id than the newest match at the start stay."""
        newest = self.rows(flt, limit=1, newest_first=True)
        if not newest:
            return
        last = newest[0].id
        cursor: str | None = None
        while cursor is None or cursor < last:  # ids only grow, up to ``last``: a bounded loop
            page = self.rows_after(flt, cursor, limit=CLEAR_RUN)
            ids = [row.id for row in page if row.id <= last]
            if not ids:
                return
            self.delete(ids)
            cursor = ids[-1]
            if len(ids) < len(page) or len(page) < CLEAR_RUN:
                return

    # --- reading --------------------------------------------------------------------------

    def get(self, exchange_id: str) -> Exchange:
        """The exchange with this id (a unique prefix also works); NotFoundError otherwise."""
        with self._snapshot() as conn:
            full_id = self._resolve(conn, exchange_id)
            row = conn.execute(f"SELECT {FULL_COLUMNS} FROM exchange_rows WHERE id = ?", (full_id,)).fetchone()
            if row is None:  # deleted between the two statements
                raise NotFoundError(f"no exchange with id {exchange_id}")
            return read_exchange(conn, row)

    def _resolve(self, conn: sqlite3.Connection, prefix: str) -> str:
        if not prefix:
            raise NotFoundError("no exchange id given")
        if conn.execute("SELECT 1 FROM exchange_rows WHERE id = ?", (prefix,)).fetchone():
            return prefix
        found: list[str] = []
        matches = 0
        for p in {prefix, prefix.upper(), prefix.lower()}:
            # A range on the primary key instead of LIKE: no wildcards, and it uses the index.
            bounds = (p, p + "\U0010ffff")
            ids = [r[0] for r in conn.execute(
                "SELECT id FROM exchange_rows WHERE id >= ? AND id < ? ORDER BY id LIMIT 3", bounds)]
            found += ids
            if len(ids) > 1:
                matches += conn.execute("SELECT count(*) FROM exchange_rows WHERE id >= ? AND id < ?", bounds).fetchone()[0]
            else:
                matches += len(ids)
        if not found:
            raise NotFoundError(f"no exchange with id {prefix}")
        if matches > 1:
            some = ", ".join(sorted(found)[:3]) + (", ..." if matches > 3 else "")
            raise NotFoundError(f"the id prefix {prefix} is ambiguous: {matches} matches ({some}); type more of it")
        return found[0]

    def first_deliveries(self, exchanges: Iterable[Exchange]) -> dict[str, str]:
        """For webhook deliveries about to be written: the id of the first capture of the same
        provider and delivery id (stored, or among ``exchanges``), by the id of each delivery that
        is a duplicate of it; what ``duplicate_of`` will say once they are written."""
        with self._reading() as conn:
            return first_deliveries(conn, exchanges)

    def short_ids(self, ids: Iterable[str], minimum: int = MIN_SHORT) -> dict[str, str]:
        """The shortest prefix of each id that no other stored id starts with, at least ``minimum`` long.

        What ``devtunnel requests`` prints: like git's abbreviated hashes, a prefix may need to grow
        when more exchanges of the same second are stored later.
        """
        wanted = list(ids)
        with self._reading() as conn:
            every = self._ids_around(conn, wanted) if len(wanted) > _SHORT_IDS_BY_QUERY else None
            if every is not None:
                def around(exchange_id: str) -> tuple[str, str | None, str | None]:
                    at = bisect.bisect_left(every, exchange_id)
                    after = at + 1 if at < len(every) and every[at] == exchange_id else at
                    return exchange_id, every[at - 1] if at else None, every[after] if after < len(every) else None
            else:
                def around(exchange_id: str) -> tuple[str, str | None, str | None]:
                    before = conn.execute("SELECT max(id) FROM exchange_rows WHERE id < ?", (exchange_id,)).fetchone()[0]
                    after = conn.execute("SELECT min(id) FROM exchange_rows WHERE id > ?", (exchange_id,)).fetchone()[0]
                    return exchange_id, before, after

            return short_ids([around(i) for i in wanted], minimum)

    @staticmethod
    def _ids_around(conn: sqlite3.Connection, wanted: list[str]) -> list[str] | None:
        """Every stored id from the one before the least of ``wanted`` to the one after the
        greatest, in order; None when they are more than ``_SHORT_IDS_SPAN`` times as many as
        ``wanted`` (matches spread thin over a large store: a lookup per id reads fewer)."""
        low, high = min(wanted), max(wanted)
        start = conn.execute("SELECT max(id) FROM exchange_rows WHERE id < ?", (low,)).fetchone()[0]
        end = conn.execute("SELECT min(id) FROM exchange_rows WHERE id > ?", (high,)).fetchone()[0]
        most = _SHORT_IDS_SPAN * len(wanted) + 2
        span = [r[0] for r in conn.execute(
            "SELECT id FROM exchange_rows WHERE id >= ? AND id <= ? ORDER BY id LIMIT ?",
            (start if start is not None else low, end if end is not None else high, most + 1))]
        return span if len(span) <= most else None

    def query(self, filter: object = None, *, limit: int | None = None, offset: int = 0,
              newest_first: bool = False) -> list[Exchange]:
        """Full exchanges matching ``filter``."""
        sql, params = self._select(FULL_COLUMNS, filter, limit, offset, newest_first)
        with self._snapshot() as conn:
            return [read_exchange(conn, row) for row in conn.execute(sql, params).fetchall()]

    def rows(self, filter: object = None, *, limit: int | None = None, offset: int = 0,
             newest_first: bool = False) -> list[Row]:
        """Light rows matching ``filter`` (fast: no bodies are read)."""
        sql, params = self._select(ROW_COLUMNS, filter, limit, offset, newest_first)
        with self._reading() as conn:
            return [to_row(r) for r in conn.execute(sql, params)]

    def rows_by_id(self, ids: Sequence[str]) -> list[Row]:
        """Light rows for these ids, in the given order (missing ids are skipped)."""
        found: dict[str, Row] = {}
        with self._reading() as conn:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start:start + 500])
                marks = ", ".join("?" * len(chunk))
                for r in conn.execute(f"SELECT {ROW_COLUMNS} FROM exchange_rows WHERE id IN ({marks})", chunk):
                    found[r[0]] = to_row(r)
        return [found[i] for i in ids if i in found]

    def start_keys(self, filter: object = None, *, limit: int | None = None) -> list[tuple[float, str]]:
        """``(started_at, id)`` of every match (the newest ``limit`` when given), oldest id first:
        what an export sorts by start time before reading the exchanges one by one."""
        sql, params = self._select("started_at, id", filter, limit, 0, limit is not None)
        with self._reading() as conn:
            keys = [(r[0], r[1]) for r in conn.execute(sql, params)]
        return keys[::-1] if limit is not None else keys

    def exchanges_by_id(self, ids: Iterable[str], *, chunk: int = 100) -> Iterator[Exchange]:
        """The full exchanges of ``ids``, in that order, read ``chunk`` at a time (each chunk in one
        snapshot); those deleted meanwhile (retention) are skipped. A million are never all in memory."""
        remaining = iter(ids)
        while pending := list(itertools.islice(remaining, chunk)):
            marks = ", ".join("?" * len(pending))
            with self._snapshot() as conn:
                sql = f"SELECT {FULL_COLUMNS} FROM exchange_rows WHERE id IN ({marks})"
                found = {ex.id: ex for ex in (read_exchange(conn, r) for r in conn.execute(sql, pending).fetchall())}
            for wanted in pending:
                if wanted in found:
                    yield found.pop(wanted)

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
        sql = f"SELECT {ROW_COLUMNS} FROM exchange_rows e WHERE {where} ORDER BY e.id {order} LIMIT ? OFFSET ?"
        params += [min(limit, _SQLITE_MAX_INT), min(skip, _SQLITE_MAX_INT)]
        with self._reading() as conn:
            if self._sorts(conn, sql, params):
                # A range on an indexed column would read every match and sort them for one page;
                # walking the table in id order stops after the page instead. (The primary key of
                # a WITHOUT ROWID table is this index; NOT INDEXED would not keep SQLite off the
                # others.)
                sql = sql.replace("FROM exchange_rows e WHERE", f"FROM exchange_rows e INDEXED BY {_ID_ORDER} WHERE", 1)
            return [to_row(r) for r in conn.execute(sql, params)]

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
                sql = f"SELECT {ROW_COLUMNS} FROM exchange_rows e WHERE e.id IN ({marks}) AND {where}"
                found += [to_row(r) for r in conn.execute(sql, [*chunk, *params])]
        found.sort(key=lambda row: row.id)
        return found

    @contextmanager
    def together(self) -> Iterator[None]:
        """The reads of this thread within the block see the store as at the first of them.

        A count and the rows it goes with, read apart, disagree while an agent records: the
        inspector counted 1,000, then read the newest rows, three of them committed after the
        count, and numbered every row three places too early from then on (a key pressed while
        traffic streamed moved the cursor three rows further than asked)."""
        with self._snapshot():
            yield

    def count_before(self, exchange_id: str, filter: object = None) -> int:
        """How many exchanges matching ``filter`` have an id before ``exchange_id`` (its position)."""
        where, params = _filters.compile_filter(filter).sql()
        with self._reading() as conn:
            return int(conn.execute(f"SELECT count(*) FROM exchange_rows e WHERE e.id < ? AND {where}",
                                    [exchange_id, *params]).fetchone()[0])

    def count_estimate(self, filter: object = None, *, sample: int = 5_000) -> tuple[int, bool]:
        """How many exchanges match, at once: ``(count, exact)``.

        Without a filter the count is exact (the ``stats`` row, kept as the store writes). With one,
        the share of matches among the newest ``sample`` exchanges scales the total (exact when the
        store is no larger).
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
                f"SELECT count(*) FROM (SELECT * FROM exchange_rows ORDER BY id DESC LIMIT ?) e WHERE {where}",
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
            return int(conn.execute(f"SELECT count(*) FROM exchange_rows e WHERE {where}", params).fetchone()[0])

    def look(self) -> tuple[int, int]:
        """How many exchanges there are, and SQLite's ``data_version`` for this thread's connection.

        ``data_version`` moves whenever another connection commits a change (an exchange added,
        ended or removed), so two looks from one thread tell whether anything changed in between,
        even when the count did not move (a request stored in flight, then ended).
        """
        with self._reading() as conn:
            total = int(conn.execute("SELECT n FROM stats").fetchone()[0])
            return total, int(conn.execute("PRAGMA data_version").fetchone()[0])

    def total_bytes(self) -> int:
        """The bytes counted against ``max_bytes`` (blobs plus a fixed overhead per exchange)."""
        with self._reading() as conn:
            return int(conn.execute("SELECT bytes FROM stats").fetchone()[0])

    def wal_bytes(self) -> int:
        """The size of the database's ``-wal`` file (0 when there is none, or it cannot be seen)."""
        try:
            return self._companion_paths()[0].stat().st_size
        except OSError:
            return 0

    def wal_held(self) -> bool:
        """Whether the ``-wal`` holds pages SQLite cannot fold into the database now (another
        connection's read began before they were written); it folds in what it can meanwhile
        (``PRAGMA wal_checkpoint(PASSIVE)``: it waits for no one)."""
        try:
            busy, logged, folded = self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error:
            return False  # the writes say what is wrong with the file
        return bool(busy) or folded < logged

    def close(self) -> None:
        """Close this thread's connection."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            with self._conns_lock:
                if self._open_conns.get(threading.get_ident(), (None, None))[1] is conn:
                    del self._open_conns[threading.get_ident()]
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
        sql = f"SELECT {columns} FROM exchange_rows e WHERE {where} ORDER BY e.id {'DESC' if newest_first else 'ASC'}"
        if limit is not None or offset:
            sql += " LIMIT ? OFFSET ?"
            # SQLite integers stop at 2**63 - 1; a larger limit or offset asked for means the same.
            params = [*params, -1 if limit is None else min(limit, _SQLITE_MAX_INT), min(offset, _SQLITE_MAX_INT)]
        return sql, params


def _disk_full(folder: Path) -> bool:
    """True when the file system of ``folder`` has less than 64 KiB free for this user (a WAL frame
    is a page; the ``-shm`` file 32 KiB)."""
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):  # gone, or no statvfs (Windows)
        return False
    return st.f_bavail * st.f_frsize < 64 * 1024


def _create_private(path: Path) -> None:
    """Create the database file for the user alone (0600) when there is none, before SQLite does
    with the umask's mode (0644: every user of the machine could read the captures). SQLite takes
    an empty file as a new database and gives its -wal and -shm the database file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return  # another process made it first, or it is there already: left as it is
    except OSError:
        return  # SQLite says what is wrong with the place, in the words the callers expect
    os.close(fd)


def _on_read_only_mount(folder: Path) -> bool:
    """True when ``folder`` is on a file system mounted read-only (no permission makes it writable)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # gone, or no statvfs (Windows)
        return False


def _now_read_only(path: Path) -> bool:
    """True when the file system holding ``path`` refuses writes now: mounted read-only, or put in
    an emergency read-only state after an error (ext4's ``errors=remount-ro``), which ``statvfs``
    does not show but opening the file for writing (no write made) does, with ``EROFS``."""
    if _on_read_only_mount(path.parent):
        return True
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)))  # a FIFO: no wait
    except OSError as exc:
        return exc.errno == errno.EROFS
    return False


_GROWTH = 1024 * 1024
"""Bytes by which a file may have been about to grow when a write failed (a WAL frame is a page)."""


def _file_size_limit() -> int | None:
    """The process's file size limit (``ulimit -f``, RLIMIT_FSIZE) in bytes; None when there is none."""
    if resource is None:
        return None
    soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    return None if soft == resource.RLIM_INFINITY else soft


_COMPANIONS = ("-wal", "-shm")
"""The files SQLite keeps next to a database in WAL mode."""


def file_identity(path: Path) -> tuple[int, int] | None:
    """The device and inode of the file at ``path`` (another file there has another); None when
    nothing is there. Any other ``OSError`` (a folder that cannot be searched) is raised: the
    caller cannot tell. The one rule by which the store and the inspector follow a database file."""
    st = _stat(path)
    return None if st is None else (st.st_dev, st.st_ino)


_CUT = ("{path} was cut to 0 bytes while its -wal holds pages (': > captures.db' under a running agent): the agent "
        "makes it a new, empty store within a second; try again then (with no agent running, remove {path}-wal)")


def cut_under_its_log(path: Path) -> bool:
    """Whether the database at ``path`` is 0 bytes while its ``-wal`` is not: cut under a program
    writing it (a database in WAL mode never is 0 bytes). SQLite opening it would take it for a new
    database and delete that ``-wal``, which the writer's connections still use."""
    try:
        return os.stat(path).st_size == 0 and os.stat(f"{path}-wal").st_size > 0
    except OSError:
        return False


def _stat(path: Path) -> os.stat_result | None:
    """``os.stat(path)``, None when nothing is there (``file_identity``'s look, with the size)."""
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None


def path_mode(path: Path) -> int | None:
    """The ``st_mode`` of what is at ``path`` (links followed); None when nothing is there (or a
    file stands where one of its folders should be). The one look at a database path before it
    is opened, by the store and by the commands that read it.

    Raises:
        StoreError: it cannot tell, said in one line with what to do: a folder above it this
            user cannot search, a name too long for the system, a loop of symbolic links.
    """
    try:
        return os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise StoreError(f"cannot reach {path} ({reason}: a folder above it cannot be searched); "
                             "fix the folder's permissions or pass --db") from exc
        if exc.errno == errno.ENAMETOOLONG:
            raise StoreError(f"cannot reach {path} ({reason}); pass --db with a shorter path") from exc
        raise StoreError(f"cannot reach {path} ({reason}); pass --db with another path") from exc


def _identity(path: Path) -> tuple[int, int] | None:
    """``file_identity``, None also when it cannot tell (for the -wal and -shm files)."""
    try:
        return file_identity(path)
    except OSError:
        return None


_AGED_OUT = "FAST"
"""``PRAGMA secure_delete`` of a writing connection: what retention and a rewritten exchange
delete is zeroed where it shares a page with what stays (a page written anyway), not in pages
that become free (they are reused by the next writes, which at the limit follow at once).
Debian's and Ubuntu's SQLite default to ``ON``, which also zeroes every page that becomes free
and writes it to the WAL: at the limit, 2 % of the recorder's instructions. SQLite itself, and
so most other builds, defaults to ``OFF``, which zeroes nothing."""


@contextmanager
def _overwriting(conn: sqlite3.Connection) -> Iterator[None]:
    """Within the block, deleted content is zeroed, free pages too (``PRAGMA secure_delete = ON``).

    For what a user deletes (``delete``, ``clear``): a capture they remove because it held a
    secret does not stay in the file's free pages, whatever the platform's SQLite defaults to.
    (Older versions of pages may remain in the ``-wal`` file until SQLite overwrites it.)
    """
    conn.execute("PRAGMA secure_delete = ON")
    try:
        yield
    finally:
        conn.execute(f"PRAGMA secure_delete = {_AGED_OUT}")


_TABLES = ("exchange_rows", "heads", "req_bodies", "res_bodies", "ws_messages", "in_flight")
"""Every table that holds rows of an exchange, by its id."""


def _delete(conn: sqlite3.Connection, ids: list[str]) -> int:
    """Delete these exchanges and all their rows, and count them out of ``stats``."""
    deleted = 0
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ", ".join("?" * len(chunk))
        found = conn.execute(f"SELECT id, bytes FROM exchange_rows WHERE id IN ({marks})", chunk).fetchall()
        if not found:
            continue
        gone = [ex_id for ex_id, _ in found]
        marks = ", ".join("?" * len(gone))
        for table in _TABLES:
            conn.execute(f"DELETE FROM {table} WHERE id IN ({marks})", gone)
        conn.execute("UPDATE stats SET n = n - ?, bytes = bytes - ?", (len(found), sum(b for _, b in found)))
        deleted += len(found)
    return deleted


_OLDEST_UP_TO = ("SELECT count(*), max(id), sum(bytes) FROM "
                 "(SELECT id, bytes FROM exchange_rows WHERE id <= ? ORDER BY id LIMIT ?)")
"""``_OLDEST``, of those up to an id."""
_OLDEST = "SELECT count(*), max(id), sum(bytes) FROM (SELECT id, bytes FROM exchange_rows ORDER BY id LIMIT ?)"
"""How many of the oldest exchanges there are, up to a number; the last one's id; their bytes."""


def _delete_oldest(conn: sqlite3.Connection, last: str, doomed: int, size: int) -> None:
    """Delete the ``doomed`` oldest exchanges, ``last`` the id of the last of them and ``size``
    their bytes, and count them out of ``stats``.

    They are every exchange up to the last one's id, so each table loses a range of its key:
    no statement per exchange.
    """
    for table in _TABLES:
        conn.execute(f"DELETE FROM {table} WHERE id <= ?", (last,))
    conn.execute("UPDATE stats SET n = n - ?, bytes = bytes - ?", (doomed, size))
