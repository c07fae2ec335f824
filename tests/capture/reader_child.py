"""A long-lived reader of a capture database, as the inspector is: one read-only store, read again
every 0.1 s. Usage: ``python reader_child.py DB``; prints the targets it reads (space-separated,
oldest first) each time they change, for 60 s at most."""

from __future__ import annotations

import sys
import time

from devtunnel.capture.store import Store


def main() -> None:
    store = Store(sys.argv[1], readonly=True)
    shown = None
    deadline = time.monotonic() + 60  # bounded even if nobody ends it
    while time.monotonic() < deadline:
        now = " ".join(row.display_target for row in store.rows())
        if now != shown:
            print(f"read: {now}", flush=True)
            shown = now
        time.sleep(0.1)


if __name__ == "__main__":
    main()
