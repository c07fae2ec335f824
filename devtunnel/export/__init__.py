"""Pure exporters in a registry: an exchange (or many) in, text and side files out.

>>> result = export("curl", [exchange], base_url="http://127.0.0.1:8080")
>>> print(result.text)            # run it after writing result.files

Nothing here writes a file, touches the clipboard or reads global settings: every option is a
keyword argument, and unknown formats or options raise ``ExportError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable, Iterator

from devtunnel.capture.model import Exchange
from devtunnel.errors import ExportError
from devtunnel.export.base import Export, Exporter
from devtunnel.export.curl import export_curl
from devtunnel.export.har import export_har, har_text
from devtunnel.export.httpie import export_httpie
from devtunnel.export.pytest_module import export_pytest
from devtunnel.export.raw import export_raw
from devtunnel.export.redact import REDACTED, SECRET_HEADERS, redact_exchange, redact_headers
from devtunnel.values.terminal import quoted

__all__ = [
    "EXPORTERS",
    "STREAMED",
    "Export",
    "Exporter",
    "REDACTED",
    "SECRET_HEADERS",
    "export",
    "options_of",
    "redact_exchange",
    "redact_headers",
]

EXPORTERS: dict[str, Exporter] = {
    "curl": export_curl,
    "har": export_har,
    "raw": export_raw,
    "httpie": export_httpie,
    "pytest": export_pytest,
}
"""Format name -> exporter ``(exchanges, **options) -> Export``."""

STREAMED: dict[str, Callable[..., Iterator[str]]] = {"har": har_text}
"""Formats whose text can be written as the exchanges are read, one at a time: format name ->
``(exchanges in start-time order, **options) -> the same text as EXPORTERS' a piece at a time``.
(The others give side files, which are checked before anything is written.)"""


def options_of(format: str) -> list[str]:
    """The keyword options the exporter for ``format`` accepts."""
    exporter = _exporter(format)
    return [p.name for p in inspect.signature(exporter).parameters.values() if p.kind is p.KEYWORD_ONLY]


def _exporter(format: str) -> Exporter:
    try:
        return EXPORTERS[format]
    except KeyError:
        known = ", ".join(EXPORTERS)
        raise ExportError(f"unknown export format {quoted(format)}; known formats: {known}") from None


def export(format: str, exchanges: Exchange | Iterable[Exchange], **options: object) -> Export:
    """Export ``exchanges`` in ``format``.

    Args:
        format: a key of ``EXPORTERS`` (``curl``, ``har``, ``raw``, ``httpie``).
        exchanges: one exchange or several; one-request formats give one block per exchange,
            HAR gives one log holding them all.
        **options: the exporter's keyword options (``redact=True``, ``body_dir="."``, ...).

    Raises:
        ExportError: unknown format or option, no exchanges, or an exchange the format cannot
            express.
    """
    exporter = _exporter(format)
    accepted = options_of(format)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ExportError(
            f"the {format} format has no option {', '.join(map(repr, unknown))}; its options: {', '.join(accepted)}"
        )
    items = [exchanges] if isinstance(exchanges, Exchange) else list(exchanges)
    return exporter(items, **options)
