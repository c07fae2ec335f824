"""Every way the capture file can be unusable gives one line naming the file, and loses nothing."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devtunnel.capture.model import Exchange
from devtunnel.capture.store import Store
from devtunnel.errors import StoreError
from tests.kit.exchanges import make_exchange


def make() -> Exchange:
    return make_exchange(headers=[], body=b"kept", tunnel="web", started_at=time.time())


def one_line(err: pytest.ExceptionInfo[StoreError]) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_a_corrupt_file_is_named_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "captures.db"
    garbage = b"this is not sqlite at all\n" * 400
    path.write_bytes(garbage)
    with pytest.raises(StoreError) as err:
        Store(path)
    assert one_line(err) == (
        f"{path} is not a devtunnel database (file is not a database); move it away or pass --db"
    )
    assert path.read_bytes() == garbage


def test_another_applications_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (text TEXT)")
        conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.close()
    before = path.read_bytes()
    with pytest.raises(StoreError) as err:
        Store(path)
    assert f"{path} is not a devtunnel database" in one_line(err)
    assert path.read_bytes() == before  # not even switched to WAL
    assert not Path(f"{path}-wal").exists()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT text FROM notes").fetchall() == [("mine",)]
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 1
    conn.close()


def test_a_database_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    Store(path).put(make())
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(StoreError) as err:
        Store(path)
    assert "newer devtunnel" in one_line(err) and str(path) in one_line(err)


def test_a_directory_where_the_file_should_be(tmp_path: Path) -> None:
    path = tmp_path / "captures.db"
    path.mkdir()
    with pytest.raises(StoreError) as err:
        Store(path)
    assert one_line(err) == f"{path} is a directory, not a database file; pass --db with a file path"


def test_a_file_where_the_folder_should_be(tmp_path: Path) -> None:
    (tmp_path / "state").write_text("x")
    with pytest.raises(StoreError) as err:
        Store(tmp_path / "state" / "captures.db")
    assert one_line(err).startswith(f"cannot create the folder {tmp_path / 'state'}")


def test_a_locked_database_fails_after_the_busy_timeout_and_works_once_released(tmp_path: Path) -> None:
    path = tmp_path / "c.db"
    store = Store(path, busy_timeout=0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    ex = make()
    with pytest.raises(StoreError) as err:
        store.put(ex)
    assert one_line(err) == f"{path} is locked by another process (database is locked); close it or pass --db"
    holder.execute("ROLLBACK")
    holder.close()
    store.put(ex)
    assert store.get(ex.id) == ex


# --- permissions: run as an unprivileged user, since root may write anywhere -------------------


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder an unprivileged user can reach (pytest's tmp_path is private to its owner)."""
    folder = Path(tempfile.mkdtemp(prefix="devtunnel-perm-"))
    folder.chmod(0o777)
    yield folder
    for p in [folder, *folder.rglob("*")]:
        if p.is_dir():
            p.chmod(0o777)
    shutil.rmtree(folder)


def open_unprivileged(path: Path, *, readonly: bool) -> str:
    """Open a Store in a forked child without root rights (root may write anywhere).

    Returns ``"count N"`` or ``"StoreError: message"`` as the child reported it.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop rights, try, report, and leave without running pytest's teardown
        code = 0
        try:
            os.close(read_end)
            if os.geteuid() == 0:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            try:
                report = f"count {Store(path, readonly=readonly).count()}"
            except StoreError as exc:
                report = f"StoreError: {exc}"
            os.write(write_end, report.encode())
        except BaseException as exc:  # noqa: BLE001
            os.write(write_end, f"child failed: {exc!r}".encode())
            code = 1
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        out = pipe.read().decode()
    os.waitpid(pid, 0)
    return out


def test_a_read_only_file_is_reported_before_any_write(shared_dir: Path) -> None:
    path = shared_dir / "captures.db"
    # Closed here: a connection left to the garbage collector could checkpoint its WAL into
    # the file at any later moment, in the forked child too.
    with Store(path) as store:
        store.put(make())
    path.chmod(0o444)
    before = path.read_bytes()
    out = open_unprivileged(path, readonly=False)
    assert out == f"StoreError: {path} is read-only; fix its permissions or pass --db"
    assert path.read_bytes() == before


def test_a_read_only_folder_is_reported(shared_dir: Path) -> None:
    folder = shared_dir / "state"
    folder.mkdir(mode=0o555)
    folder.chmod(0o555)
    out = open_unprivileged(folder / "captures.db", readonly=False)
    assert out == (f"StoreError: cannot write in the folder {folder} (permission denied); "
                   "fix its permissions or pass --db")
    assert list(folder.iterdir()) == []


def test_a_read_only_store_reads_a_file_in_a_read_only_folder(shared_dir: Path) -> None:
    folder = shared_dir / "state"
    folder.mkdir()
    store = Store(folder / "captures.db")
    store.put_many([make(), make()])
    store.close()
    (folder / "captures.db").chmod(0o444)
    folder.chmod(0o555)
    out = open_unprivileged(folder / "captures.db", readonly=True)
    assert out == "count 2"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop to another user")
def test_an_empty_file_another_user_cannot_write_is_not_called_an_older_devtunnel_s(shared_dir: Path) -> None:
    # ``devtunnel requests`` on an empty captures.db (``touch``, a copy that failed) of another
    # user said it "is of an older devtunnel (schema 0) and needs an upgrade to schema 10".
    import devtunnel.commands.captures  # noqa: F401 (imported here: the other user may not read every module)
    from tests.kit.as_user import main_as_user

    db = shared_dir / "captures.db"
    db.write_bytes(b"")
    db.chmod(0o644)
    said, code = main_as_user(65534, ["requests", "--db", str(db)],
                              env={"XDG_STATE_HOME": str(shared_dir / "state"), "XDG_CONFIG_HOME": str(shared_dir)})
    assert said.splitlines() == [f"devtunnel: {db} is empty, not a devtunnel database yet, and this user cannot "
                                 "write it to make one; fix its permissions or pass --db"]
    assert code == 1
    assert db.read_bytes() == b""
