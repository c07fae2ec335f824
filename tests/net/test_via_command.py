"""``devtunnel http TARGET --via PROVIDER`` as a real subprocess.

Plain ``ssh:`` runs against a real OpenSSH server on loopback, started here with its own keys.
cloudflared and the ssh services cannot be reached from tests: fake programs of the same name
on PATH print the providers' documented output and forward traffic to the port they were given,
so the whole path (provider -> pinned relay port -> tunnel -> app, captured) is exercised.
"""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, process_alive, wait_for
from tests.kit.procs import DEVTUNNEL, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)
from tests.test_via import CLOUDFLARED, LOCALHOST_RUN, PINGGY, SERVEO

SSH_URL = re.compile(r"^Forwarding (http://127\.0\.0\.1:(\d+)) -> (\S+)$")


# -- a real sshd on loopback ------------------------------------------------------------------------
@dataclass
class Sshd:
    port: int
    user: str
    key: Path
    known_hosts: Path
    log: Path


def _sshd_program() -> str | None:
    return shutil.which("sshd") or next((p for p in ("/usr/sbin/sshd", "/usr/local/sbin/sshd") if os.access(p, os.X_OK)),
                                        None)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """An OpenSSH server on 127.0.0.1 that lets this user in with a key made here."""
    program = _sshd_program()
    if program is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH (sshd, ssh, ssh-keygen) is not installed: apt-get install openssh-server")
    base = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "user_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(base / name)], check=True)
    (base / "authorized_keys").write_text((base / "user_key.pub").read_text())
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)  # its privilege separation directory
    config = base / "sshd_config"
    config.write_text("\n".join([
        f"HostKey {base / 'host_key'}",
        f"AuthorizedKeysFile {base / 'authorized_keys'}",
        f"PidFile {base / 'sshd.pid'}",
        "StrictModes no",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        "PermitRootLogin prohibit-password",
        "AllowTcpForwarding yes",
        "GatewayPorts no",
        "",
    ]))
    port = free_port()
    log = base / "sshd.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([program, "-D", "-e", "-f", str(config), "-p", str(port),
                                 "-o", "ListenAddress=127.0.0.1"], stdout=out, stderr=subprocess.STDOUT)
    try:
        def listening() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"sshd exited {proc.returncode}: {log.read_text()}")
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, what="sshd to listen")
        yield Sshd(port, getpass.getuser(), base / "user_key", base / "known_hosts", log)
    finally:
        proc.terminate()
        proc.wait(10)


def api_tunnel(api_port: int) -> dict:
    [tunnel] = httpx.get(f"http://127.0.0.1:{api_port}/api/tunnels", trust_env=False).json()["tunnels"]
    return tunnel


def captured(env: dict[str, str], db: Path) -> list[dict]:
    out = subprocess.run([*DEVTUNNEL, "requests", "--json", "--db", str(db), "-n", "0"], env=env,
                         capture_output=True, text=True, timeout=30, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def paths_captured(env: dict[str, str], db: Path) -> list[str]:
    return [entry["path"] for entry in captured(env, db)]


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])



