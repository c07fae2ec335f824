"""Byte sizes written by people: ``10mb``, ``512k``, ``1.5 GiB``, ``0``."""

from __future__ import annotations

import re

from devtunnel.errors import ConfigError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
}
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_size(text: str) -> int:
    """Parse a size such as ``10mb`` into bytes.

    Units are powers of 1024 and case-insensitive (``k``, ``kb``, ``kib``, ``m``, ``g`` ...);
    a bare number is bytes. ``0`` means "no limit" wherever a limit is configured.

    Raises:
        ConfigError: the text is not a size.
    """
    match = _SIZE_RE.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _UNITS:
        raise ConfigError(f"{text!r} is not a size: use a number of bytes or a unit such as 512k, 10mb, 1gb")
    return int(float(match.group(1)) * _UNITS[match.group(2)])


def format_size(n: int) -> str:
    """Render ``n`` bytes briefly (``10 MiB``, ``512 KiB``, ``17 B``) for messages."""
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"
