"""Numbers written as text: one rule for "this is a whole number ``int`` reads as it is"."""

from __future__ import annotations

__all__ = ["is_decimal"]


def is_decimal(text: str) -> bool:
    """Whether ``text`` is ASCII digits alone (at least one): what ``int(text)`` reads without a
    sign, a space or an underscore. ``str.isdigit`` alone also takes ``²`` and other digits of
    Unicode, which ``int`` refuses with a ValueError (a traceback where a clear message was due)."""
    return text.isascii() and text.isdigit()
