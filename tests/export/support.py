"""Helpers for exporter and replay tests: an exchange factory and a runner for generated commands."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id
from devtunnel.export import Export


def make_exchange(
    method: str = "GET",
    target: bytes = b"/",
    headers: list[tuple[bytes | str, bytes | str]] | None = None,
    body: bytes = b"",
    response: Response | None = None,
    **fields: object,
) -> Exchange:
    """An exchange with sensible defaults (a Host header, started at a fixed time)."""
    if headers is None:
        headers = [("Host", "pub.example")]
    request = Request(method=method, target=target, headers=Headers(headers), body=body, body_size=len(body))
    values: dict[str, object] = {"tunnel": "demo", "started_at": 1_764_158_400.25, "target_url": "http://127.0.0.1:9"}
    values.update(fields)
    return Exchange(id=new_id(), request=request, response=response, **values)  # type: ignore[arg-type]


def run_shell(result: Export, directory: Path, *, timeout: float = 20) -> subprocess.CompletedProcess[bytes]:
    """Write ``result.files`` under ``directory`` and run ``result.text`` with ``sh -c`` there.

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
        ["sh", "-c", result.text], cwd=directory, env=env, capture_output=True, timeout=timeout, check=False
    )
