"""Pure exporters in a registry: an exchange (or many) in, text and side files out.

>>> result = export("curl", [exchange], base_url="http://127.0.0.1:8080")
>>> print(result.text)            # run it after writing result.files

Nothing here writes a file, touches the clipboard or reads global settings: every option is a
keyword argument, and unknown formats or options raise ``ExportError``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable

from devtunnel.capture.model import Exchange
from devtunnel.errors import ExportError
from devtunnel.export.base import Export, Exporter, Pieces
from devtunnel.export.curl import curl_pieces, export_curl
from devtunnel.export.har import export_har, har_pieces
from devtunnel.export.httpie import export_httpie, httpie_pieces
from devtunnel.export.pytest_module import export_pytest, pytest_pieces
from devtunnel.export.raw import export_raw, raw_pieces
from devtunnel.export.redact import REDACTED, SECRET_HEADERS, redact_exchange, redact_headers
from devtunnel.values.terminal import quoted

__all__ = [
    "EXPORTERS",
    "BY_START_TIME",
    "PIECES",
    "Export",
    "Exporter",
    "Pieces",
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

PIECES: dict[str, Pieces] = {
    "curl": curl_pieces,
    "har": har_pieces,
    "raw": raw_pieces,
    "httpie": httpie_pieces,
    "pytest": pytest_pieces,
}
"""Format name -> ``(exchanges, **options) -> Iterator[Export]``: the text and side files of
``EXPORTERS``' a piece at a time (a command, a test, an entry), the exchanges read one by one, so
an export of a million is written as it is read. The same options as ``EXPORTERS``; HAR's
exchanges come in start-time order (``BY_START_TIME``), pytest's are iterated twice."""

BY_START_TIME = frozenset({"har"})
"""Formats that list the exchanges by start time (ties in the order given); the others, in the order given."""


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
