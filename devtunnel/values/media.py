"""A Content-Type's media type, as every part that reads a body by its kind compares it."""

from __future__ import annotations

__all__ = ["FORM", "is_form", "media_type"]

FORM = "application/x-www-form-urlencoded"


def media_type(content_type: str | None) -> str:
    """``content_type``'s media type, lowered, its parameters left out (``""`` for none)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_form(content_type: str | None) -> bool:
    """Whether ``content_type`` says ``application/x-www-form-urlencoded``."""
    return media_type(content_type) == FORM
