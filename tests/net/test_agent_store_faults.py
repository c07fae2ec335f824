"""The agent (``devtunnel http --no-tui``) when its capture database goes wrong while it runs: traffic
goes on at once, the log says what is wrong in one line and what to do, and says so again when
recording works again; nothing is stored wrongly."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from devtunnel.capture.store import Store
from tests.helpers import wait_for
from tests.kit.exchanges import make_exchange
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.test_agent_db_deleted import start_agent
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


def get(port: str, target: str) -> None:
    """A request through the tunnel, answered by the local app at once."""
    r = httpx.get(f"http://127.0.0.1:{port}{target}", headers={"Host": f"rm.localhost:{port}"}, trust_env=False,
                  timeout=5)
    assert r.status_code == 200


def listed(env: dict[str, str], db: Path) -> str:
    """What ``devtunnel requests`` lists, or "" while it cannot (no file there yet, say)."""
    done = subprocess.run([*DEVTUNNEL, "requests", "--db", str(db)], capture_output=True, text=True, timeout=30,
                          env=env)
    return done.stdout if done.returncode == 0 else ""


def damage_a_table(db: Path, table: str) -> None:
    """Overwrite the root page of ``table`` with garbage, as a failing disk or a stray write would:
    the file still opens (its first page is intact), and every statement on that table fails
    with "database disk image is malformed"."""
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(db, "r+b") as f:
        f.seek((root - 1) * page_size)
        f.write(b"\xff" * page_size)


def test_a_database_found_damaged_while_recording_is_one_line_and_traffic_goes_on(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    with Store(db) as store:
        store.put(make_exchange("GET", "/yesterday", [], tunnel="rm", started_at=time.time()))
    damage_a_table(db, "stats")  # every write reads and updates it
    agent, port, _ = start_agent(procs, env, local[0], db)
    for i in range(30):
        get(port, f"/echo?n={i}")
    agent.line(lambda l: "/echo?n=29" in l)  # every one answered and logged
    said = agent.line(lambda l: "cannot write captures" in l, lines="err")
    assert said.endswith(f"cannot write captures: {db} is damaged (database disk image is malformed); "
                         "move it away or pass --db")
    # Moved away, as the line says: a new database is started at the path, and what waited is in it.
    db.rename(tmp_path / "damaged.db")
    for companion in tmp_path.glob("captures.db-*"):
        companion.unlink()
    now = wait_for(lambda: (out := listed(env, db)) and "/echo?n=29" in out and out,
                   what="the requests that waited, in the new file")
    assert [line.split()[-1] for line in now.splitlines()[1:]] == [f"/echo?n={i}" for i in range(30)]
    assert agent.stop() == 0
    assert [l for l in agent.err if "cannot write captures" in l] == [said]
    assert not [l for l in agent.err if "dropped exchange" in l]
    assert not any("Traceback" in l for l in agent.err), agent.err


def test_an_agent_that_could_not_write_for_a_lock_says_when_it_writes_again(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    db = tmp_path / "captures.db"
    agent, port, _ = start_agent(procs, env, local[0], db)
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # another program writing, and taking its time
        get(port, "/echo?while-locked")
        agent.line(lambda l: "/echo?while-locked" in l)
        said = agent.line(lambda l: "cannot write captures" in l, lines="err")
        assert said.endswith(f"cannot write captures: {db} is locked by another process (database is locked); "
                             "close it or pass --db")
    finally:
        holder.close()
    again = agent.line(lambda l: "writing captures again" in l, lines="err")
    assert again.endswith(" writing captures again")
    assert "/echo?while-locked" in listed(env, db)
    assert agent.stop() == 0
    assert [l for l in agent.err if "cannot write captures" in l] == [said]
    assert not any("Traceback" in l for l in agent.err), agent.err


def test_a_file_size_limit_reached_while_recording_is_named_with_what_to_do(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # ``ulimit -f`` (RLIMIT_FSIZE) for the agent alone: a write past it fails with EFBIG, which
    # SQLite reports as a bare "disk I/O error", the line the agent printed.
    limit = 600_000
    db = tmp_path / "captures.db"
    agent = Proc(["prlimit", f"--fsize={limit}:unlimited", "--", *DEVTUNNEL, "http", str(local[0]), "--no-tui",
                  "--name", "rm", "--api-port", "0", "--db", str(db)], env)
    procs.append(agent)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    port = match.group(3)
    for i in range(8):
        r = httpx.post(f"http://127.0.0.1:{port}/echo?n={i}", headers={"Host": f"rm.localhost:{port}"},
                       content=b"x" * 100_000, trust_env=False, timeout=5)
        assert r.status_code == 200
    said = agent.line(lambda l: "cannot write captures" in l, lines="err")
    assert said.endswith(f"cannot write captures: {db}: the file size limit of this process ({limit} bytes, "
                         "ulimit -f) stops it from growing (disk I/O error); raise the limit or pass --db")
    assert [l for l in agent.err if "cannot write captures" in l] == [said]
    assert agent.stop() == 1  # what could not be written is said at exit
    assert agent.err[-1].startswith(f"devtunnel: {db}: ")
    assert not any("Traceback" in l for l in agent.err), agent.err


@contextmanager
def tmpfs(folder: Path, size: str) -> Iterator[Path]:
    """``folder`` (made) on a tmpfs of ``size`` (``1m``), unmounted at the end; the test is
    skipped where it cannot be mounted (not root)."""
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and a tmpfs mount")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A folder on a tmpfs of 1 MiB, unmounted at the end."""
    with tmpfs(tmp_path / "small", "1m") as folder:
        yield folder


