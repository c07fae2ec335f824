"""One edit of a captured request: what the inspector, the agent API and ``devtunnel replay`` send.

An ``Edit`` says how the request to replay differs from the captured one. Each part left
``None`` (or empty) keeps what was captured:

* ``method``: an HTTP token, sent exactly as typed. Methods are case-sensitive (RFC 9110
  section 9.1): ``put`` is not ``PUT``, and a service under test may care, so no path
  upper-cases it.
* ``target``: the request target (path and query), starting with ``/``.
* Headers, in two forms that can be combined:

  - ``headers``: the complete list, in order; it replaces every captured field (the
    inspector's form means "these are the headers": a row deleted there is not sent).
  - ``remove_headers`` then ``set_headers``: changes to the captured list (or to
    ``headers``). ``remove_headers`` deletes every field of each name; ``set_headers`` gives a
    name one value, in place of its first field, or appended when absent; a name given again
    in ``set_headers`` is appended, so a repeated field can be sent (``devtunnel replay
    --header`` means "set this one").

* ``body``: the new body.
* ``set_fields``: ``PATH=VALUE`` edits of fields of a JSON body (``data.object.amount=999``),
  or of a form's (``Body=hi``, ``payload.action=closed``; ``devtunnel.capture.jsonpath``),
  applied in order after ``body``.
* ``as_captured``: send the captured signature headers of a webhook delivery unchanged
  instead of signing it afresh (``devtunnel.webhooks.resign``); it changes nothing else.
* ``sign_unverified``: sign a delivery afresh even when the known secrets do not verify it as
  captured (by default it is sent with its captured signature: it may not come from its
  provider, and a fresh signature would make a forged delivery pass).

Framing is computed, never edited: ``apply`` drops hop-by-hop fields (Connection and the
fields it names, Keep-Alive, Transfer-Encoding, TE, Trailer, Upgrade, Proxy-Connection) and
gives Content-Length the length of the body sent.

Every field is checked when an ``Edit`` is made (a method or header name must be a token, a
value may hold no CR, LF or other control character but tab, a target starts with ``/`` and
holds no space or control character), so a bad edit fails before anything is sent, with the
same sentence from every front end. ``to_json`` and ``from_json`` are its form in the agent
API; ``from_json`` accepts only that form and says what is wrong with anything else.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from devtunnel.capture.jsonpath import apply_assignments, parse_assignment
from devtunnel.capture.model import Exchange, Headers, Request
from devtunnel.errors import ConfigError, EditError, ReplayError
from devtunnel.values.http1 import FRAMING, HOP_BY_HOP, connection_listed, is_token
from devtunnel.values.terminal import quoted

__all__ = ["JSON_FIELDS", "Edit", "check_header", "framed_headers"]

JSON_FIELDS = ("method", "path", "headers", "set_headers", "remove_headers", "body", "body_base64", "set",
               "as_captured", "sign_unverified")
"""The keys of an edit's JSON form."""

_BAD_VALUE_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_BAD_TARGET_RE = re.compile(rb"[\x00-\x20\x7f]")

