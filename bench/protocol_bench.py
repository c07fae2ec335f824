"""How fast the tunnel protocol encodes and decodes, against baselines measured in the same run.

    .venv/bin/python bench/protocol_bench.py [--quick]

Small cycles: a GET with browser-like headers, a 200 with a short body (REQUEST, RESPONSE and
DATA frames: 3 frames encoded and decoded per cycle), in batches of 100 per ``data_to_send`` and
one at a time. The baseline is h11 doing the same exchange as HTTP/1.1 (client and server in
one process, also sans-IO pure Python). Bulk: DATA on one stream, 256 KiB per ``send_data``,
received in 64 KiB pieces as WebSocket messages would deliver it; the baseline copies the same
bytes twice (the least any encode + decode can do). Absolute numbers are noise on a shared
machine; compare the ratios.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from devtunnel.protocol import AgentConnection, DataReceived, RelayConnection

REQUEST_HEADERS = (
    (b"Host", b"demo.example.net"),
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br"),
    (b"Cookie", b"session=3f1c2a9b8d7e6f5a4b3c2d1e0f; theme=dark"),
)
RESPONSE_HEADERS = (
    (b"Content-Type", b"application/json"),
    (b"Content-Length", b"17"),
    (b"Cache-Control", b"no-store"),
    (b"Date", b"Thu, 26 Nov 2026 12:00:00 GMT"),
)
BODY = b'{"status": "ok"}\n'


def best_rate(run: Callable[[], int], repeat: int) -> float:
    """Units per second of the fastest of ``repeat`` runs (``run`` returns its unit count)."""
    best = 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        units = run()
        best = max(best, units / (time.perf_counter() - start))
    return best


def handshaken(**options: int) -> tuple[RelayConnection, AgentConnection]:
    relay = RelayConnection(**options)
    agent = AgentConnection(**options)
    agent.send_hello("bench", "bench")
    relay.receive_data(agent.data_to_send())
    relay.send_welcome("bench", "http://bench.localhost")
    agent.receive_data(relay.data_to_send())
    return relay, agent


def tunnel_cycles(cycles: int, batch: int) -> Callable[[], int]:
    def run() -> int:
        relay, agent = handshaken()
        for _ in range(cycles // batch):
            for _ in range(batch):
                relay.open_request(b"GET", b"/api/items?page=2", b"1.1", REQUEST_HEADERS, end_stream=True)
            for event in agent.receive_data(relay.data_to_send()):
                sid = event.stream_id  # type: ignore[attr-defined]
                agent.send_response(sid, 200, b"OK", RESPONSE_HEADERS, end_stream=False)
                agent.send_data(sid, BODY, end_stream=True)
            events = relay.receive_data(agent.data_to_send())
            assert len(events) == 2 * batch and relay.open_streams == 0
        return cycles

    return run


def h11_cycles(cycles: int) -> Callable[[], int] | None:
    try:
        import h11
    except ImportError:
        return None

    def run() -> int:
        client = h11.Connection(h11.CLIENT)
        server = h11.Connection(h11.SERVER)
        request = h11.Request(method=b"GET", target=b"/api/items?page=2", headers=REQUEST_HEADERS)
        response = h11.Response(status_code=200, reason=b"OK", headers=RESPONSE_HEADERS)
        for _ in range(cycles):
            server.receive_data(client.send(request) + client.send(h11.EndOfMessage()))
            while not isinstance(server.next_event(), h11.EndOfMessage):
                pass
            data = server.send(response) + server.send(h11.Data(data=BODY)) + server.send(h11.EndOfMessage())
            client.receive_data(data)
            while not isinstance(client.next_event(), h11.EndOfMessage):
                pass
            client.start_next_cycle()
            server.start_next_cycle()
        return cycles

    return run


def tunnel_bulk(total: int, send_size: int, recv_size: int) -> Callable[[], int]:
    payload = bytes(range(256)) * (send_size // 256)

    def run() -> int:
        relay, agent = handshaken(initial_window=1 << 30, max_frame_size=1 << 20)
        sid = relay.open_request(b"POST", b"/upload", b"1.1", (), end_stream=False)
        agent.receive_data(relay.data_to_send())
        received = 0
        for _ in range(total // send_size):
            relay.send_data(sid, payload)
            wire = relay.data_to_send()
            for start in range(0, len(wire), recv_size):
                for event in agent.receive_data(wire[start : start + recv_size]):
                    if isinstance(event, DataReceived):
                        received += len(event.data)
                        agent.acknowledge(sid, len(event.data))
            relay.receive_data(agent.data_to_send())
        assert received == total
        return total

    return run


def copy_twice(total: int, send_size: int, recv_size: int) -> Callable[[], int]:
    payload = bytes(range(256)) * (send_size // 256)

    def run() -> int:
        received = 0
        for _ in range(total // send_size):
            wire = b"".join([b"123456789", payload])
            view = memoryview(wire)
            for start in range(0, len(wire), recv_size):
                received += len(bytes(view[start : start + recv_size]))
        return total

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer iterations (a smoke run)")
    args = parser.parse_args()
    cycles = 2_000 if args.quick else 20_000
    repeat = 1 if args.quick else 3
    mib = 1 << 20
    bulk = (8 if args.quick else 64) * mib

    batched = best_rate(tunnel_cycles(cycles, 100), repeat)
    single = best_rate(tunnel_cycles(cycles // 4, 1), repeat)
    print(f"small cycles, batches of 100: {batched:12,.0f} cycles/s  {3 * batched:12,.0f} frames/s (encode+decode)")
    print(f"small cycles, one at a time:  {single:12,.0f} cycles/s  {3 * single:12,.0f} frames/s")
    baseline = h11_cycles(cycles // 4)
    if baseline is not None:
        h11_rate = best_rate(baseline, repeat)
        print(f"h11 baseline (HTTP/1.1):      {h11_rate:12,.0f} cycles/s")
        print(f"  ratio tunnel/h11: batched {batched / h11_rate:.1f}x, one at a time {single / h11_rate:.1f}x")
    else:
        print("h11 baseline: not installed, skipped")

    data_rate = best_rate(tunnel_bulk(bulk, 256 << 10, 64 << 10), repeat) / mib
    copy_rate = best_rate(copy_twice(bulk, 256 << 10, 64 << 10), repeat) / mib
    print(f"bulk DATA (256 KiB sends, 64 KiB reads): {data_rate:10,.0f} MiB/s")
    print(f"copy-twice baseline:                     {copy_rate:10,.0f} MiB/s")
    print(f"  ratio tunnel/copy: {data_rate / copy_rate:.2f}")


if __name__ == "__main__":
    main()
