"""Edit one field of a JSON or form body by a dotted path: ``data.object.amount=999``, ``Body=hi``.

The value is read as JSON when it is valid JSON (``999``, ``true``, ``{"a": 1}``, ``"text"``) and
as a plain string otherwise (``usd``). A path segment that is a whole number indexes a list
(``data.items.0.price``); ``\\.`` is a dot inside a key. Missing objects along the path are
created, as ``jq``'s ``setpath`` does; anything else that is in the way is an error naming it.
The body keeps its layout where it can: indented bodies stay indented, compact ones compact,
CRLF line ends stay CRLF, and an ASCII body keeps its ``\\u`` escapes.

A body whose Content-Type is ``application/x-www-form-urlencoded`` (Twilio's, Slack's slash
commands and interactions, GitHub's form hooks) has fields instead: ``NAME=VALUE`` sets the
first field of that name to the text after ``=`` as typed (a form holds text only), or appends
it when the form has none; ``FIELD.PATH=VALUE`` edits the JSON that field holds (Slack's and
GitHub's ``payload``) as above, unless a field is named the whole path. The other fields keep
their bytes.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote_plus, unquote_plus

from devtunnel.errors import ConfigError
from devtunnel.values.media import is_form
from devtunnel.values.terminal import quoted

__all__ = ["Assignment", "parse_assignment", "set_path", "apply_assignments"]

Assignment = tuple[list[str], Any]


def parse_assignment(text: str) -> Assignment:
    """``"a.b=1"`` as ``(["a", "b"], 1)``.

    Raises:
        ConfigError: no ``=``, or an empty path or segment.
    """
    path, sep, raw = text.partition("=")
    if not sep or not path:
        raise ConfigError(f"--set {quoted(text)}: expected PATH=VALUE, e.g. data.object.amount=999")
    parts = [p.replace("\\.", ".") for p in re.split(r"(?<!\\)\.", path)]
    if any(not p for p in parts):
        raise ConfigError(f"--set {quoted(text)}: the path {quoted(path)} has an empty segment")
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return parts, value


def _layout(body: bytes) -> dict[str, Any]:
    match = re.search(rb"\n([ \t]+)\S", body)
    if match:
        indent = match.group(1)
        return {"indent": "\t" if indent.startswith(b"\t") else len(indent)}
    if re.search(rb"[,:] ", body):
        return {}
    return {"separators": (",", ":")}


def set_path(data: Any, parts: list[str], value: Any, shown: str = "") -> Any:
    """``data`` (parsed JSON) with the value at ``parts`` replaced; ``data`` itself is changed."""
    shown = shown or ".".join(parts)
    if not parts:
        return value
    node = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not re.fullmatch(r"-?\d+", part):
                raise ConfigError(f"--set {shown}: {'.'.join(parts[:i]) or 'the body'} is a list; index it with a number")
            index = int(part)
            if not -len(node) <= index < len(node):
                raise ConfigError(f"--set {shown}: {where} is past the end of a list of {len(node)}")
            if last:
                node[index] = value
            else:
                node = node[index]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"--set {shown}: {'.'.join(parts[:i]) or 'the body'} is {type(node).__name__} "
                              f"{json.dumps(node)[:40]}, not an object")
    return data


def apply_assignments(body: bytes, assignments: list[str], content_type: str | None = None) -> bytes:
    """``body`` (JSON, or a form when ``content_type`` says so) with every ``PATH=VALUE`` of
    ``assignments`` applied in order.

    Raises:
        ConfigError: the body is not JSON (nor a form), or an assignment does not fit it (the
            message says where).
    """
    if not assignments:
        return body
    if body.startswith(b"\x1f\x8b"):  # gzip's magic: json.loads would speak of a byte 0x8b
        raise ConfigError("--set needs a JSON or form body; this one is gzip-compressed: give it decoded with --body "
                          "(and drop its Content-Encoding with -H 'Content-Encoding:')")
    if is_form(content_type):
        return _apply_to_form(body, assignments)
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--set needs a JSON body (or a form: application/x-www-form-urlencoded); "
                          f"this one is not JSON ({exc})") from None
    for text in assignments:
        parts, value = parse_assignment(text)
        data = set_path(data, parts, value, text.partition("=")[0])
    return _dumped(data, body)


def _dumped(data: Any, body: bytes) -> bytes:
    """``data`` as JSON in the layout of ``body``, the JSON it was read from."""
    # An ASCII body keeps its \u escapes; CRLF line ends stay CRLF (JSON text holds no raw newline).
    out = json.dumps(data, ensure_ascii=body.isascii(), **_layout(body)).encode("utf-8")
    newline = b"\r\n" if b"\r\n" in body else b"\n"
    if newline != b"\n":
        out = out.replace(b"\n", newline)
    return out + newline if body.endswith(b"\n") else out


def _apply_to_form(body: bytes, assignments: list[str]) -> bytes:
    try:
        fields = body.decode("utf-8").split("&") if body else []
    except UnicodeDecodeError:
        raise ConfigError("--set: this form body is not UTF-8 text") from None

    def find(name: str) -> int | None:
        return next((i for i, f in enumerate(fields) if unquote_plus(f.partition("=")[0]) == name), None)

    for text in assignments:
        parts, value = parse_assignment(text)
        shown, _, raw = text.partition("=")
        name = ".".join(parts)
        at = find(name)
        if at is None and len(parts) == 1:
            fields.append(f"{quote_plus(name)}={quote_plus(raw)}")
        elif at is not None:
            fields[at] = f"{fields[at].partition('=')[0]}={quote_plus(raw)}"
        else:
            at = find(parts[0])
            if at is None:
                raise ConfigError(f"--set {shown}: the form has no field {quoted(parts[0])}")
            held = unquote_plus(fields[at].partition("=")[2]).encode("utf-8")
            try:
                data = json.loads(held)
            except ValueError:
                raise ConfigError(f"--set {shown}: the form's field {quoted(parts[0])} does not hold JSON") from None
            data = set_path({parts[0]: data}, parts, value, shown)[parts[0]]  # errors name the whole path
            fields[at] = f"{fields[at].partition('=')[0]}={quote_plus(_dumped(data, held).decode('utf-8'))}"
    return "&".join(fields).encode("utf-8")
