"""A small real HTTP app for the ``--run`` tests, started by devtunnel as the user's command.

    python app_fixture.py PORT [--exit-after N] [--ready-file PATH] [--child-pidfile PATH]

* answers ``GET /anything`` with ``ok PID COUNT``; with ``--exit-after N`` it exits (code 3) right
  after answering its Nth request and closing that connection: a crash mid-traffic, between two
  answers. Answers are written one at a time and the exit happens in the Nth's turn, so a request
  that reaches the app meanwhile gets no byte (as from an app that died before reading it), never
  an answer cut after its head; ``--exit-delay S`` makes the app that slow to die;
* ``--drop N``: the first N requests to each path starting ``/drop`` are read and their
  connection closed unanswered (as an app slow to die does with what reaches it as it exits);
* a request to a path starting ``/crash`` makes the app exit (code 3) at once, unanswered: a
  request that brings the app down each time it is handled; a POST to ``/unread-crash`` does it
  before reading its body (the kernel resets the connection: bytes of it unread);
* ``/healthz`` answers 503 until ``--ready-file`` exists, then 200;
* ``--child-pidfile`` starts a ``sleep`` child and writes its pid there (to prove the whole
  group is stopped);
* ``--stopped-file PATH``: on SIGTERM it takes ``--stop-delay`` seconds to shut down, as an app
  finishing its work does, then writes PATH and exits 0;
* ``--listen-file PATH``: it listens only once PATH exists (an app slow to start);
* ``--backlog N``: its listen backlog (default 256); ``--serial``: it accepts and answers one
  connection at a time (as a dev server without threads), so connections queue in the backlog;
* ``--queue-file PATH``: before each accept it appends to PATH how many connections the kernel
  queued for it, and the most it may (the listening socket's ``TCP_INFO``, Linux): a queue found
  past that most has had a connection's SYN dropped (the client tries again after 1 s);
* prints a hostile line (terminal escapes) at start, and one line per request.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--exit-after", type=int, default=0)
parser.add_argument("--ready-file")
parser.add_argument("--child-pidfile")
parser.add_argument("--exit-delay", type=float, default=0.0)
parser.add_argument("--stopped-file")
parser.add_argument("--stop-delay", type=float, default=0.5)
parser.add_argument("--drop", type=int, default=0)
parser.add_argument("--listen-file")
parser.add_argument("--backlog", type=int, default=256)
parser.add_argument("--serial", action="store_true")
parser.add_argument("--queue-file")
args = parser.parse_args()
count = 0
drops: dict[str, int] = {}
turn = threading.Lock()
"""Held while an answer is written; the exit keeps it."""


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        with turn:
            self.answer()

    def do_POST(self) -> None:
        if self.path.startswith("/unread-crash"):
            print(f"crashing on {self.path}", file=sys.stderr, flush=True)
            os._exit(3)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with turn:
            self.answer()

    def answer(self) -> None:
        global count
        if self.path == "/healthz":
            ready = args.ready_file is None or os.path.exists(args.ready_file)
            self.send_response(200 if ready else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path.startswith("/crash"):
            print(f"crashing on {self.path}", file=sys.stderr, flush=True)
            os._exit(3)
        if self.path.startswith("/drop"):
            drops[self.path] = drops.get(self.path, 0) + 1
            if drops[self.path] <= args.drop:
                print(f"dropped {self.path} #{drops[self.path]}", flush=True)
                self.close_connection = True
                return  # read, never answered: the connection closes with no byte sent
        count += 1
        body = f"ok {os.getpid()} {count}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        print(f"served {self.path} #{count}", flush=True)
        if args.exit_after and count >= args.exit_after:
            self.connection.shutdown(socket.SHUT_WR)  # the answer is sent whole and ended
            time.sleep(args.exit_delay)
            print("exiting on purpose", file=sys.stderr, flush=True)
            os._exit(3)  # in this answer's turn: no other request is answered, even in part

    def log_message(self, format: str, *values: object) -> None:
        pass


if args.stopped_file:
    def shut_down(signum: int, frame: object) -> None:
        time.sleep(args.stop_delay)
        with open(args.stopped_file, "w") as f:
            f.write("stopped cleanly\n")
        os._exit(0)

    signal.signal(signal.SIGTERM, shut_down)
if args.child_pidfile:
    child = subprocess.Popen(["sleep", "600"])
    with open(args.child_pidfile, "w") as f:
        f.write(str(child.pid))


class Server(HTTPServer if args.serial else ThreadingHTTPServer):  # type: ignore[misc]
    request_queue_size = args.backlog

    def get_request(self) -> tuple[socket.socket, object]:
        if args.queue_file:
            # struct tcp_info: 8 bytes, then u32 rto ato snd_mss rcv_mss unacked sacked. For a
            # listening socket unacked is the accept queue's length and sacked its most.
            info = self.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 32)
            queued, most = struct.unpack_from("8x6I", info)[4:6]
            with open(args.queue_file, "a") as f:
                f.write(f"{queued} {most}\n")
        return self.socket.accept()


if args.listen_file:
    while not os.path.exists(args.listen_file):
        time.sleep(0.01)
server = Server(("127.0.0.1", args.port), Handler)
print(f"listening on {args.port} \x1b]0;pwned\x07\x1b[2J", flush=True)
server.serve_forever()
