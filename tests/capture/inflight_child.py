"""An agent-like process for the tests of exchanges left in flight: it records exchanges still running.

Usage: ``python inflight_child.py DB N``. Stores ``N`` exchanges unfinished (as a live snapshot
does) through a ``Recorder``, prints their ids once committed, then waits for a line on stdin:
``finish`` stores them finished and prints ``finished``; end of input (or 60 s) exits.
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store


def main() -> None:
    recorder = Recorder(Store(sys.argv[1]))
    running = [
        Exchange(id=new_id(), tunnel="child", started_at=time.time(),
                 request=Request(method="GET", target=f"/stream/{n}".encode(), headers=Headers([("Host", "c.localhost")])),
                 response=Response(status=200, headers=Headers([("Content-Type", "text/event-stream")])))
        for n in range(int(sys.argv[2]))
    ]
    for ex in running:
        recorder.submit(ex)
    recorder.flush()
    print("\n".join(ex.id for ex in running), flush=True)
    deadline = time.monotonic() + 60  # bounded even if nobody ends us
    for line in sys.stdin:
        if line.strip() == "finish":
            for ex in running:
                recorder.submit(replace(ex, duration=time.time() - ex.started_at))
            recorder.flush()
            print("finished", flush=True)
        if time.monotonic() > deadline:
            break
    recorder.close()


if __name__ == "__main__":
    main()
