"""Tunnel benchmark: the same load direct to the local service and through relay + agent.

Usage:
    .venv/bin/python bench/tunnel.py [--duration 5] [--big-mib 1024] [--no-record]

Needs wrk, curl and nginx (``../shared/bench-peers/setup.sh`` installs them). Everything runs on
127.0.0.1 and every step is bounded in time. Prints requests/s and latency at 1 and 50
connections, MiB/s for an upload and a download of ``--big-mib`` MiB, each through the tunnel
and direct in the same run with the ratio tunnel/direct, and the peak RSS of relay and agent.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVTUNNEL = str(Path(sys.executable).with_name("devtunnel"))
WRK_LUA = """
done = function(summary, latency, requests)
  io.write(string.format('WRKJSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d,"non2xx":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


class RssSampler(threading.Thread):
    """Samples the summed VmRSS of some PIDs every 50 ms; ``peak`` in MiB."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak: dict[str, float] = {k: 0.0 for k in pids}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.05):
            for name, pid in self.pids.items():
                try:
                    text = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                m = re.search(r"VmRSS:\s+(\d+) kB", text)
                if m:
                    self.peak[name] = max(self.peak[name], int(m.group(1)) / 1024)

    def stop(self) -> dict[str, float]:
        self._done.set()
        self.join()
        return self.peak


def wait_forwarding(agent: subprocess.Popen[bytes], out: Path, timeout: float = 20.0) -> None:
    """Wait until the agent printed its ``Forwarding`` line to ``out``."""
    deadline = time.monotonic() + timeout
    while b"Forwarding" not in out.read_bytes():
        if agent.poll() is not None:
            raise SystemExit(f"agent exited before the tunnel came up:\n{out.read_text(errors='replace')}")
        if time.monotonic() > deadline:
            raise SystemExit(f"the tunnel did not come up within {timeout:g} s")
        time.sleep(0.05)


def start_tunnel(tree: Path, work: Path, backend_port: int, procs: list[subprocess.Popen[bytes]], *,
                 relay_python: list[str] | None = None, agent_python: list[str] | None = None,
                 env: dict[str, str] | None = None, timeout: float = 20.0,
                 ) -> tuple[int, subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """Start ``devtunnel relay`` and ``devtunnel http 127.0.0.1:BACKEND_PORT --no-tui`` from
    ``tree`` (appended to ``procs``, for ``stop_all``), and wait until the tunnel is up.

    ``relay_python`` / ``agent_python``: the command that runs Python for each (a profiler's or
    valgrind's in front of it, say; ``-m devtunnel ...`` follows). Returns the relay's port, the
    relay's process and the agent's.
    """
    relay_port = free_port()
    env = dict(os.environ, XDG_STATE_HOME=str(work / f"state-{relay_port}"), PYTHONPATH=str(tree), **(env or {}))
    relay = subprocess.Popen(
        [*(relay_python or [sys.executable]), "-m", "devtunnel", "relay", "--listen", f"127.0.0.1:{relay_port}",
         "--domain", "localhost", "--token", "bench"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, env=env, cwd=work)
    procs.append(relay)
    wait_port(relay_port, timeout)
    out = work / f"agent-{relay_port}.out"
    with open(out, "wb") as f:
        agent = subprocess.Popen(
            [*(agent_python or [sys.executable]), "-m", "devtunnel", "http", f"127.0.0.1:{backend_port}",
             "--relay", f"ws://127.0.0.1:{relay_port}", "--token", "bench", "--name", "bench", "--no-tui",
             "--api-port", "0"],
            stdout=f, stderr=subprocess.STDOUT, env=env, cwd=work)
    procs.append(agent)
    wait_forwarding(agent, out, timeout)
    return relay_port, relay, agent


def callgrind_total(path: Path) -> int | None:
    """The instructions a callgrind output file counts (None while it is not written whole)."""
    found = re.search(r"^(?:summary|totals): (\d+)", path.read_text(errors="replace"), re.M)
    return int(found.group(1)) if found else None


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process (last started first), then wait, killing any that hang."""
    for p in reversed(procs):
        p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def nginx(workdir: Path, port: int, big_bytes: int) -> subprocess.Popen[bytes]:
    www = workdir / "www"
    www.mkdir(parents=True, exist_ok=True)
    (www / "index.html").write_bytes(b"a" * 1024)
    big = www / "big.bin"
    if not big.exists() or big.stat().st_size != big_bytes:
        with open(big, "wb") as f:  # random-ish content, so nothing can compress it
            block = os.urandom(1 << 20)
            for _ in range(big_bytes >> 20):
                f.write(block)
    (workdir / "tmp").mkdir(exist_ok=True)
    conf = workdir / "nginx.conf"
    echo = "/usr/lib/nginx/modules/ngx_http_echo_module.so"
    conf.write_text(
        (f"load_module {echo};\n" if os.path.exists(echo) else "")
        + f"""worker_processes 1; daemon off; pid {workdir}/nginx.pid; error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{ access_log off; sendfile on; keepalive_requests 1000000; keepalive_timeout 120s;
  client_body_temp_path {workdir}/tmp; proxy_temp_path {workdir}/tmp; fastcgi_temp_path {workdir}/tmp;
  uwsgi_temp_path {workdir}/tmp; scgi_temp_path {workdir}/tmp;
  server {{ listen 127.0.0.1:{port}; root {www};
    location = / {{ try_files /index.html =404; }}
    location = /big {{ try_files /big.bin =404; }}
    location = /upload {{ client_max_body_size 0; client_body_buffer_size 128m; echo_read_request_body; echo "ok"; }}
  }} }}
"""
    )
    proc = subprocess.Popen(["/usr/sbin/nginx", "-c", str(conf), "-e", str(workdir / "nginx-error.log")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def wrk(url: str, host: str | None, conns: int, duration: int, lua: Path) -> dict[str, float]:
    cmd = ["wrk", f"-t{min(2, conns)}", f"-c{conns}", f"-d{duration}s", "--latency", "-s", str(lua)]
    if host:
        cmd += ["-H", f"Host: {host}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=duration + 30).stdout
    m = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if not m:
        raise SystemExit(f"wrk printed no result:\n{out}")
    r = json.loads(m.group(1))
    return {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
            "p99_ms": r["p99_us"] / 1000, "errors": r["errors"] + r["non2xx"]}


PYLOAD = Path(__file__).resolve().parent / "pyload.py"


def pyload(url: str, host: str, conns: int, seconds: float, requests: int | None = None) -> dict[str, float]:
    """Run ``bench/pyload.py load`` (``requests``: stop after that many answers, ``seconds``
    bounding it either way) and return what it printed on its ``PYLOADJSON`` line."""
    argv = [sys.executable, str(PYLOAD), "load", url, host, str(conns), str(seconds)]
    if requests is not None:
        argv.append(str(requests))
    printed = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60, check=False).stdout
    line = next((ln for ln in printed.splitlines() if ln.startswith("PYLOADJSON ")), None)
    if line is None:
        raise SystemExit(f"pyload printed no result:\n{printed}")
    return json.loads(line.split(" ", 1)[1])  # type: ignore[no-any-return]


def transfer(kind: str, url: str, host: str | None, big: Path) -> float:
    cmd = ["curl", "-sS", "-m", "180", "-o", "/dev/null", "-w", "%{http_code} %{size_download} %{size_upload} %{time_total}"]
    if host:
        cmd += ["-H", f"Host: {host}"]
    if kind == "upload":
        cmd += ["-H", "Expect:", "-X", "POST", "-T", str(big), url + "/upload"]
    else:
        cmd += [url + "/big"]
    code, down, up, t = subprocess.run(cmd, capture_output=True, text=True, timeout=200).stdout.split()
    size = int(float(up if kind == "upload" else down))
    if code != "200" or size != big.stat().st_size:
        raise SystemExit(f"{kind} through {url} failed: HTTP {code}, {size} bytes")
    return size / (1 << 20) / float(t)


def measure(url: str, host: str | None, args: argparse.Namespace, lua: Path, big: Path,
            sampler_pids: dict[str, int] | None) -> dict[str, object]:
    wrk(url, host, 50, 1, lua)  # warm-up
    res: dict[str, object] = {}
    res["c50"] = wrk(url, host, 50, args.duration, lua)
    res["c1"] = wrk(url, host, 1, args.duration, lua)
    sampler = RssSampler(sampler_pids) if sampler_pids else None
    if sampler:
        sampler.start()
    res["download"] = transfer("download", url, host, big)
    res["upload"] = transfer("upload", url, host, big)
    if sampler:
        res["rss"] = sampler.stop()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--big-mib", type=int, default=1024, help="size of the upload/download (default 1024)")
    ap.add_argument("--no-record", action="store_true", help="run the agent with recording off")
    args = ap.parse_args()
    for tool in ("wrk", "curl"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is missing: run ../shared/bench-peers/setup.sh")
    if not os.path.exists("/usr/sbin/nginx"):
        raise SystemExit("nginx is missing: run ../shared/bench-peers/setup.sh")

    work = Path(tempfile.mkdtemp(prefix="devtunnel-bench-"))
    work.chmod(0o755)  # nginx's worker runs as an unprivileged user and must read the files
    lua = work / "report.lua"
    lua.write_text(WRK_LUA)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        backend_port, relay_port = free_port(), free_port()
        procs.append(nginx(work, backend_port, args.big_mib << 20))
        big = work / "www" / "big.bin"
        direct = measure(f"http://127.0.0.1:{backend_port}", None, args, lua, big, None)

        env = dict(os.environ, XDG_STATE_HOME=str(work / "state"))
        relay_log = open(work / "relay.log", "wb")
        relay = subprocess.Popen([DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{relay_port}", "--domain", "localhost",
                                  "--token", "bench"], stdout=relay_log, stderr=subprocess.STDOUT, env=env)
        procs.append(relay)
        wait_port(relay_port)
        agent_cmd = [DEVTUNNEL, "http", f"127.0.0.1:{backend_port}", "--relay", f"ws://127.0.0.1:{relay_port}",
                     "--token", "bench", "--name", "bench", "--no-tui", "--api-port", "0"]
        if args.no_record:
            agent_cmd.append("--no-record")
        # The agent's per-request lines go to a file: a pipe would need a reader in this process,
        # competing for the same CPUs as the processes measured.
        agent_out = work / "agent.out"
        with open(agent_out, "wb") as out:
            agent = subprocess.Popen(agent_cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        procs.append(agent)
        wait_forwarding(agent, agent_out)
        host = f"bench.localhost:{relay_port}"
        tunnel = measure(f"http://127.0.0.1:{relay_port}", host, args, lua, big,
                         {"relay": relay.pid, "agent": agent.pid})
    finally:
        stop_all(procs)
        shutil.rmtree(work, ignore_errors=True)

    def row(name: str, key: str, sub: str | None, fmt: str, higher_better: bool) -> str:
        d = direct[key] if sub is None else direct[key][sub]  # type: ignore[index]
        t = tunnel[key] if sub is None else tunnel[key][sub]  # type: ignore[index]
        ratio = t / d if d else float("nan")
        return f"| {name} | {fmt.format(d)} | {fmt.format(t)} | {ratio:.3f} |"

    rec = "off" if args.no_record else "on"
    print(f"\n## devtunnel tunnel vs direct (nginx), recording {rec}, {os.cpu_count()} CPUs\n")
    print("| metric | direct | tunnel | tunnel/direct |\n|---|---:|---:|---:|")
    print(row("req/s, 50 connections", "c50", "rps", "{:,.0f}", True))
    print(row("p50 ms, 50 connections", "c50", "p50_ms", "{:.3f}", False))
    print(row("p99 ms, 50 connections", "c50", "p99_ms", "{:.3f}", False))
    print(row("req/s, 1 connection", "c1", "rps", "{:,.0f}", True))
    print(row("p50 ms, 1 connection", "c1", "p50_ms", "{:.3f}", False))
    print(row("p99 ms, 1 connection", "c1", "p99_ms", "{:.3f}", False))
    print(row(f"download {args.big_mib} MiB, MiB/s", "download", None, "{:,.0f}", True))
    print(row(f"upload {args.big_mib} MiB, MiB/s", "upload", None, "{:,.0f}", True))
    rss = tunnel["rss"]  # type: ignore[index]
    print(f"\nPeak RSS during the transfers: relay {rss['relay']:.0f} MiB, agent {rss['agent']:.0f} MiB")  # type: ignore[index]
    errs = tunnel["c50"]["errors"] + tunnel["c1"]["errors"]  # type: ignore[index]
    print(f"wrk errors/non-2xx through the tunnel: {errs:.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
