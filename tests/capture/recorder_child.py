"""A recording process for the crash test: records exchanges until it is killed.

Usage: ``python recorder_child.py DB``. Prints each id once its transaction has committed.
"""

from __future__ import annotations

import sys
import time

from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store


def main() -> None:
    store = Store(sys.argv[1])
    recorder = Recorder(store)
    recorder.subscribe(lambda ids: print("\n".join(ids), flush=True))
    deadline = time.monotonic() + 60  # bounded even if nobody kills us
    n = 0
    while time.monotonic() < deadline:
        recorder.submit(Exchange(
            id=new_id(), tunnel="crash", started_at=time.time(),
            request=Request(method="POST", target=f"/n/{n}".encode(), headers=Headers([("Host", "c.localhost")]),
                            body=b"x" * 2000, body_size=2000),
            response=Response(status=200, body=b"ok", body_size=2), duration=0.001,
        ))
        n += 1
        if n % 20 == 0:
            time.sleep(0.002)  # let the writer commit many small transactions


if __name__ == "__main__":
    main()
