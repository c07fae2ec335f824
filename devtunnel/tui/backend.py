"""What the inspector talks to: the capture store (read in worker threads) and the agent API.

The store is read through a small thread pool so SQLite never blocks the screen; the agent API
is called with httpx and ``/api/events`` followed with websockets. Foreign errors become
``DevtunnelError`` subclasses here, so the app shows one readable sentence.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable, Sequence
import queue
import sqlite3
import threading
from concurrent.futures import Executor, Future
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import WebSocketException

from devtunnel.capture.edit import Edit
from devtunnel.capture.model import Exchange
from devtunnel.capture.rows import Row
from devtunnel.capture.store import DEFAULT_MAX_BYTES, DEFAULT_MAX_EXCHANGES, Store, file_identity, path_mode
from devtunnel.errors import DevtunnelError, NotFoundError, ReplayError, StoreError, TunnelError
from devtunnel.values.terminal import quoted
from devtunnel.webhooks.resign import notice_for

T = TypeVar("T")


@dataclass(frozen=True)
class TunnelView:
    """One tunnel as the agent API describes it."""

    name: str
    public_url: str
    target: str
    state: str
    """``starting``, ``online``, ``reconnecting``, ``failed`` or ``stopped``."""
    next_retry_at: float | None = None
    error: str = ""
    requests: int = 0
    via: str = ""
    """The public URL's provider (``cloudflared``, ``ssh:me@host``), or empty for the relay."""
    via_state: str = ""
    """The provider's ``starting``, ``online``, ``restarting``, ``failed`` or ``stopped``."""
    app_state: str = ""
    """The app devtunnel runs for the tunnel, one of ``devtunnel.values.app_state.APP_STATES``
    (``ready``, ``crashed``, ``exited`` ...); empty when it runs none."""
    app_restarts: int = 0
    app_message: str = ""
    app_exit_code: int | None = None
    """The status of its last exit, or None while it has not exited."""
    waiting: int = 0
    """Requests held right now (``--hold``), waiting for the app or the target to answer."""
    hints: tuple[str, ...] = ()
    """What to do about a dev server refusing the tunnel (``Vite refused the Host ...``), as the
    agent's log said it, oldest first; escaped by the agent (``tunnel_json``)."""

    @classmethod
    def from_json(cls, data: object) -> TunnelView:
        """Read a tunnel as the agent API sends it (``devtunnel.export.agent_json.tunnel_json``).

        Raises:
            TunnelError: ``data`` is not that shape; the message names the field.
        """
        config = _field(data, "config", dict, "tunnel")
        http = _field(_field(data, "metrics", dict, "tunnel"), "http", dict, "tunnel.metrics")
        via = _field(data, "via", (dict, type(None)), "tunnel")
        app = _field(data, "app", (dict, type(None)), "tunnel")
        return cls(
            name=_field(data, "name", str, "tunnel"),
            public_url=_field(data, "public_url", str, "tunnel"),
            target=_field(config, "addr", str, "tunnel.config"),
            state=_field(data, "state", str, "tunnel"),
            next_retry_at=_field(data, "next_retry_at", (int, float, type(None)), "tunnel"),
            error=_field(data, "error", (str, type(None)), "tunnel") or "",
            requests=_field(http, "count", int, "tunnel.metrics.http"),
            via=_field(via, "provider", str, "tunnel.via") if via is not None else "",
            via_state=_field(via, "state", str, "tunnel.via") if via is not None else "",
            app_state=_field(app, "state", str, "tunnel.app") if app is not None else "",
            app_restarts=_field(app, "restarts", int, "tunnel.app") if app is not None else 0,
            app_message=_field(app, "message", str, "tunnel.app") if app is not None else "",
            app_exit_code=_field(app, "exit_code", (int, type(None)), "tunnel.app") if app is not None else None,
            waiting=_field(data, "waiting", int, "tunnel") if "waiting" in data else 0,  # none from an older agent
            hints=_hints(data),
        )


def _hints(data: object) -> tuple[str, ...]:
    """A tunnel's ``hints`` (none from an agent that sends none)."""
    if not isinstance(data, dict) or "hints" not in data:
        return ()
    hints = _field(data, "hints", list, "tunnel")
    for hint in hints:
        if not isinstance(hint, str):
            raise TunnelError(f"the agent API sent a malformed tunnel: a hint is {quoted(hint)}, not str")
    return tuple(hints)


