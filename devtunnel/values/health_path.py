"""The rule for a health path (``health = "/healthz"``), shared by the flag, the file and the runner."""

from __future__ import annotations

from devtunnel.values.relay_url import quoted_url

__all__ = ["health_path_problem"]


def health_path_problem(path: str) -> str | None:
    """Why ``path`` cannot be a health path, or None when it can (``/healthz``, ``/ready?full=1``)."""
    if not path.startswith("/"):
        return f"expected a path on the target such as /healthz, got {quoted_url(path)}"
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F or not ch.isascii() for ch in path):
        return f"expected a path without spaces, control or non-ASCII characters, got {quoted_url(path)}"
    if len(path) > 2048:
        return "expected a path of at most 2048 characters"
    return None
