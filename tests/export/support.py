"""For exporter and replay tests: run a generated command in a folder of its own."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devtunnel.export import Export


def run_shell(result: Export, directory: Path, *, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    """Write ``result.files`` under ``directory`` and run ``result.text`` with ``bash -c`` there
    (a value holding a tab is written in ANSI-C quotes, ``$'...'``, which bash and zsh read).

    HOME points at ``directory`` so no user configuration (.curlrc) changes the request, and
    proxy variables are removed so the command talks to loopback directly.
    """
    for name, content in result.files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["HOME"] = str(directory)
    return subprocess.run(
        ["bash", "-c", result.text], cwd=directory, env=env, capture_output=True, timeout=timeout, check=False
    )