def _bytes(value: str | bytes, what: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise ReplayError(f"{what} must be text, not {type(value).__name__}")


def _name(name: object, where: str) -> str:
    if isinstance(name, bytes):
        name = name.decode("latin-1")
    if not isinstance(name, str):
        raise ReplayError(f"{where}: a header name must be text, not {type(name).__name__}")
    if not is_token(name):
        raise ReplayError(f"{where}: invalid header name {quoted(name)}: a name is a token like X-Debug"
                          " (letters, digits and !#$%&'*+-.^_`|~; no spaces or colons)")
    return name


def _value(name: str, value: object) -> bytes:
    raw = _bytes(value, f"the value of header {name}")  # type: ignore[arg-type]
    if _BAD_VALUE_RE.search(raw):
        raise ReplayError(f"invalid value for header {name}: it holds CR, LF, NUL or another control character")
    return raw


def check_header(name: str, value: str | None, where: str) -> None:
    """Refuse a header an edit could not send: ``name`` not a token, or ``value`` (None: a
    header to remove) holding a control character; the message starts with ``where`` (the
    flag or field that gave it).

    Raises:
        ReplayError: what is wrong.
    """
    checked = _name(name, where)
    if value is not None:
        try:
            _value(checked, value)
        except ReplayError as exc:
            raise ReplayError(f"{where}: {exc}") from None


def _fields(pairs: object, what: str) -> tuple[tuple[bytes, bytes], ...]:
    """Checked ``(name, value)`` byte pairs from a Headers, a mapping or a list of pairs."""
    if isinstance(pairs, Headers):
        items: list[Any] = list(pairs.fields)
    elif isinstance(pairs, Mapping):
        items = list(pairs.items())
    elif isinstance(pairs, (list, tuple)):
        items = list(pairs)
    else:
        raise ReplayError(f"{what} must be a list of (name, value) pairs, not {type(pairs).__name__}")
    out: list[tuple[bytes, bytes]] = []
    for number, pair in enumerate(items, start=1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise ReplayError(f"{what}: item {number} is not a (name, value) pair")
        name = _name(pair[0], f"{what}, item {number}")
        out.append((name.encode("latin-1"), _value(name, pair[1])))
    return tuple(out)


def framed_headers(headers: Headers, body: bytes, *, has_length: bool) -> Headers:
    """``headers`` as sent with ``body``: hop-by-hop fields out, Content-Length computed.

    Content-Length keeps the place of the first one (a repeat would make the request invalid);
    it is added at the end when absent and the body is not empty or ``has_length`` (the
    request had framing for a body, so an empty body is sent as ``Content-Length: 0``).
    """
    dropped = HOP_BY_HOP | connection_listed(headers.fields)
    out: list[tuple[bytes, bytes]] = []
    length = str(len(body)).encode()
    placed = False
    for name, value in headers.fields:
        lower = name.lower()
        if lower in dropped:
            continue
        if lower == b"content-length":
            if placed:
                continue
            placed, value = True, length
        out.append((name, value))
    if not placed and (body or has_length):
        out.append((b"Content-Length", length))
    return Headers(out)


def _has_framing(headers: Headers) -> bool:
    return any(name.lower() in FRAMING for name, _ in headers.fields)


@dataclass(frozen=True)
class Edit:
    """How a replayed request differs from the captured one; see the module docstring.

    Text is accepted where bytes are kept (``target``, ``body``, header values: sent as
    UTF-8); header lists may be a ``Headers``, a mapping or ``(name, value)`` pairs.

    Raises:
        ReplayError: a field is invalid (the message names it).
    """

    method: str | None = None
    target: bytes | None = None
    headers: Headers | None = None
    """The complete header list (replaces every captured field), or None to start from the capture."""
    set_headers: tuple[tuple[bytes, bytes], ...] = ()
    """Fields to set, in order, after ``remove_headers``."""
    remove_headers: tuple[str, ...] = ()
    """Names whose every field is deleted."""
    body: bytes | None = None
    set_fields: tuple[str, ...] = ()
    """``PATH=VALUE`` edits of a JSON or form body, applied after ``body``."""
    as_captured: bool = False
    """Send a webhook delivery's captured signature headers instead of fresh ones."""
    sign_unverified: bool = False
    """Sign a delivery afresh even when the known secrets do not verify it as captured."""

    def __post_init__(self) -> None:
        if self.method is not None:
            if not isinstance(self.method, str):
                raise ReplayError(f"the method must be text, not {type(self.method).__name__}")
            if not is_token(self.method):
                raise ReplayError(f"invalid method {quoted(self.method)}: a method is a token like GET or POST")
        if self.target is not None:
            target = _bytes(self.target, "the target")
            if not target.startswith(b"/") or _BAD_TARGET_RE.search(target):
                raise ReplayError(f"invalid target {quoted(target.decode('utf-8', 'replace'))}: it must start with /"
                                  " and hold no spaces or control characters")
            object.__setattr__(self, "target", target)
        if self.headers is not None and not isinstance(self.headers, Headers):
            object.__setattr__(self, "headers", Headers(_fields(self.headers, "headers")))
        elif self.headers is not None:
            _fields(self.headers, "headers")
        object.__setattr__(self, "set_headers", _fields(self.set_headers, "set_headers"))
        if isinstance(self.remove_headers, (str, bytes)) or not isinstance(self.remove_headers, Iterable):
            raise ReplayError("remove_headers must be a list of header names")
        removed = tuple(_name(n, "remove_headers") for n in self.remove_headers)
        object.__setattr__(self, "remove_headers", removed)
        both = {n.lower() for n in removed} & {n.decode("latin-1").lower() for n, _ in self.set_headers}
        if both:
            raise ReplayError(f"header {min(both)} is both set and removed: give one")
        if self.body is not None:
            object.__setattr__(self, "body", _bytes(self.body, "the body"))
        if isinstance(self.set_fields, (str, bytes)) or not isinstance(self.set_fields, Iterable):
            raise ReplayError("set must be a list of PATH=VALUE texts")
        assignments = tuple(self.set_fields)
        for text in assignments:
            if not isinstance(text, str):
                raise ReplayError(f"set: each item is a PATH=VALUE text, not {_json_kind(text)}")
            try:
                parse_assignment(text)
            except ConfigError as exc:
                raise ReplayError(str(exc)) from None
        object.__setattr__(self, "set_fields", assignments)
        if not isinstance(self.as_captured, bool):
            raise ReplayError(f"as_captured must be true or false, not {_json_kind(self.as_captured)}")
        if not isinstance(self.sign_unverified, bool):
            raise ReplayError(f"sign_unverified must be true or false, not {_json_kind(self.sign_unverified)}")
        if self.as_captured and self.sign_unverified:
            raise ReplayError("give as_captured (the captured signature) or sign_unverified (a fresh one), not both")

    @property
    def is_empty(self) -> bool:
        """True when the edit changes nothing."""
        return self == Edit()

    @property
    def names_host(self) -> bool:
        """True when the edit itself says what Host to send (so no rewrite replaces it)."""
        if self.headers is not None and "host" in self.headers:
            return True
        return any(name.lower() == b"host" for name, _ in self.set_headers)

    def apply(self, exchange: Exchange) -> Request:
        """The request to send for ``exchange`` with this edit, framing computed.

        Raises:
            ReplayError: the result cannot be sent: the captured method or target is not valid
                HTTP, or the body was recorded only in part and the edit gives none.
            EditError: the ``set`` fields do not fit the body (it is neither JSON nor a form,
                or a path runs into a number or a string).
        """
        original = exchange.request
        method = self.method if self.method is not None else original.method
        if not is_token(method):
            raise ReplayError(f"cannot replay with method {quoted(method)}: a method is a token like GET or POST")
        target = self.target if self.target is not None else original.target
        if not target or _BAD_TARGET_RE.search(target):
            raise ReplayError(f"cannot replay to target {quoted(target)}: it is empty or holds spaces or control characters")
        if self.body is not None:
            body = self.body
        elif original.body_truncated:
            raise ReplayError(
                f"only {len(original.body)} of {original.body_size} body bytes of {exchange.id} were recorded;"
                " give the whole body to replay it (devtunnel replay --body @FILE; the agent API's body or body_base64)"
            )
        else:
            body = original.body
        headers = self.headers if self.headers is not None else original.headers
        if self.remove_headers:
            headers = headers.without(*self.remove_headers)
        seen: set[bytes] = set()
        for name, value in self.set_headers:
            key = name.lower()
            if key in seen:
                headers = Headers([*headers.fields, (name, value)])
            else:
                headers = headers.with_set(name.decode("latin-1"), value)
            seen.add(key)
        if self.set_fields:
            try:  # a form's fields, by the Content-Type sent
                body = apply_assignments(body, list(self.set_fields), headers.get("Content-Type"))
            except ConfigError as exc:
                raise EditError(str(exc)) from None
        has_length = _has_framing(original.headers) or _has_framing(headers)
        return Request(
            method=method,
            target=target,
            headers=framed_headers(headers, body, has_length=has_length),
            body=body,
            body_size=len(body),
            http_version="1.1",
        )

    def changes(self, exchange: Exchange) -> bool:
        """True when the request this edit sends differs from a plain replay of ``exchange``."""
        if replace(self, as_captured=False, sign_unverified=False).is_empty:
            return False
        try:
            plain = Edit().apply(exchange)
        except ReplayError:
            return True  # a plain replay could not even be sent
        return self.apply(exchange) != plain

    # -- JSON form -----------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """The edit as the agent API takes it (only the parts that are set).

        Header values are text; a value that is not UTF-8 is ``{"base64": "..."}``. A target
        that is not UTF-8 has its high bytes percent-encoded, which is how it is sent anyway.
        """
        out: dict[str, Any] = {}
        if self.method is not None:
            out["method"] = self.method
        if self.target is not None:
            out["path"] = _target_text(self.target)
        if self.headers is not None:
            out["headers"] = [_pair_json(n, v) for n, v in self.headers.fields]
        if self.set_headers:
            out["set_headers"] = [_pair_json(n, v) for n, v in self.set_headers]
        if self.remove_headers:
            out["remove_headers"] = list(self.remove_headers)
        if self.body is not None:
            try:
                out["body"] = self.body.decode("utf-8")
            except UnicodeDecodeError:
                out["body_base64"] = base64.b64encode(self.body).decode("ascii")
        if self.set_fields:
            out["set"] = list(self.set_fields)
        if self.as_captured:
            out["as_captured"] = True
        if self.sign_unverified:
            out["sign_unverified"] = True
        return out

    @classmethod
    def from_json(cls, data: object, *, allow: Iterable[str] = ()) -> Edit:
        """The edit a JSON object describes (``to_json``'s form).

        Args:
            data: the decoded JSON object.
            allow: other keys the caller reads itself (such as ``to``); any other unknown key
                is an error, so a misspelt field is not silently ignored.

        Raises:
            ReplayError: the object is not a valid edit (the message names the field).
        """
        if not isinstance(data, Mapping):
            raise ReplayError("an edit must be a JSON object")
        unknown = sorted(set(data) - set(JSON_FIELDS) - set(allow))
        if unknown:
            raise ReplayError(f"unknown field {quoted(unknown[0])}; an edit has {', '.join(JSON_FIELDS)}")
        method = _json_str(data, "method")
        path = _json_str(data, "path")
        headers = data.get("headers")
        if headers is not None and not isinstance(headers, list):
            raise ReplayError("headers must be the complete list of [name, value] pairs; to change only some,"
                              " use set_headers ({\"Name\": \"value\"}) and remove_headers ([\"Name\"])")
        set_headers = data.get("set_headers")
        if set_headers is None:
            set_pairs: list[Any] = []
        elif isinstance(set_headers, dict):
            set_pairs = list(set_headers.items())
        elif isinstance(set_headers, list):
            set_pairs = set_headers
        else:
            raise ReplayError("set_headers must be an object of names and values or a list of [name, value] pairs")
        remove = data.get("remove_headers")
        if remove is None:
            remove = []
        if not isinstance(remove, list):
            raise ReplayError("remove_headers must be a list of header names")
        if data.get("body") is not None and data.get("body_base64") is not None:
            raise ReplayError("give body or body_base64, not both")
        body: bytes | None = None
        if data.get("body") is not None:
            body = (_json_str(data, "body") or "").encode("utf-8")
        elif data.get("body_base64") is not None:
            body = _b64(_json_str(data, "body_base64") or "", "body_base64")
        assignments = data.get("set")
        if assignments is None:
            assignments = []
        if not isinstance(assignments, list):
            raise ReplayError(f"set must be a list of PATH=VALUE texts, not {_json_kind(assignments)}")
        as_captured = data.get("as_captured", False)
        if as_captured is None:
            as_captured = False
        sign_unverified = data.get("sign_unverified", False)
        if sign_unverified is None:
            sign_unverified = False
        return cls(
            method=method,
            target=path.encode("utf-8") if path is not None else None,
            headers=None if headers is None else _json_pairs(headers, "headers"),  # type: ignore[arg-type]
            set_headers=_json_pairs(set_pairs, "set_headers"),  # type: ignore[arg-type]
            remove_headers=tuple(remove),
            body=body,
            set_fields=tuple(assignments),
            as_captured=as_captured,
            sign_unverified=sign_unverified,
        )


def _target_text(target: bytes) -> str:
    try:
        return target.decode("utf-8")
    except UnicodeDecodeError:
        return re.sub(rb"[\x80-\xff]", lambda m: b"%%%02X" % m.group()[0], target).decode("ascii")


def _pair_json(name: bytes, value: bytes) -> list[Any]:
    try:
        return [name.decode("latin-1"), value.decode("utf-8")]
    except UnicodeDecodeError:
        return [name.decode("latin-1"), {"base64": base64.b64encode(value).decode("ascii")}]


def _json_str(data: Mapping[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise ReplayError(f"{key} must be a string, not {_json_kind(value)}")
    return value


def _json_kind(value: object) -> str:
    kinds = {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _b64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ReplayError(f"{what} is not valid base64: {exc}") from exc


def _json_pairs(pairs: list[Any], what: str) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    for number, pair in enumerate(pairs, start=1):
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            raise ReplayError(f"{what}: item {number} must be a [name, value] pair")
        name, value = pair
        if not isinstance(name, str):
            raise ReplayError(f"{what}: item {number}: a header name must be a string, not {_json_kind(name)}")
        if isinstance(value, dict) and set(value) == {"base64"} and isinstance(value["base64"], str):
            out.append((name, _b64(value["base64"], f"{what}: the value of {name}")))
        elif isinstance(value, str):
            out.append((name, value.encode("utf-8")))
        elif value is None:
            raise ReplayError(f"{what}: the value of {quoted(name)} is null; to delete a header, name it in remove_headers")
        else:
            raise ReplayError(f"{what}: the value of {quoted(name)} must be a string (or {{\"base64\": ...}}),"
                              f" not {_json_kind(value)}")
    return out