def _field(data: object, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """``data[key]`` of an agent API answer, of type ``kind`` (a bool is not an int here).

    Raises:
        TunnelError: ``data`` is not an object, has no ``key``, or its value is of another type.
    """
    if not isinstance(data, dict):
        raise TunnelError(f"the agent API sent a malformed {where}: {type(data).__name__} instead of an object")
    if key not in data:
        raise TunnelError(f"the agent API sent a malformed {where}: it has no {quoted(key)}")
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join("null" if k is type(None) else k.__name__ for k in kinds)
        raise TunnelError(f"the agent API sent a malformed {where}: {quoted(key)} is {quoted(value)}, not {expected}")
    return value


def _answer(response: httpx.Response) -> object:
    """The JSON of an agent API answer.

    Raises:
        TunnelError: the body is not JSON.
    """
    try:
        return response.json()
    except ValueError as exc:
        raise TunnelError(f"the agent API answered {response.request.method} {response.request.url.path} "
                          f"with something that is not JSON: {exc}") from None


_FOLLOW_TIMEOUT = httpx.Timeout(30.0, read=60.0)
"""A followed log may be quiet for long; the agent sends an empty line every 15 s, so a minute
without a byte means the agent is gone."""
MAX_LOG_LINE = 1 << 20
"""Bytes of one line of a followed log at most (the agent cuts app lines far shorter)."""


@dataclass(frozen=True)
class LogBatch:
    """Lines of an app's output as they arrived, and how many the agent dropped before them
    because they were not read fast enough."""

    lines: list[dict[str, Any]]
    dropped: int = 0


def _log_batch(raw_lines: list[bytes]) -> LogBatch:
    """The lines of a followed log (newline-delimited JSON; empty lines keep the stream alive).

    Raises:
        TunnelError: a line is no JSON object.
    """
    lines: list[dict[str, Any]] = []
    dropped = 0
    for raw in raw_lines:
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except ValueError as exc:
            raise TunnelError(f"the agent sent a log line that is not JSON: {exc}") from exc
        if not isinstance(item, dict):
            raise TunnelError("the agent sent a log line that is not a JSON object")
        if "text" not in item and isinstance(item.get("dropped"), int):
            dropped += item["dropped"]
        else:
            lines.append(item)
    return LogBatch(lines, dropped)


def _api_error(response: httpx.Response) -> str:
    """The ``msg`` of an API error body, or the status line."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and body.get("msg"):
        return str(body["msg"])
    return f"the agent answered {response.status_code}"


class _Readers(Executor):
    """A few daemon threads that run store reads.

    Daemon threads, unlike ``ThreadPoolExecutor``'s, never hold up the exit of the inspector:
    a read that waits on a lock of the agent's (say while it closes its database) is abandoned.
    """

    def __init__(self, threads: int, on_exit: Callable[[], object] | None = None) -> None:
        self._on_exit = on_exit
        """Run by each thread as it ends (after ``shutdown``): it closes what the thread opened."""
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"store-reader-{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:  # handed to the awaiting coroutine
                    future.set_exception(exc)
        if self._on_exit is not None:
            self._on_exit()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                # Nobody is left to run it: the awaiting coroutine is cancelled, never left waiting
                # (a table refreshing while the inspector quits would hold up its exit).
                future.cancel()
            else:
                self._jobs.put((future, lambda: fn(*args, **kwargs)))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._closed = True
            for _ in self._threads:
                self._jobs.put(None)


FileChange = Literal["deleted", "replaced", "created"]
"""What ``Backend.file_change`` found."""



class StorePages:
    """One filter's exchanges as pages read by keyset (a ``RowSource`` for the request table)."""

    def __init__(self, backend: Backend, filter: object = None) -> None:
        self.backend = backend
        self.filter = filter

    async def after(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        """The ``limit`` rows just after ``exchange_id`` (None: the oldest), passing over ``skip``."""
        return await self.backend._read(lambda s: s.rows_after(self.filter, exchange_id, limit=limit, skip=skip), [],
                                        screen=True)

    async def before(self, exchange_id: str | None, limit: int, skip: int = 0) -> list[Row]:
        """The ``limit`` rows just before ``exchange_id`` (None: the newest), passing over ``skip``."""
        return await self.backend._read(lambda s: s.rows_before(self.filter, exchange_id, limit=limit, skip=skip), [],
                                        screen=True)

    async def position(self, exchange_id: str) -> int:
        """How many rows come before ``exchange_id``."""
        return await self.backend._read(lambda s: s.count_before(exchange_id, self.filter), 0)

    async def newest(self, limit: int, skip: int = 0) -> tuple[list[Row], int | None]:
        """The ``limit`` newest rows (passing over ``skip``) and, without a filter (a count that
        costs nothing), how many the store held as they were read."""
        def read(store: Store) -> tuple[list[Row], int | None]:
            with store.together():
                rows = store.rows_before(self.filter, None, limit=limit, skip=skip)
                return rows, store.count() if self.filter is None else None

        return await self.backend._read(read, ([], 0), screen=True)


class Backend:
    """The store and the agent API as one object the app can await.

    Args:
        db_path: the capture database (it may not exist yet: it then reads as empty).
        api_url: the agent API (``http://127.0.0.1:PORT``); None until an agent is running.
    """

    def __init__(self, db_path: Path, api_url: str | None = None, *, max_exchanges: int = DEFAULT_MAX_EXCHANGES,
                 max_bytes: int = DEFAULT_MAX_BYTES, replay_ignore_headers: Sequence[str] = ()) -> None:
        self.db_path = Path(db_path)
        self.replay_ignore_headers = tuple(replay_ignore_headers)
        """Response headers that do not make a replay differ (``replay.ignore_headers``), besides the volatile ones."""
        self.max_exchanges = max_exchanges
        """Retention applied when this backend records a replay itself (no agent)."""
        self.max_bytes = max_bytes
        self._api_url = api_url
        self._api_ready = asyncio.Event()
        if api_url:
            self._api_ready.set()
        self._pool = _Readers(2, self._reader_done)
        self._screen = _Readers(1, self._reader_done)
        """Reads for what is on screen (pages, live rows): never queued behind a count."""
        self._store: Store | None = None
        self._file: tuple[int, int] | None = None
        """The device and inode of the file ``_store`` reads (None: none is open)."""
        self._deleted = False
        """The file ``_store`` reads was deleted (``file_change``); nothing is at the path."""
        self._thread = threading.local()
        """The store each reader thread last read (its connection is closed when the store is replaced)."""
        self._client: httpx.AsyncClient | None = None
        self._closed = False
        self.tunnel_requests: dict[str, dict[str, Any]] = {}
        """Tunnels started through this backend (name -> POST body), to start again after a restart."""
        self.stopped: dict[str, tuple[TunnelView, dict[str, Any] | None]] = {}
        """Tunnels stopped from here (name -> how they were shown, and their POST body if started
        here): listed as ``stopped`` until started again (``start_again``)."""

    # -- store ------------------------------------------------------------------------

    def _reader_done(self) -> None:
        """A reader thread ends: its connection to the database closes with it (the store keeps
        one a thread, which would outlive the thread)."""
        store = getattr(self._thread, "store", None)
        if store is not None:
            self._thread.store = None
            with contextlib.suppress(sqlite3.Error):  # the thread ends all the same
                store.close()

    def _open(self) -> Store | None:
        if self._store is None:
            try:
                before = file_identity(self.db_path)
            except OSError:
                # A folder above it this user cannot search, a name too long: one line with what
                # to do (a StoreError, shown as "Could not read captures"), not an unexpected error.
                path_mode(self.db_path)
                raise
            if before is None:
                self._file = None
                return None
            try:
                # A screen should not wait long on the agent's locks: it reads again soon anyway.
                store = Store(self.db_path, readonly=True, busy_timeout=1.0)
            except DevtunnelError:
                # Not a database, say: this file was looked at (``file_change`` finds it "created"
                # no more, which said the failure a second time); another file at the path is news.
                self._file = before
                raise
            self._store, self._file = store, before
        return self._store

    def file_change(self) -> FileChange | None:
        """What became of the database file since the store opened it (one ``stat``: call it every second or so).

        ``"deleted"``: nothing is at the path any more; the store reads on the file it has open
        (an agent still running makes a new one at the path within about a second).
        ``"replaced"``: another file is at the path (an agent made a new one, or one was moved
        there); the next read opens it.
        ``"created"``: a file is there where none was when the store was first read. Each change
        is returned once; None: nothing changed.
        """
        try:
            now = file_identity(self.db_path)
        except OSError:
            return None  # cannot tell (a folder we may not search): the reads will say what is wrong
        if now == self._file:
            return None
        if now is None:
            if self._store is None:  # nothing open: an empty list, read again when a file is there
                self._file = None
                return None
            if self._deleted:
                return None
            self._deleted = True
            return "deleted"
        change: FileChange = "created" if self._store is None and self._file is None else "replaced"
        # Each reader thread closes its connection to the former file at its next read (``_read``).
        self._store, self._file, self._deleted = None, now, False
        return change

    async def _read(self, fn: Callable[[Store], T], empty: T, *, screen: bool = False) -> T:
        def call() -> T:
            store = self._open()
            former = getattr(self._thread, "store", None)
            if former is not None and former is not store:
                former.close()  # this thread's connection to a file no longer at the path
            self._thread.store = store
            return empty if store is None else fn(store)

        # Once the file is deleted only connections opened before can read it: the screen's reader
        # has one (it reads every list first), the others may not, so every read goes there.
        readers = self._screen if screen or self._deleted else self._pool
        return await asyncio.get_running_loop().run_in_executor(readers, call)

    async def ids(self, filter: object = None) -> list[str]:
        """Every id matching ``filter``, oldest first."""
        return await self._read(lambda s: s.ids(filter), [])

    async def rows(self, ids: Sequence[str]) -> list[Row]:
        """Light rows for ``ids`` (missing ones skipped)."""
        return await self._read(lambda s: s.rows_by_id(ids), [])

    async def count(self, filter: object = None) -> int:
        """How many exchanges match ``filter``."""
        return await self._read(lambda s: s.count(filter), 0)

    async def look(self) -> tuple[int, int]:
        """How many exchanges the store holds, and a number that moves when another process
        changes it (``Store.look``). Always read on one thread: the number is its connection's."""
        return await self._read(lambda s: s.look(), (0, 0), screen=True)

    async def count_estimate(self, filter: object = None) -> tuple[int, bool]:
        """How many exchanges match ``filter``, at once: ``(count, exact)`` (see ``Store.count_estimate``)."""
        return await self._read(lambda s: s.count_estimate(filter), (0, True), screen=True)

    async def open_list(self, filter: object, tail: int) -> tuple[int, bool, list[Row]]:
        """A list's first look in one read: its count estimate (``count, exact``) and its ``tail`` newest rows."""
        def read(store: Store) -> tuple[int, bool, list[Row]]:
            with store.together():  # the count numbers these rows: both of one moment
                total, exact = store.count_estimate(filter)
                return total, exact, store.rows_before(filter, limit=tail)

        return await self._read(read, (0, True, []), screen=True)

    def pages(self, filter: object = None) -> StorePages:
        """The exchanges matching ``filter`` as pages for the request table."""
        return StorePages(self, filter)

    async def changed_rows(self, ids: Sequence[str], filter: object = None) -> tuple[list[Row], int | None]:
        """Rows of those of ``ids`` that match ``filter`` and, without a filter, the store's exact count."""
        def read(store: Store) -> tuple[list[Row], int | None]:
            with store.together():  # the count is of the store these rows were read in
                rows = store.matching_rows(ids, filter)
                return rows, store.count() if filter is None else None

        return await self._read(read, ([], 0 if filter is None else None), screen=True)

    async def get(self, exchange_id: str) -> Exchange:
        """The full exchange (NotFoundError if it is gone)."""
        def get(store: Store) -> Exchange:
            return store.get(exchange_id)

        result = await self._read(get, None)
        if result is None:
            raise NotFoundError(f"no exchange {exchange_id}: the capture database {self.db_path} does not exist")
        return result

    # -- agent API --------------------------------------------------------------------

    @property
    def api_url(self) -> str | None:
        """The agent API base URL, or None while no agent is serving."""
        return self._api_url

    @api_url.setter
    def api_url(self, url: str | None) -> None:
        self._api_url = url
        if url:
            self._api_ready.set()
        else:
            self._api_ready.clear()

    def _api_client(self) -> httpx.AsyncClient:
        """The client of the agent API, made once. The API is on this machine's loopback: no
        proxy from the environment (HTTP_PROXY ...) may carry the calls, and the API refuses
        what a proxy forwarded."""
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=30.0, trust_env=False)
        return self._client

    async def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        if not self._api_url:
            raise TunnelError("the agent is not running (no API to talk to)")
        try:
            return await self._api_client().request(method, self._api_url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise TunnelError(f"the agent API at {self._api_url} did not answer: {exc}") from exc

    async def tunnels(self) -> list[TunnelView]:
        """Every tunnel of the agent, then those stopped from here (``stopped``) it does not run."""
        response = await self._request("GET", "/api/tunnels")
        if response.status_code != 200:
            raise TunnelError(_api_error(response))
        running = [TunnelView.from_json(t) for t in _field(_answer(response), "tunnels", list, "tunnel list")]
        names = {t.name for t in running}
        return running + [view for name, (view, _) in self.stopped.items() if name not in names]

    async def start_tunnel(self, target: str, name: str = "", relay: str = "", via: str = "") -> TunnelView:
        """Start a tunnel to ``target`` (a port, HOST:PORT or URL), its public URL from ``via`` if given."""
        body: dict[str, Any] = {"addr": target, "proto": "http"}
        if name:
            body["name"] = name
        if relay:
            body["relay"] = relay
        if via:
            body["via"] = via
        response = await self._request("POST", "/api/tunnels", json=body)
        if response.status_code not in (200, 201):
            raise TunnelError(_api_error(response))
        tunnel = TunnelView.from_json(_answer(response))
        self.tunnel_requests[tunnel.name] = {**body, "name": tunnel.name}
        return tunnel

    async def restore_tunnels(self) -> tuple[list[TunnelView], list[str]]:
        """Start again, with the same names, the tunnels started here (after an agent restart).

        Returns the tunnels started and a sentence for each that could not be.
        """
        started, problems = [], []
        for name, body in list(self.tunnel_requests.items()):
            try:
                started.append(await self.start_tunnel(body["addr"], name, body.get("relay", ""), body.get("via", "")))
            except DevtunnelError as exc:
                problems.append(f"{name}: {exc}")
        return started, problems

    async def add_rule(self, tunnel: str, rule: dict[str, Any]) -> dict[str, Any]:
        """Add ``rule`` first among tunnel ``tunnel``'s rules at the relay; returns it as numbered."""
        response = await self._request("POST", f"/api/tunnels/{tunnel}/rules", json=rule)
        if response.status_code not in (200, 201):
            raise TunnelError(_api_error(response))
        return dict(response.json())

    async def follow_app_logs(self, name: str, *, contains: str = "", limit: int = 2000) -> AsyncIterator[LogBatch]:
        """The output of tunnel ``name``'s app: first its last ``limit`` kept lines (those
        containing ``contains``), then each new line as the app writes it, in batches as they
        arrive (``GET /api/tunnels/{name}/logs?follow=1``). Ends when the agent ends the stream
        (the app's tunnel stopped); close it (``contextlib.aclosing``) to stop following.

        Raises:
            TunnelError: no agent, it did not answer, or it sent something that is no log line;
            NotFoundError: no such tunnel or app.
        """
        if not self._api_url:
            raise TunnelError("the agent is not running (no API to talk to)")
        client = self._api_client()
        params = {"limit": str(limit), "follow": "1"}
        if contains:
            params["contains"] = contains
        url = f"{self._api_url}/api/tunnels/{quote(name, safe='')}/logs"
        try:
            async with client.stream("GET", url, params=params, timeout=_FOLLOW_TIMEOUT) as response:
                if response.status_code != 200:
                    await response.aread()
                    error = NotFoundError if response.status_code == 404 else TunnelError
                    raise error(_api_error(response))
                pending = b""
                async for chunk in response.aiter_bytes():
                    pending += chunk
                    if b"\n" not in chunk:
                        if len(pending) > MAX_LOG_LINE:
                            raise TunnelError(f"the agent sent a log line over {MAX_LOG_LINE} bytes")
                        continue
                    *complete, pending = pending.split(b"\n")
                    batch = _log_batch(complete)
                    if batch.lines or batch.dropped:
                        yield batch
        except httpx.HTTPError as exc:
            raise TunnelError(f"the agent API at {self._api_url} did not answer: {exc}") from exc

    async def stop_tunnel(self, tunnel: TunnelView) -> TunnelView:
        """Stop ``tunnel``; returns it as the panel shows it now: ``stopped``, until ``start_again``."""
        app_state = "stopped" if tunnel.app_state else ""
        view = replace(tunnel, state="stopped", next_retry_at=None, error="", app_state=app_state, app_message="",
                       waiting=0)
        # Known as stopped before the agent drops it: a poll meanwhile lists it so.
        self.stopped[tunnel.name] = (view, self.tunnel_requests.get(tunnel.name))
        try:
            response = await self._request("DELETE", f"/api/tunnels/{quote(tunnel.name, safe='')}")
            if response.status_code not in (200, 204):
                raise TunnelError(_api_error(response))
        except BaseException:
            self.stopped.pop(tunnel.name, None)
            raise
        self.tunnel_requests.pop(tunnel.name, None)
        return view

    async def start_again(self, name: str) -> TunnelView:
        """Start the stopped tunnel ``name`` again, every setting kept: the agent remembers how it
        ran (``POST /api/tunnels/NAME/restart``); an agent started since does not, and a tunnel
        started here is then started anew from its request."""
        _, body = self.stopped[name]
        response = await self._request("POST", f"/api/tunnels/{quote(name, safe='')}/restart")
        if response.status_code == 404 and body is not None:
            tunnel = await self.start_tunnel(body["addr"], name, body.get("relay", ""), body.get("via", ""))
        elif response.status_code != 200:
            raise TunnelError(_api_error(response))
        else:
            tunnel = TunnelView.from_json(_answer(response))
        self.stopped.pop(name, None)
        return tunnel

    async def restart_tunnel(self, tunnel: TunnelView) -> TunnelView:
        """Reconnect ``tunnel`` and start its app again, every setting kept (the agent's
        ``POST /api/tunnels/NAME/restart``)."""
        response = await self._request("POST", f"/api/tunnels/{quote(tunnel.name, safe='')}/restart")
        if response.status_code != 200:
            raise TunnelError(_api_error(response))
        return TunnelView.from_json(_answer(response))

    async def replay(self, exchange: Exchange, edit: Edit | None = None) -> Exchange:
        """Send ``exchange`` again (changed by ``edit``); returns the new one.

        With an agent, the agent sends and records it (the edit travels in its JSON form,
        ``Edit.to_json``); without one (``devtunnel inspect``) it is sent from here and recorded
        into the store directly. Either way the edit means the same.
        """
        if not self._api_url:
            return await self._replay_here(exchange, edit)
        body = edit.to_json() if edit is not None else {}
        # No limit on the answer's wait: a replay to a tunnel that holds requests (--hold) waits
        # for its app first, up to the hold (which may be minutes); the agent bounds the rest.
        response = await self._request("POST", f"/api/requests/http/{exchange.id}/replay", json=body,
                                       timeout=httpx.Timeout(30.0, read=None))
        if response.status_code not in (200, 201):
            raise ReplayError(_api_error(response))
        answer = _answer(response)
        # The agent answers once its recorder has committed the new exchange: it is in the store now.
        new = await self.get(_field(answer, "id", str, "replay"))
        signature = _field(answer, "signature", (str, type(None)), "replay")
        if signature is not None:  # said once, with the answer; not stored
            new.signature_notice = "signature " + notice_for(signature, "inspector")
        return new

    async def _replay_here(self, exchange: Exchange, edit: Edit | None) -> Exchange:
        from devtunnel.replay import not_recorded, replay

        new = await replay(exchange, edit=edit)

        def put() -> None:
            store = Store(self.db_path, max_exchanges=self.max_exchanges, max_bytes=self.max_bytes)
            try:
                store.put(new)
            finally:
                store.close()

        try:
            await asyncio.get_running_loop().run_in_executor(self._pool, put)
        except StoreError as exc:  # it went out all the same: not a failure to replay
            raise not_recorded([new], exc) from exc
        return new

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Messages from ``/api/events``, reconnecting (and yielding a resync) when it drops.

        Waits while no agent is running; ends when the backend is closed.
        """
        connected_before = False
        while not self._closed:
            await self._api_ready.wait()
            url = (self._api_url or "").replace("http://", "ws://", 1) + "/api/events"
            try:
                async with connect(url, open_timeout=5, max_size=2**22) as ws:
                    if connected_before:
                        yield {"type": "resync"}  # messages may have been missed meanwhile
                    connected_before = True
                    async for raw in ws:
                        try:
                            message = json.loads(raw)
                        except ValueError as exc:
                            raise TunnelError(f"the agent API sent an event that is not JSON: {exc}") from None
                        if not isinstance(message, dict):
                            raise TunnelError(f"the agent API sent an event that is not an object: {raw!r:.80}")
                        yield message
            except (OSError, WebSocketException, asyncio.TimeoutError):
                pass
            if not self._closed:
                await asyncio.sleep(0.3)

    async def aclose(self) -> None:
        """Close the HTTP client and the store readers (once: a second call does nothing)."""
        if self._closed:
            return
        self._closed = True
        self._api_ready.set()
        if self._client is not None:
            await self._client.aclose()
        self._pool.shutdown(wait=False)
        self._screen.shutdown(wait=False)