# -- plain ssh against a real sshd ------------------------------------------------------------------
def test_via_ssh_serves_captures_and_comes_back_with_the_same_url_when_ssh_dies(
    sshd: Sshd, tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    env = dict(env, DEVTUNNEL_SSH_OPTIONS=f"-i {sshd.key} -o UserKnownHostsFile={sshd.known_hosts}")
    db, api_port = tmp_path / "c.db", free_port()
    via = f"ssh:{sshd.user}@127.0.0.1:{sshd.port}"
    agent = start(procs, env, "http", str(local[0]), "--via", via, "--no-tui", "--name", "hooks",
                  "--api-port", str(api_port), "--db", str(db))
    line = agent.line(lambda l: l.startswith("Forwarding"), timeout=30)
    match = SSH_URL.match(line)
    assert match is not None, (line, sshd.log.read_text())
    url, remote_port, target = match.groups()
    assert target == f"http://127.0.0.1:{local[0]}" and int(remote_port) not in (sshd.port, local[0])

    r = httpx.post(f"{url}/echo?via=ssh", content=b"first", trust_env=False, timeout=10)
    assert r.status_code == 200 and base64.b64decode(r.json()["body"]) == b"first"
    assert b"/echo?via=ssh" in local[1].seen_targets
    wait_for(lambda: "/echo?via=ssh" in paths_captured(env, db), what="the request in `devtunnel requests`")

    tunnel = api_tunnel(api_port)
    assert (tunnel["public_url"], tunnel["state"]) == (url, "online")
    status = tunnel["via"]
    assert (status["provider"], status["state"], status["restarts"]) == (via, "online", 0)
    ssh_pid = status["pid"]
    assert parent_of(ssh_pid) == agent.popen.pid, "the ssh devtunnel started"

    os.kill(ssh_pid, signal.SIGKILL)

    def back() -> dict | None:
        t = api_tunnel(api_port)
        v = t["via"]
        return t if v["restarts"] >= 1 and v["state"] == "online" and v["pid"] != ssh_pid else None

    again = wait_for(back, timeout=30, what="the ssh provider to come back")
    assert again["public_url"] == url and again["state"] == "online"
    r = httpx.get(f"{url}/echo?again=1", trust_env=False, timeout=10)
    assert r.status_code == 200
    wait_for(lambda: "/echo?again=1" in paths_captured(env, db), what="the second request captured")
    new_pid = again["via"]["pid"]
    assert agent.stop() == 0
    assert [l for l in agent.out if l.startswith("Forwarding")] == [line], "the URL never changed"
    wait_for(lambda: not process_alive(new_pid), what="ssh to stop with devtunnel")

    # The next run asks the server for the same port: the URL pasted elsewhere still works.
    second = start(procs, env, "http", str(local[0]), "--via", via, "--no-tui", "--name", "hooks",
                   "--api-port", "0", "--db", str(db))
    assert second.line(lambda l: l.startswith("Forwarding"), timeout=30) == line
    assert httpx.get(f"{url}/echo?third=1", trust_env=False, timeout=10).status_code == 200
    assert second.stop() == 0


@contextlib.contextmanager
def _remembered_and_taken(env: dict[str, str], key: str) -> Iterator[int]:
    """A port remembered for the tunnel ``key`` (ports.json), held by this test while the block
    runs: the local sshd forwards "localhost", both 127.0.0.1 and ::1, and is content with either."""
    with contextlib.ExitStack() as held:
        taken = held.enter_context(socket.socket())
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with contextlib.suppress(OSError):  # a machine without IPv6
            taken6 = held.enter_context(socket.socket(socket.AF_INET6))
            taken6.bind(("::1", port))
            taken6.listen(1)
        state = Path(env["XDG_STATE_HOME"]) / "devtunnel"
        state.mkdir(parents=True)
        (state / "ports.json").write_text(json.dumps({"ssh": {key: port}}))
        yield port


def test_via_ssh_takes_any_port_when_the_one_remembered_is_taken_on_the_server(
    sshd: Sshd, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    env = dict(env, DEVTUNNEL_SSH_OPTIONS=f"-i {sshd.key} -o UserKnownHostsFile={sshd.known_hosts}")
    via = f"ssh:{sshd.user}@127.0.0.1:{sshd.port}"
    # The server (on this machine) cannot listen there any more.
    with _remembered_and_taken(env, f"moved {via}") as port:
        agent = start(procs, env, "http", str(local[0]), "--via", via, "--no-tui", "--name", "moved",
                      "--api-port", "0", "--no-record")
        match = SSH_URL.match(agent.line(lambda l: l.startswith("Forwarding"), timeout=60))
        assert match is not None and int(match.group(2)) != port
        agent.line(lambda l: f"the server would not give port {port} again; asking for any port" in l, lines="err")
        assert httpx.get(f"{match.group(1)}/echo", trust_env=False, timeout=10).status_code == 200
        assert agent.stop() == 0
    assert json.loads((Path(env["XDG_STATE_HOME"]) / "devtunnel" / "ports.json").read_text())["ssh"][f"moved {via}"] == int(match.group(2))


def test_via_ssh_without_a_name_gets_the_same_url_on_the_next_run(
    sshd: Sshd, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # Without --name each run's tunnel has a new random name: the port is remembered for the
    # server and the target instead, as docs/via.md promises.
    env = dict(env, DEVTUNNEL_SSH_OPTIONS=f"-i {sshd.key} -o UserKnownHostsFile={sshd.known_hosts}")
    args = ["http", str(local[0]), "--via", f"ssh:{sshd.user}@127.0.0.1:{sshd.port}", "--no-tui", "--api-port", "0",
            "--no-record"]
    first = start(procs, env, *args)
    line = first.line(lambda l: l.startswith("Forwarding"), timeout=30)
    assert first.stop() == 0
    second = start(procs, env, *args)
    assert second.line(lambda l: l.startswith("Forwarding"), timeout=30) == line
    match = SSH_URL.match(line)
    assert match is not None
    assert httpx.get(f"{match.group(1)}/echo?second=1", trust_env=False, timeout=10).status_code == 200
    assert second.stop() == 0


def test_via_ssh_gets_its_remembered_port_back_when_the_server_frees_it_a_moment_later(
    sshd: Sshd, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # A quick restart: the server may hold the port for the run just ended a moment longer. It
    # took any port (a new URL) after the first refusal; it asks again before giving up.
    env = dict(env, DEVTUNNEL_SSH_OPTIONS=f"-i {sshd.key} -o UserKnownHostsFile={sshd.known_hosts}")
    via = f"ssh:{sshd.user}@127.0.0.1:{sshd.port}"
    with _remembered_and_taken(env, f"back {via}") as port:
        agent = start(procs, env, "http", str(local[0]), "--via", via, "--no-tui", "--name", "back",
                      "--api-port", "0", "--no-record")
        agent.line(lambda l: "restarting" in l, lines="err", timeout=30)  # refused once
    match = SSH_URL.match(agent.line(lambda l: l.startswith("Forwarding"), timeout=60))
    assert match is not None and int(match.group(2)) == port, agent.err
    assert not any("asking for any port" in l for l in agent.err)
    assert httpx.get(f"{match.group(1)}/echo", trust_env=False, timeout=10).status_code == 200
    assert agent.stop() == 0


def test_via_ssh_reads_its_port_whatever_log_level_the_users_ssh_config_sets(
    sshd: Sshd, tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # "LogLevel ERROR" (a common way to hush "Permanently added ... to the list of known hosts")
    # also hushes "Allocated port N", the only place the URL is. -F stands in for ~/.ssh/config,
    # which ssh finds through the password database, not $HOME.
    config = tmp_path / "ssh_config"
    config.write_text("Host *\n    LogLevel ERROR\n")
    env = dict(env, DEVTUNNEL_SSH_OPTIONS=f"-F {config} -i {sshd.key} -o UserKnownHostsFile={sshd.known_hosts}")
    args = ["http", str(local[0]), "--via", f"ssh:{sshd.user}@127.0.0.1:{sshd.port}", "--no-tui", "--api-port", "0",
            "--no-record"]
    first = start(procs, env, *args)
    line = first.line(lambda l: l.startswith("Forwarding"), timeout=30)
    match = SSH_URL.match(line)
    assert match is not None
    assert httpx.get(f"{match.group(1)}/echo", trust_env=False, timeout=10).status_code == 200
    assert first.stop() == 0
    again = start(procs, env, *args)  # asks for that port again: ssh -v says it got it
    assert again.line(lambda l: l.startswith("Forwarding"), timeout=30) == line
    assert again.stop() == 0


def test_via_ssh_that_cannot_log_in_keeps_retrying_and_says_why(
    sshd: Sshd, tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    env = dict(env, DEVTUNNEL_SSH_OPTIONS=f"-i {stranger} -o UserKnownHostsFile={tmp_path / 'kh'} -o IdentitiesOnly=yes")
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--via", f"ssh:{sshd.user}@127.0.0.1:{sshd.port}", "--no-tui",
                  "--api-port", str(api_port), "--no-record")
    warning = agent.line(lambda l: "exited with code 255" in l, lines="err", timeout=30)
    assert "Permission denied" in warning and "restarting" in warning
    tunnel = api_tunnel(api_port)
    assert tunnel["state"] in ("starting", "reconnecting") and tunnel["public_url"] == ""
    assert tunnel["via"]["state"] in ("starting", "restarting")
    assert not any(l.startswith("Forwarding") for l in agent.out)
    assert agent.stop() == 0


# -- fake cloudflared and ssh services ---------------------------------------------------------------
FAKE = '''\
#!{python}
"""A stand-in for {name}: prints what the real one prints, then forwards to the port it was given."""
import os, socket, sys, threading

args = sys.argv[1:]
if "--url" in args:
    target = args[args.index("--url") + 1].split("://", 1)[1]
else:
    target = args[args.index("-R") + 1].split(":", 1)[1]
host, port = target.rsplit(":", 1)
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen(16)
with open(os.environ["FAKE_PROVIDER_PORTS"], "a") as f:
    f.write(str(listener.getsockname()[1]) + "\\n")
with open(os.environ["FAKE_PROVIDER_PORTS"]) as f:
    run = len(f.read().split())
outputs = {outputs!r}
destination = args[-1] if "--url" not in args else "cloudflared"
stream = sys.stderr if destination == "cloudflared" else sys.stdout
text = outputs[destination]
if os.environ.get("FAKE_NEW_URL_EACH_RUN"):  # like a quick tunnel: a new name every time
    text = text.replace("seasonal-deck", "run%d-deck" % run)
stream.write(text)
stream.flush()

def pipe(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
        dst.shutdown(socket.SHUT_WR)
    except OSError:
        pass

def edge(client, upstream, peer):
    """What Cloudflare's edge does to a request: appends the client's address to X-Forwarded-For
    and sets CF-Connecting-IP (to the first request of a connection: the tests send one each)."""
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        data = client.recv(65536)
        if not data:
            break
        head += data
    head, sep, rest = head.partition(b"\\r\\n\\r\\n")
    lines = [line for line in head.split(b"\\r\\n") if not line.lower().startswith(b"cf-connecting-ip:")]
    xff = [i for i, line in enumerate(lines) if line.lower().startswith(b"x-forwarded-for:")]
    if xff:
        lines[xff[-1]] += b", " + peer
    else:
        lines.append(b"X-Forwarded-For: " + peer)
    lines.append(b"CF-Connecting-IP: " + peer)
    upstream.sendall(b"\\r\\n".join(lines) + sep + rest)
    pipe(client, upstream)

while True:
    client, (peer, _) = listener.accept()
    upstream = socket.create_connection((host, int(port)))
    forward = edge if destination == "cloudflared" else lambda client, upstream, peer: pipe(client, upstream)
    threading.Thread(target=forward, args=(client, upstream, peer.encode()), daemon=True).start()
    threading.Thread(target=pipe, args=(upstream, client), daemon=True).start()
'''

OUTPUTS = {"cloudflared": CLOUDFLARED, "nokey@localhost.run": LOCALHOST_RUN, "a.pinggy.io": PINGGY,
           "serveo.net": SERVEO}


def fake_bin(tmp_path: Path) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name in ("cloudflared", "ssh"):
        program = bin_dir / name
        program.write_text(FAKE.format(python=sys.executable, name=name, outputs=OUTPUTS))
        program.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize(
    ("via", "url"),
    [
        ("cloudflared", "https://seasonal-deck-organisms-sf.trycloudflare.com"),
        ("localhost.run", "https://8beaa541ba3dc2.lhr.life"),
        ("pinggy", "https://rnxyz-94-156-23-153.a.free.pinggy.link"),
        ("serveo", "https://3a3ec5498a744c307bc67ca14072c0db.serveo.net"),
    ],
)
def test_a_provider_prints_its_url_and_its_traffic_is_captured_on_the_way(
    via: str, url: str, tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    ports = tmp_path / "provider-ports"
    # The tunnel is defined in a file (tunnels.NAME.via), as `devtunnel http NAME` starts it.
    config = tmp_path / "devtunnel.toml"
    config.write_text(f'[tunnels.shop]\ntarget = {local[0]}\nvia = "{via}"\n')
    env = dict(env, PATH=f"{fake_bin(tmp_path)}{os.pathsep}{env['PATH']}", FAKE_PROVIDER_PORTS=str(ports),
               DEVTUNNEL_CONFIG=str(config))
    db, api_port = tmp_path / "c.db", free_port()
    agent = start(procs, env, "http", "shop", "--no-tui", "--api-port", str(api_port), "--db", str(db))
    assert agent.line(lambda l: l.startswith("Forwarding"), timeout=30) == f"Forwarding {url} -> http://127.0.0.1:{local[0]}"
    [forwarder] = [int(p) for p in ports.read_text().split()]

    # What the provider's edge sends: its own Host, through the provider to devtunnel.
    public_host = url.split("://", 1)[1]
    r = httpx.post(f"http://127.0.0.1:{forwarder}/echo?from={via}", content=b"event", trust_env=False, timeout=10,
                   headers={"Host": public_host})
    assert r.status_code == 200 and base64.b64decode(r.json()["body"]) == b"event"
    assert ["host", public_host] in r.json()["headers"]
    wait_for(lambda: f"/echo?from={via}" in paths_captured(env, db), what="the request captured")
    [entry] = [e for e in captured(env, db) if e["path"] == f"/echo?from={via}"]
    assert (entry["tunnel"], entry["host"], entry["status"]) == ("shop", public_host, 200)

    tunnel = api_tunnel(api_port)
    assert (tunnel["public_url"], tunnel["state"]) == (url, "online")
    assert tunnel["via"]["provider"] == via and tunnel["via"]["state"] == "online"
    endpoints = httpx.get(f"http://127.0.0.1:{api_port}/api/endpoints", trust_env=False).json()["endpoints"]
    assert [e["url"] for e in endpoints] == [url]
    assert agent.stop() == 0


def test_a_provider_that_dies_is_restarted_and_a_new_url_is_printed_again(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    ports = tmp_path / "provider-ports"
    env = dict(env, PATH=f"{fake_bin(tmp_path)}{os.pathsep}{env['PATH']}", FAKE_PROVIDER_PORTS=str(ports),
               FAKE_NEW_URL_EACH_RUN="1")
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--via", "cloudflared", "--no-tui", "--api-port", str(api_port),
                  "--no-record")
    first = "https://run1-deck-organisms-sf.trycloudflare.com"
    agent.line(lambda l: l == f"Forwarding {first} -> http://127.0.0.1:{local[0]}", timeout=30)
    status = api_tunnel(api_port)["via"]
    assert parent_of(status["pid"]) == agent.popen.pid
    os.kill(status["pid"], signal.SIGKILL)

    second = "https://run2-deck-organisms-sf.trycloudflare.com"
    agent.line(lambda l: l == f"Forwarding {second} -> http://127.0.0.1:{local[0]}", timeout=30)
    agent.line(lambda l: "cloudflared killed by SIGKILL (" in l and l.endswith("); restarting"), lines="err")
    agent.line(lambda l: f"cloudflared gave a new public URL: {second}" in l, lines="err")
    tunnel = api_tunnel(api_port)
    assert (tunnel["public_url"], tunnel["state"], tunnel["via"]["restarts"]) == (second, "online", 1)
    forwarder = int(ports.read_text().split()[-1])
    r = httpx.get(f"http://127.0.0.1:{forwarder}/echo", headers={"Host": second.split("//")[1]}, trust_env=False,
                  timeout=10)
    assert r.status_code == 200
    assert agent.stop() == 0


def test_a_provider_does_not_outlive_a_devtunnel_killed_outright(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    env = dict(env, PATH=f"{fake_bin(tmp_path)}{os.pathsep}{env['PATH']}",
               FAKE_PROVIDER_PORTS=str(tmp_path / "provider-ports"))
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--via", "cloudflared", "--no-tui", "--api-port", str(api_port),
                  "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"), timeout=30)
    pid = api_tunnel(api_port)["via"]["pid"]
    assert process_alive(pid)
    agent.kill()  # SIGKILL: devtunnel gets no chance to stop it
    wait_for(lambda: not process_alive(pid), what="the provider to end with devtunnel")


def test_a_url_off_the_providers_domain_is_not_announced(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "ssh"  # localhost.run's ssh, told what to print by the test
    program.write_text(f"#!{sys.executable}\nimport os, sys, time\n"
                       "sys.stdout.write(os.environ['FAKE_OUTPUT']); sys.stdout.flush(); time.sleep(600)\n")
    program.chmod(0o755)
    output = ("evil.example.com tunneled with tls termination, https://evil.example.com\n"
              "x tunneled with tls termination, https://x.lhr.life.evil.example.com\n"
              "8beaa541ba3dc2.lhr.life tunneled with tls termination, https://8beaa541ba3dc2.lhr.life\n")
    agent = start(procs, dict(env, PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_OUTPUT=output), "http", "8000",
                  "--via", "localhost.run", "--no-tui", "--api-port", "0", "--no-record")
    first = agent.line(lambda l: l.startswith("Forwarding"), timeout=30)
    assert first == "Forwarding https://8beaa541ba3dc2.lhr.life -> http://127.0.0.1:8000"
    assert agent.stop() == 0
    assert not any("evil" in line for line in agent.out + agent.err), (agent.out, agent.err)


CLOUDFLARED_OFFLINE = """\
2026-02-03T13:19:49Z INF Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way to experiment and try it out.
2026-02-03T13:19:49Z INF Requesting new quick Tunnel on trycloudflare.com...
failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp: lookup api.trycloudflare.com: no such host
"""


def scripted_cloudflared(tmp_path: Path) -> Path:
    """A cloudflared that prints ``$FAKE_OUTPUT`` on stderr, as the real one logs, and exits with ``$FAKE_EXIT``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    program = bin_dir / "cloudflared"
    program.write_text(f"#!{sys.executable}\nimport os, sys\n"
                       "sys.stderr.write(os.environ['FAKE_OUTPUT']); sys.stderr.flush(); sys.exit(int(os.environ['FAKE_EXIT']))\n")
    program.chmod(0o755)
    return bin_dir


def test_cloudflared_that_gets_no_quick_tunnel_announces_no_url_and_says_why(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    env = dict(env, PATH=f"{scripted_cloudflared(tmp_path)}{os.pathsep}{env['PATH']}", FAKE_OUTPUT=CLOUDFLARED_OFFLINE,
               FAKE_EXIT="1")
    api_port = free_port()
    agent = start(procs, env, "http", "8000", "--via", "cloudflared", "--no-tui", "--api-port", str(api_port),
                  "--no-record")
    failed = "exited with code 1 (failed to request quick Tunnel: "
    wait_for(lambda: any(f"cloudflared failed 2 times in a row ({failed}" in l for l in agent.err), timeout=30,
             what=f"two failed runs; out={agent.out} err={agent.err}")  # it was restarted, and failed again
    assert sum(failed in l for l in agent.err) == 2, agent.err
    tunnel = api_tunnel(api_port)
    assert tunnel["public_url"] == "" and tunnel["via"]["url"] is None and tunnel["state"] != "online"
    assert agent.stop() == 0
    assert not any(l.startswith("Forwarding") for l in agent.out), agent.out
    assert not any("back online" in l for l in agent.err), agent.err


def test_cloudflared_refused_a_quick_tunnel_for_too_many_requests_says_so(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    # What cloudflared prints when trycloudflare.com rate-limits this address: its last line
    # ("invalid character 'e'") does not say why; the line before does.
    output = (CLOUDFLARED_OFFLINE.splitlines()[0] + "\n"
              "2026-05-29T09:25:34Z INF Requesting new quick Tunnel on trycloudflare.com...\n"
              "2026-05-29T09:25:34Z ERR Error unmarshaling QuickTunnel response: error code: 1015 "
              "error=\"invalid character 'e' looking for beginning of value\" status_code=\"429 Too Many Requests\"\n"
              "failed to unmarshal quick Tunnel: invalid character 'e' looking for beginning of value\n")
    env = dict(env, PATH=f"{scripted_cloudflared(tmp_path)}{os.pathsep}{env['PATH']}", FAKE_OUTPUT=output, FAKE_EXIT="1")
    api_port = free_port()
    agent = start(procs, env, "http", "8000", "--via", "cloudflared", "--no-tui", "--api-port", str(api_port),
                  "--no-record")
    line = agent.line(lambda l: "cloudflared exited with code 1 (" in l, lines="err", timeout=30)
    assert "trycloudflare.com refused a new quick tunnel: 429 Too Many Requests" in line, line
    assert "429 Too Many Requests" in api_tunnel(api_port)["via"]["message"]
    assert agent.stop() == 0


# -- what is refused ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("via", "message"),
    [
        ("cloudflared", "devtunnel: --via cloudflared: cloudflared is not installed: get it from"),
        ("pinggy", "devtunnel: --via pinggy: ssh is not installed: install the OpenSSH client"),
        ("ssh:me@127.0.0.1", "devtunnel: --via ssh:me@127.0.0.1: ssh is not installed"),
    ],
)
def test_a_missing_program_is_one_line_saying_what_to_install_and_exit_2(
    via: str, message: str, tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    agent = start(procs, dict(env, PATH=str(empty)), "http", "8000", "--via", via, "--no-tui", "--api-port", "0",
                  "--no-record")
    assert agent.wait(30) == 2
    assert len(agent.err) == 1 and agent.err[0].startswith(message), agent.err
    assert agent.out == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--via", "ngrok"], "devtunnel: --via 'ngrok': expected one of relay, cloudflared"),
        (["--via", "ssh:-oProxyCommand=x"], "expected ssh:USER@HOST"),
        (["--via", "ssh:me@-oProxyCommand"], "devtunnel: --via 'ssh:me@-oProxyCommand': expected ssh:USER@HOST"),
        (["--via", "ssh:"], "devtunnel: --via 'ssh:': expected ssh:USER@HOST"),
        (["--via", "ssh:host:notaport"], "devtunnel: --via 'ssh:host:notaport': expected ssh:USER@HOST"),
        (["--via", "cloudflared", "--relay", "ws://127.0.0.1:9"], "devtunnel: give --via or --relay, not both"),
    ],
)
def test_a_bad_via_is_refused_with_exit_2(args: list[str], message: str, env: dict[str, str], procs: list[Proc]) -> None:
    agent = start(procs, env, "http", "8000", *args, "--no-tui", "--api-port", "0", "--no-record")
    assert agent.wait(30) == 2
    assert any(message in line for line in agent.err), agent.err
    assert not any("Traceback" in line for line in agent.err)


def test_the_api_reports_a_provider_that_cannot_start_as_a_failed_tunnel(
    tmp_path: Path, env: dict[str, str], procs: list[Proc]
) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    api_port = free_port()
    agent = start(procs, dict(env, PATH=str(empty)), "agent", "--api-port", str(api_port), "--db", str(tmp_path / "c.db"))
    agent.line(lambda l: l.startswith("API "))
    base = f"http://127.0.0.1:{api_port}/api/tunnels"
    r = httpx.post(base, json={"addr": "8000", "name": "cf", "via": "cloudflared"}, trust_env=False, timeout=20)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["state"] == "failed" and "cloudflared is not installed" in body["error"]
    assert body["via"]["state"] == "failed" and body["public_url"] == ""
    bad = httpx.post(base, json={"addr": "8000", "via": "ngrok"}, trust_env=False, timeout=20)
    assert bad.status_code == 400 and "expected one of" in bad.json()["msg"]
    assert agent.stop() == 0


@pytest.mark.parametrize("rule", [["--allow-ip", "127.0.0.1"], ["--rules", "RULES"]])
def test_rules_by_client_address_behind_a_provider_are_refused_not_blind(
    rule: list[str], tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    """Behind an ssh service every client is 127.0.0.1: `--allow-ip 127.0.0.1` let every client
    in, and any other list refused them all, without a word."""
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\naction = "deny"\nmatch = "ip:10.0.0.0/8"\n')
    ports = tmp_path / "provider-ports"
    env = dict(env, PATH=f"{fake_bin(tmp_path)}{os.pathsep}{env['PATH']}", FAKE_PROVIDER_PORTS=str(ports))
    args = [str(rules) if a == "RULES" else a for a in rule]
    refused = start(procs, env, "http", str(local[0]), "--via", "localhost.run", *args, "--no-tui", "--api-port", "0")
    assert refused.wait(30) == 2
    assert any("behind --via localhost.run every client is 127.0.0.1" in line for line in refused.err), refused.err
    assert not any("Traceback" in line for line in refused.err)
    assert not ports.exists()  # no provider was started


def test_behind_cloudflared_rules_judge_the_client_address_its_edge_gives(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    """Cloudflare's edge appends each client's address to X-Forwarded-For: `--allow-ip` and
    `--rate-limit` tell clients apart behind cloudflared, and each request is recorded from its
    client (`ip:`), not from cloudflared on this machine."""
    ports = tmp_path / "provider-ports"
    env = dict(env, PATH=f"{fake_bin(tmp_path)}{os.pathsep}{env['PATH']}", FAKE_PROVIDER_PORTS=str(ports))
    db = tmp_path / "c.db"
    agent = start(procs, env, "http", str(local[0]), "--via", "cloudflared", "--allow-ip", "127.0.0.2",
                  "--allow-ip", "127.0.0.3", "--rate-limit", "1/m", "--no-tui", "--api-port", "0", "--db", str(db))
    agent.line(lambda l: l.startswith("Forwarding https://seasonal-deck"), timeout=30)
    [forwarder] = [int(p) for p in ports.read_text().split()]
    host = {"Host": "seasonal-deck-organisms-sf.trycloudflare.com"}

    def status(source: str, path: str, forged: str = "") -> int:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(transport=transport, trust_env=False, timeout=10) as client:
            return client.get(f"http://127.0.0.1:{forwarder}{path}",
                              headers={**host, **({"X-Forwarded-For": forged} if forged else {})}).status_code

    assert status("127.0.0.2", "/echo?a") == 200
    assert status("127.0.0.3", "/echo?b") == 200  # a bucket of its own
    assert status("127.0.0.2", "/echo?c") == 429
    assert status("127.0.0.4", "/echo?d", forged="127.0.0.2") == 403  # the edge appends the real one
    wait_for(lambda: len(captured(env, db)) == 4, what="the four requests recorded")
    by_client = {}
    for ip in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        out = subprocess.run([*DEVTUNNEL, "requests", "--json", "--db", str(db), "-n", "0", "--filter", f"ip:{ip}"],
                             env=env, capture_output=True, text=True, timeout=30, check=True)
        by_client[ip] = sorted((e["path"], e["status"]) for e in json.loads(out.stdout))
    assert by_client == {"127.0.0.2": [("/echo?a", 200), ("/echo?c", 429)], "127.0.0.3": [("/echo?b", 200)],
                         "127.0.0.4": [("/echo?d", 403)]}
    assert agent.stop() == 0


def test_a_rule_by_client_address_added_over_the_api_to_a_tunnel_behind_a_provider_is_a_400(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    env = dict(env, PATH=f"{fake_bin(tmp_path)}{os.pathsep}{env['PATH']}",
               FAKE_PROVIDER_PORTS=str(tmp_path / "provider-ports"))
    api_port = free_port()
    agent = start(procs, env, "http", str(local[0]), "--via", "localhost.run", "--name", "shop", "--no-tui",
                  "--api-port", str(api_port), "--no-record")
    agent.line(lambda l: l.startswith("Forwarding"), timeout=30)
    rules = f"http://127.0.0.1:{api_port}/api/tunnels/shop/rules"
    answer = httpx.post(rules, json={"action": "allow-ip", "ips": ["127.0.0.1"]}, trust_env=False, timeout=10)
    assert answer.status_code == 400, answer.text
    assert "every client is 127.0.0.1" in answer.json()["msg"]
    fine = httpx.post(rules, json={"action": "deny", "match": "path:/admin"}, trust_env=False, timeout=10)
    assert fine.status_code == 201, fine.text
    assert httpx.get(rules, trust_env=False, timeout=10).json()["rules"][0]["action"] == "deny"
    assert agent.stop() == 0
