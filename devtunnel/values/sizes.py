"""Byte sizes written by people: ``10mb``, ``512k``, ``1.5 GiB``, ``0``."""

from __future__ import annotations

import re

from devtunnel.errors import ConfigError
from devtunnel.values.terminal import quoted

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
_SIZE_RE = re.compile(r"(\d+(?:\.\d+)?|\.\d+)\s*([a-z]*)")


def size_bytes(text: str) -> int | None:
    """The one rule for a size a person writes: ``10mb``, ``512k``, ``1.5 GiB``, ``.5m``, ``17``.

    Units are powers of 1024 and case-insensitive (``k``, ``kb``, ``kib``, ``m``, ``g`` ...); a bare
    number is bytes. ``None`` when ``text`` is not a size. Options (``--body-cap``), config and the
    filter language (``size:>1mib``) all read sizes through this function.
    """
    match = _SIZE_RE.fullmatch(text.strip().lower())
    if match is None or match.group(2) not in _UNITS:
        return None
    return int(round(float(match.group(1)) * _UNITS[match.group(2)]))


def parse_size(text: str) -> int:
    """Parse a size such as ``10mb`` into bytes (:func:`size_bytes`), for options and config.

    ``0`` means "no limit" wherever a limit is configured.

    Raises:
        ConfigError: the text is not a size.
    """
    size = size_bytes(text)
    if size is None:
        raise ConfigError(f"{quoted(text)} is not a size: use a number of bytes or a unit such as 512k, 10mb, 1gb")
    return size


def format_size(n: int) -> str:
    """``n`` bytes for people (``10 MiB``, ``1.5 KiB``, ``17 B``): messages, the CLI, the inspector's detail."""
    for unit, factor in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            value = n / factor
            return f"{value:.0f} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{n} B"


def compact_size(n: int) -> str:
    """``n`` bytes in at most 5 cells for a table column: ``512B``, ``1.5K``, ``12M``, ``3.0G``."""
    value = float(n)
    for unit in ("B", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "B" or value >= 10 else f"{value:.1f}{unit}"
        value /= 1024
    raise AssertionError("unreachable: the loop returns at G")


def size_text(n: int) -> int | str:
    """``n`` bytes as config writes it and :func:`parse_size` reads it back: ``"10mb"`` when whole, else ``n``."""
    for unit, factor in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10)):
        if n and n % factor == 0:
            return f"{n // factor}{unit}"
    return n