def fill(folder: Path) -> None:
    """Write into ``folder`` until its disk is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # ENOSPC: full
    finally:
        os.close(fd)


def test_reading_a_database_on_a_full_disk_says_the_disk_is_full(
    small_disk: Path, env: dict[str, str], local: tuple[int, LocalState]
) -> None:
    # With no agent on it, a reader makes the -shm file WAL needs: on a full disk SQLite says only
    # "disk I/O error", which read as a failing disk.
    db = small_disk / "captures.db"
    with Store(db) as store:
        store.put(make_exchange("GET", "/kept", [], tunnel="rm", started_at=time.time()))
    fill(small_disk)
    listed = subprocess.run([*DEVTUNNEL, "requests", "--db", str(db)], capture_output=True, text=True, timeout=30,
                            env=env)
    assert listed.returncode == 1
    assert listed.stderr.splitlines() == [
        f"devtunnel: {db}: the disk is full (disk I/O error); free some space or pass --db"]


@pytest.fixture
def read_only_mount(tmp_path: Path) -> Iterator[Path]:
    """A small tmpfs holding a capture database (``captures.db``), mounted read-only."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(folder)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and a tmpfs mount")
    try:
        Store(folder / "captures.db").close()
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize(("name", "says"), [
    ("captures.db", "{db} is on a read-only file system; pass --db with a writable path"),
    ("new.db", "cannot write in the folder {folder} (a read-only file system); pass --db with a writable path"),
])
def test_a_database_on_a_read_only_file_system_stops_the_agent_with_one_line_saying_so(
    read_only_mount: Path, env: dict[str, str], local: tuple[int, LocalState], name: str, says: str
) -> None:
    # It said "fix its permissions", which no chmod can do on a read-only mount.
    db = read_only_mount / name
    done = subprocess.run([*DEVTUNNEL, "http", str(local[0]), "--no-tui", "--api-port", "0", "--db", str(db)],
                          capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == ["devtunnel: " + says.format(db=db, folder=read_only_mount)]


def test_a_new_database_that_cannot_be_written_stops_the_agent_with_the_reason_not_a_rollback_error(
    tmp_path: Path, env: dict[str, str], local: tuple[int, LocalState]
) -> None:
    # Creating the tables failed (a full disk, a file size limit), SQLite rolled the transaction
    # back itself, and the ROLLBACK sent after it failed in turn: the agent said "cannot rollback -
    # no transaction is active" instead of why.
    db = tmp_path / "captures.db"
    done = subprocess.run(["prlimit", "--fsize=20000:unlimited", "--", *DEVTUNNEL, "http", str(local[0]), "--no-tui",
                           "--api-port", "0", "--db", str(db)], capture_output=True, text=True, timeout=30, env=env)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == [
        f"devtunnel: {db}: the file size limit of this process (20000 bytes, ulimit -f) stops it from growing "
        "(disk I/O error); raise the limit or pass --db"]


def test_an_api_replay_sent_while_the_database_is_locked_says_it_was_sent(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # The inspector's r and POST .../replay: the request went out, but the answer (503) said only
    # "N exchange(s) not written after 5s", read as a replay that failed, so one tried again.
    db = tmp_path / "captures.db"
    agent, port, api_port = start_agent(procs, env, local[0], db)
    get(port, "/echo?original")
    api = f"http://127.0.0.1:{api_port}/api/requests/http"
    [original] = wait_for(lambda: httpx.get(api, trust_env=False).json()["requests"], what="the original stored")
    holder = sqlite3.connect(db, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        r = httpx.post(f"{api}/{original['id']}/replay", json={}, trust_env=False, timeout=30)
    finally:
        holder.close()
    assert local[1].seen_targets.count(b"/echo?original") == 2  # sent
    assert r.status_code == 503
    assert r.json()["msg"].startswith(f"1 replay sent but not recorded: {db}: 1 exchange(s) not written after ")
    assert agent.stop() == 0


def test_a_db_that_is_no_regular_file_is_refused_in_one_line_before_sqlite_opens_it(
    tmp_path: Path, env: dict[str, str], local: tuple[int, LocalState]
) -> None:
    # ``--db /dev/null`` to record nothing (as other tools take it) said "disk I/O error: the disk
    # may be failing" and left a hot journal, /dev/null-journal, in /dev; a FIFO hung ``devtunnel
    # requests`` for good (opening one to read waits for a writer).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    agent = subprocess.run([*DEVTUNNEL, "http", str(local[0]), "--no-tui", "--api-port", "0", "--db", str(fifo)],
                           capture_output=True, text=True, timeout=30, env=env)
    assert agent.returncode == 1
    assert agent.stderr.splitlines() == [f"devtunnel: {fifo} is not a regular file; pass --db with a file path"]
    for path in (fifo, Path(os.devnull)):
        listed = subprocess.run([*DEVTUNNEL, "requests", "--db", str(path)], capture_output=True, text=True,
                                timeout=30, env=env)
        assert listed.returncode == 1
        assert listed.stderr.splitlines() == [f"devtunnel: {path} is not a regular file; pass --db with a file path"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]


def test_a_db_path_too_long_for_the_system_is_one_line_not_a_traceback(
    tmp_path: Path, env: dict[str, str], local: tuple[int, LocalState]
) -> None:
    # The agent's first look at the path (is it a folder?) raised OSError out of the store: a
    # traceback ending in "File name too long"; ``requests`` said it without what to do.
    db = tmp_path / ("a" * 300) / "captures.db"
    says = f"devtunnel: cannot reach {db} (File name too long); pass --db with a shorter path"
    agent = subprocess.run([*DEVTUNNEL, "http", str(local[0]), "--no-tui", "--api-port", "0", "--db", str(db)],
                           capture_output=True, text=True, timeout=30, env=env)
    assert (agent.returncode, agent.stderr.splitlines()) == (1, [says])
    for command in (["requests"], ["show", "01M8"], ["export", "01M8"]):
        done = subprocess.run([*DEVTUNNEL, *command, "--db", str(db)], capture_output=True, text=True, timeout=30,
                              env=env)
        assert (done.returncode, done.stderr.splitlines()) == (1, [says]), command


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root, to drop to another user")
@pytest.mark.parametrize("command", [["http", "8080", "--no-tui", "--api-port", "0"], ["requests"], ["show", "01M8"]])
def test_a_db_in_a_folder_this_user_cannot_search_is_one_line_not_a_traceback(
    tmp_path: Path, command: list[str]
) -> None:
    # ``sudo -u other devtunnel ... --db ~first/captures.db``: the agent ended in a traceback
    # (PermissionError from the store's first look at the path), ``requests`` in "Permission
    # denied: PATH" with nothing to do about it.
    import devtunnel.capture.recorder  # noqa: F401 (imported here: the other user may not read every module)
    import devtunnel.commands.captures  # noqa: F401
    import devtunnel.commands.http  # noqa: F401
    from tests.kit.as_user import main_as_user

    shared = Path(tempfile.mkdtemp(prefix="devtunnel-closed-"))
    try:
        shared.chmod(0o755)
        db = tmp_path / "captures.db"  # tmp_path: searchable by its owner only
        Store(db).close()
        said, code = main_as_user(65534, [*command, "--db", str(db)],
                                  env={"XDG_STATE_HOME": str(shared / "state"), "XDG_CONFIG_HOME": str(shared),
                                       "HOME": str(shared)})
    finally:
        shutil.rmtree(shared)
    assert said.splitlines() == [f"devtunnel: cannot reach {db} (Permission denied: a folder above it cannot be "
                                 "searched); fix the folder's permissions or pass --db"]
    assert code == 1


@pytest.mark.slow
def test_a_body_larger_than_sqlite_takes_is_stored_cut_not_dropped(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # With a body cap above SQLite's largest value (1,000,000,000 bytes), a response of 1.05 GB
    # was answered, then its exchange dropped ("dropped exchange ID: string or blob too big"): the
    # list showed it in flight for good, as its live snapshot had left it.
    db = tmp_path / "captures.db"
    agent = start(procs, env, "http", str(local[0]), "--no-tui", "--name", "rm", "--api-port", "0",
                  "--body-cap", "2gb", "--db", str(db))
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    port, size = match.group(3), 1_050_000_000
    with httpx.stream("GET", f"http://127.0.0.1:{port}/big?n={size}", headers={"Host": f"rm.localhost:{port}"},
                      trust_env=False, timeout=120) as r:
        assert r.status_code == 200
        assert sum(len(chunk) for chunk in r.iter_raw(1 << 20)) == size
    get(port, "/echo?after")
    agent.line(lambda l: "/echo?after" in l)
    with Store(db, readonly=True) as store:
        [row] = wait_for(lambda: [r for r in store.rows("path:/big") if r.duration is not None],
                         what="the large exchange stored finished", timeout=60)
        big = store.get(row.id)
    assert big.status == 200 and big.response is not None
    assert big.response.body_truncated and big.response.body_size == size
    assert 0 < len(big.response.body) < 1_000_000_000
    assert agent.stop() == 0
    assert not [l for l in agent.err if "dropped exchange" in l], agent.err


def test_requests_reads_the_file_the_agent_records_into_whatever_the_db_path_s_spelling(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # The agent read --db as its settings read a path (spaces around it dropped), requests took it
    # as typed: ``--db "captures.db "`` recorded into captures.db, and requests said "no captures
    # yet". And ``--db kept/`` (a folder meant) made a file named kept.
    spelled = f"{tmp_path / 'captures.db'} "
    agent, port, _ = start_agent(procs, env, local[0], Path(spelled))
    get(port, "/echo?spelled")
    wait_for(lambda: "/echo?spelled" in listed(env, Path(spelled)), what="the request, read at the same --db")
    assert agent.stop() == 0
    folder = f"{tmp_path / 'kept'}/"
    says = f"devtunnel: --db: expected the path of a file, got a folder's: {folder!r}"
    for command in (["http", str(local[0]), "--no-tui", "--api-port", "0"], ["requests"], ["show", "01M8"]):
        done = subprocess.run([*DEVTUNNEL, *command, "--db", folder], capture_output=True, text=True, timeout=30,
                              env=env)
        assert (done.returncode, done.stderr.splitlines()) == (2, [says]), command
    assert not (tmp_path / "kept").exists()


def test_space_freed_on_a_full_disk_takes_what_fits_of_the_captures_waiting(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # The captures waiting were retried as one transaction: while they were more than the space
    # freed, none was written, however many would have fitted (the agent stopped then, all lost).
    with tmpfs(tmp_path / "disk", "4m") as folder:
        _take_what_fits(folder, env, procs, local)


def _take_what_fits(folder: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]) -> None:
    try:
        (folder / "filler").write_bytes(b"\0" * 1_500_000)
        db = folder / "captures.db"
        agent, port, _ = start_agent(procs, env, local[0], db)
        for i in range(16):
            r = httpx.post(f"http://127.0.0.1:{port}/echo?n={i}", headers={"Host": f"rm.localhost:{port}"},
                           content=b"x" * 400_000, trust_env=False, timeout=5)
            assert r.status_code == 200
        agent.line(lambda l: "cannot write captures" in l and "the disk is full" in l, lines="err")
        before = len(listed(env, db).splitlines())
        (folder / "filler").unlink()
        wait_for(lambda: len(listed(env, db).splitlines()) > before, what="captures written into the space freed",
                 timeout=20)
        agent.stop()
        assert not [l for l in agent.err if "dropped exchange" in l], agent.err
        assert not any("Traceback" in l for l in agent.err), agent.err
    finally:
        for proc in procs:  # the file is open until it ends: stopped before the unmount
            if proc.popen.poll() is None:
                proc.stop()


def test_one_capture_too_big_for_the_space_freed_is_stored_cut_and_the_smaller_ones_behind_it_are_stored(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # The first capture waiting on a full disk was tried first, and when it failed the others waited
    # untried: space freed for a few small ones took none while a large one stood before them.
    with tmpfs(tmp_path / "disk", "8m") as folder:
        try:
            db = folder / "captures.db"
            agent = start(procs, env, "http", str(local[0]), "--no-tui", "--name", "rm", "--api-port", "0",
                          "--body-cap", "8mb", "--db", str(db))
            match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
            assert match is not None
            port = match.group(3)
            get(port, "/echo?first")
            wait_for(lambda: "/echo?first" in listed(env, db), what="the first request stored")
            fill(folder)
            size = 3_000_000
            r = httpx.post(f"http://127.0.0.1:{port}/echo?big", headers={"Host": f"rm.localhost:{port}"},
                           content=b"x" * size, trust_env=False, timeout=10)
            assert r.status_code == 200
            for i in range(10):
                get(port, f"/echo?small={i}")
            agent.line(lambda l: "cannot write captures" in l and "the disk is full" in l, lines="err")
            agent.line(lambda l: "/echo?small=9" in l)
            with open(folder / "filler", "r+b") as f:  # room for the small ones, not for the big one
                f.truncate(max(0, f.seek(0, os.SEEK_END) - 1_500_000))
            wait_for(lambda: "/echo?small=9" in (out := listed(env, db)) and "/echo?big" in out,
                     what="the small captures and the big one stored", timeout=20)
            with Store(db, readonly=True) as store:
                [row] = [r for r in store.rows() if r.target == "/echo?big"]
                big = store.get(row.id)
            assert big.request.body_truncated and big.request.body_size == size and len(big.request.body) < size
            assert agent.stop() == 0
            assert len([l for l in agent.err if f"exchange {big.id} does not fit" in l]) == 1, agent.err
            assert not [l for l in agent.err if "dropped exchange" in l], agent.err
            assert not any("Traceback" in l for l in agent.err), agent.err
        finally:
            for proc in procs:
                if proc.popen.poll() is None:
                    proc.stop()


@contextmanager
def ext4_remounting_read_only_on_error(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder on a small ext4 file system (a loop device) mounted ``errors=remount-ro``, and the
    name of its device: ``trigger_fs_error(device)`` makes the kernel remount it read-only, as after
    a disk error. Skipped where it cannot be made (not root, no loop device)."""
    img, folder = tmp_path / "fs.img", tmp_path / "ext4"
    folder.mkdir()
    with open(img, "wb") as f:
        f.truncate(32 << 20)
    if os.geteuid() != 0 or subprocess.run(["mkfs.ext4", "-q", "-F", str(img)], capture_output=True).returncode != 0:
        pytest.skip("needs root and mkfs.ext4")
    attached = subprocess.run(["losetup", "-f", "--show", str(img)], capture_output=True, text=True)
    if attached.returncode != 0:
        pytest.skip("needs a loop device")
    device = attached.stdout.strip()
    try:
        if subprocess.run(["mount", "-o", "errors=remount-ro", device, str(folder)], capture_output=True).returncode:
            pytest.skip("cannot mount an ext4 loop device")
        try:
            yield folder, Path(device).name
        finally:
            subprocess.run(["umount", str(folder)], check=True)
    finally:
        subprocess.run(["losetup", "-d", device], check=True)


def test_a_file_system_remounted_read_only_under_the_agent_is_named_so_not_a_failing_disk(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # ext4 remounts itself read-only after a disk error (errors=remount-ro): SQLite says "disk I/O
    # error", and the agent said "the disk may be over a quota, failing or gone; check it".
    with ext4_remounting_read_only_on_error(tmp_path) as (folder, device):
        try:
            db = folder / "captures.db"
            agent, port, _ = start_agent(procs, env, local[0], db)
            get(port, "/echo?before")
            wait_for(lambda: "/echo?before" in listed(env, db), what="the first request stored")
            Path(f"/sys/fs/ext4/{device}/trigger_fs_error").write_text("devtunnel test\n")
            get(port, "/echo?after")
            said = agent.line(lambda l: "cannot write captures" in l, lines="err")
            assert said.endswith(f"cannot write captures: {db} is on a file system that is now read-only (disk I/O "
                                 "error); remount it read-write or pass --db with a writable path")
            assert "/echo?before" in listed(env, db)  # still read
            assert agent.stop() == 1  # what could not be written is said at exit
            assert agent.err[-1] == (f"devtunnel: {db}: 1 exchange(s) not written after 5s ({db} is on a file system "
                                     "that is now read-only (disk I/O error); remount it read-write or pass --db with a "
                                     "writable path)")
            assert not any("Traceback" in l for l in agent.err), agent.err
        finally:
            for proc in procs:
                if proc.popen.poll() is None:
                    proc.stop()
