"""Secrets out of an exchange: the one redaction every exporter and the agent API's export use.

``redact_exchange(exchange)`` returns a copy in which every value that is a credential, a
signature or a secret is replaced by ``<redacted>`` (``%3Credacted%3E`` where it sits in a URL
or a form, so the message stays well-formed):

* headers: ``SECRET_HEADERS`` (Authorization keeps its scheme, cookies keep their names) and
  token-like names (``X-*-Token``, ``X-*-Secret``, ``X-*-Key``, ``*-Signature``, ``*-Hmac-*``);
* query parameters, form fields (urlencoded and multipart) and JSON members at any depth whose
  names read like a secret (``password``, ``client_secret``, ``access_token``, ``api_key``,
  ``apiKey``, ``X-Amz-Signature``, ...; see ``is_secret_field``), in requests, responses and
  WebSocket text messages; query and fragment parameters also in the URLs of ``Referer``,
  ``Location`` and ``Content-Location`` (an OAuth redirect's ``#access_token=``).

A body that was changed gets a Content-Length that matches it. A gzip or deflate body is
decoded to look inside; when it held a secret it is kept decoded (Content-Encoding removed).
Pure: the exchange given is not touched.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
import zlib
from typing import Any
from urllib.parse import unquote_plus

from devtunnel.capture.model import Exchange, Headers, Request, Response, WsMessage
from devtunnel.values.http1 import is_token
from devtunnel.values.media import FORM, media_type

__all__ = [
    "REDACTED",
    "SECRET_HEADERS",
    "is_secret_field",
    "is_secret_header",
    "redact_body",
    "redact_exchange",
    "redact_headers",
    "redact_query",
]

REDACTED = "<redacted>"
"""The placeholder that replaces a secret value."""

_REDACTED_URL = b"%3Credacted%3E"  # the placeholder percent-encoded, for queries and forms
_MAX_DECODED = 64 * 1024 * 1024  # a compressed body is looked into only up to this size

SECRET_HEADERS = frozenset(
    {
        "authorization",
        "proxy-authorization",
        "cookie",
        "set-cookie",
        "x-api-key",
        "api-key",
        "x-auth-token",
        "stripe-signature",
        "x-hub-signature",
        "x-hub-signature-256",
        "x-slack-signature",
        "x-twilio-signature",
        "x-twilio-email-event-webhook-signature",
        "x-shopify-hmac-sha256",
        "svix-signature",
        "webhook-signature",
        "x-signature",
        "x-webhook-signature",
        "x-gitlab-token",
        "x-line-signature",
        "x-square-hmacsha256-signature",
        "x-square-signature",
        "paypal-transmission-sig",
        "x-zm-signature",
        "linear-signature",
        "x-discord-signature",
        "x-signature-ed25519",
    }
)
"""Header names (lower-case) known to carry credentials or signatures; ``is_secret_header`` adds patterns."""

_HEADER_LAST_WORDS = frozenset({"token", "secret", "signature", "password", "passwd", "apikey", "credential", "credentials"})
_X_HEADER_LAST_WORDS = frozenset({"key", "sig", "hmac", "auth"})
_PLAIN_KEY_WORDS = frozenset({"idempotency", "cache", "request", "correlation", "trace", "public", "dedup", "dedupe"})

_FIELD_WORDS = frozenset({"password", "passwd", "pwd", "passphrase", "secret", "credential", "credentials"})
_FIELD_LAST_WORDS = frozenset({"token", "signature", "apikey"})
_FIELD_NAMES = frozenset({"apikey", "accesskey", "secretkey", "privatekey", "sig", "auth", "authorization", "jwt", "otp"})
_KEY_KINDS = frozenset({"api", "access", "secret", "private", "signing", "client", "auth", "encryption", "license",
                        "subscription", "application"})
_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_AUTH_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9!#$%&'*+\-.^_`|~]*) +\S")
_JSON_TOKEN_RE = re.compile(r'"([^"\\]*(?:\\.[^"\\]*)*)"(\s*:)?', re.S)  # a string, and the colon of a member name
_REDACTED_JSON = json.dumps(REDACTED)
_JSON_SPACE = " \t\r\n"
_JSON = json.JSONDecoder()


def is_secret_header(name: str) -> bool:
    """True for a header whose value is a credential, a signature or a secret.

    The names in ``SECRET_HEADERS``, and names whose last word is ``Token``, ``Secret``,
    ``Signature``, ``Password``; a key of a secret kind (``DD-API-Key``,
    ``Ocp-Apim-Subscription-Key``); ``X-`` names ending in ``Key``, ``Sig``, ``Hmac`` or ``Auth``;
    any name with an ``Hmac`` word (``X-Shopify-Hmac-Sha256``). ``Sec-WebSocket-Key`` and
    ``Idempotency-Key`` are not secrets and stay, and so do ``X-`` keys named for idempotency,
    caching, requests or tracing (``X-Idempotency-Key``, ``X-Cache-Key``).
    """
    key = name.lower()
    if key in SECRET_HEADERS:
        return True
    words = [w for w in re.split(r"[-_]", key) if w]
    if not words:
        return False
    if words[-1] in _HEADER_LAST_WORDS or any(w.startswith("hmac") for w in words):
        return True
    if words[-1] == "key" and len(words) > 1 and words[-2] in _KEY_KINDS:
        return True  # DD-API-KEY, Ocp-Apim-Subscription-Key (as is_secret_field reads api_key)
    if words[0] != "x" or len(words) < 2 or words[-1] not in _X_HEADER_LAST_WORDS:
        return False
    return not (words[-1] == "key" and any(w in _PLAIN_KEY_WORDS for w in words))


@functools.lru_cache(maxsize=4096)
def is_secret_field(name: str) -> bool:
    """True for a query parameter, form field or JSON member name that reads like a secret.

    Words are split at ``_ - .`` and camelCase: a ``password``/``secret``/``credential`` word
    anywhere (``client_secret``, ``newPassword``), ``token``/``signature`` last
    (``access_token``, ``X-Amz-Signature``, not ``max_tokens`` or ``token_type``), a key of a
    secret kind (``api_key``, ``apiKey``, ``private_key``, ``subscription-key``, not
    ``idempotency_key``), and
    ``sig``, ``auth``, ``jwt``, ``otp``.
    """
    words = [w.lower() for w in _WORD_RE.findall(name)]
    if not words:
        return False
    if "".join(words) in _FIELD_NAMES or words[-1] in _FIELD_LAST_WORDS:
        return True
    if any(w in _FIELD_WORDS for w in words):
        return True
    return words[-1] == "key" and len(words) > 1 and words[-2] in _KEY_KINDS


# -- headers -------------------------------------------------------------------------------


def _redact_value(key: str, value: bytes) -> bytes:
    text = value.decode("latin-1")
    if key in ("authorization", "proxy-authorization"):
        # Keep the scheme ("Bearer", "Basic"): it tells the reader what kind of credential it was.
        m = _AUTH_SCHEME_RE.match(text)
        if m:
            return f"{m.group(1)} {REDACTED}".encode()
    elif key == "cookie":
        # Keep the cookie names, which are not secret and say which session it was.
        names = [part.split("=", 1)[0].strip() for part in text.split(";") if part.strip()]
        if names and all(is_token(n) for n in names):
            return "; ".join(f"{n}={REDACTED}" for n in names).encode()
    elif key == "set-cookie":
        first, sep, attrs = text.partition(";")
        cookie_name = first.split("=", 1)[0].strip()
        if "=" in first and is_token(cookie_name):
            return f"{cookie_name}={REDACTED}{sep}{attrs}".encode("latin-1")
    return REDACTED.encode()


_URL_HEADERS = frozenset({"referer", "location", "content-location"})
"""Headers whose value is a URL: its secret query and fragment parameters are redacted."""


def redact_headers(headers: Headers) -> Headers:
    """A copy of ``headers`` with every secret value (``is_secret_header``) replaced by ``<redacted>``,
    and the secret parameters of the URLs in ``_URL_HEADERS`` (``Referer``, ``Location``).

    ``Authorization`` keeps its scheme and cookies keep their names, so the reader still knows
    what was there.
    """
    out: list[tuple[bytes, bytes]] = []
    changed = False
    for name, value in headers.fields:
        key = name.decode("latin-1").lower()
        if value and is_secret_header(key):
            value = _redact_value(key, value)
            changed = True
        elif value and key in _URL_HEADERS:
            redacted = _redact_url(value)
            changed = changed or redacted != value
            value = redacted
        out.append((name, value))
    return Headers(out) if changed else headers


# -- queries and forms ---------------------------------------------------------------------


def redact_query(query: bytes) -> bytes:
    """``a=1&api_key=XYZ`` -> ``a=1&api_key=%3Credacted%3E``: secret parameters' values replaced, the rest kept byte for byte."""
    parts = query.split(b"&")
    changed = False
    for i, part in enumerate(parts):
        name, sep, value = part.partition(b"=")
        if sep and value and is_secret_field(unquote_plus(name.decode("latin-1"))):
            parts[i] = name + b"=" + _REDACTED_URL
            changed = True
    return b"&".join(parts) if changed else query


def _redact_url(url: bytes) -> bytes:
    """A request target or URL with the values of its secret query and fragment parameters
    replaced: ``?access_token=`` in a Referer, ``#access_token=`` in an OAuth redirect's Location."""
    rest, hash_, fragment = url.partition(b"#")
    path, sep, query = rest.partition(b"?")
    out = path + sep + redact_query(query) if sep else rest
    return out + hash_ + redact_query(fragment) if hash_ else out


# -- JSON ----------------------------------------------------------------------------------


def _skip_space(text: str, i: int) -> int:
    while i < len(text) and text[i] in _JSON_SPACE:
        i += 1
    return i


def _redact_json(text: str) -> str:
    """Secret members' values replaced at any depth; everything else (spacing, order) kept.

    Strings are matched whole from an opening quote, so text inside a string value is never
    read as a member name. Works on a cut (truncated) document too: a secret value that runs
    to the cut is replaced up to the end.
    """
    out: list[str] = []
    last = 0
    pos = 0
    while (m := _JSON_TOKEN_RE.search(text, pos)) is not None:
        pos = m.end()
        if m.group(2) is None:
            continue  # a string that is not a member name
        raw = m.group(1)
        try:
            key = raw if "\\" not in raw else json.loads(f'"{raw}"')
        except ValueError:
            continue
        if not is_secret_field(key):
            continue
        start = _skip_space(text, pos)
        try:
            value, stop = _JSON.raw_decode(text, start)
        except ValueError:
            value, stop = True, len(text)
        if value not in (None, ""):
            out += [text[last:start], _REDACTED_JSON]
            last = pos = stop
    if not out:
        return text
    out.append(text[last:])
    return "".join(out)


# -- multipart -----------------------------------------------------------------------------

_PART_NAME_RE = re.compile(rb'(?im)^content-disposition:[^\r\n]*?\bname="([^"\r\n]*)"')


def _redact_multipart(body: bytes, content_type: str) -> bytes:
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if m is None:
        return body
    delimiter = b"--" + m.group(1).encode("latin-1")
    pieces = body.split(delimiter)
    changed = False
    for i, piece in enumerate(pieces):
        head, sep, content = piece.partition(b"\r\n\r\n")
        name = _PART_NAME_RE.search(head)
        if not sep or name is None or b"filename=" in head.lower():
            continue
        if not is_secret_field(name.group(1).decode("utf-8", "replace")):
            continue
        tail = b"\r\n" if content.endswith(b"\r\n") else b""
        if content[: len(content) - len(tail)]:
            pieces[i] = head + sep + REDACTED.encode() + tail
            changed = True
    return delimiter.join(pieces) if changed else body


# -- bodies --------------------------------------------------------------------------------


def _decoded(body: bytes, coding: str) -> bytes | None:
    """``body`` without its gzip or deflate coding, or None when it cannot be decoded here."""
    for wbits in ((47,) if coding in ("gzip", "x-gzip") else (15, -15) if coding == "deflate" else ()):
        decoder = zlib.decompressobj(wbits=wbits)
        try:
            plain = decoder.decompress(body, _MAX_DECODED)
        except zlib.error:
            continue
        if not decoder.unconsumed_tail:
            return plain
    return None


def redact_body(body: bytes, content_type: str) -> bytes:
    """``body`` with the secret fields of a JSON, urlencoded or multipart document replaced.

    Args:
        body: the (decoded) body.
        content_type: the message's Content-Type value (``""`` when absent).
    """
    if not body:
        return body
    media = media_type(content_type)
    if media == FORM:
        return redact_query(body)
    if media.startswith("multipart/"):
        return _redact_multipart(body, content_type)
    looks_json = "json" in media or (not media and body.lstrip()[:1] in (b"{", b"["))
    if not looks_json:
        return body
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return body
    redacted = _redact_json(text)
    return body if redacted is text else redacted.encode("utf-8")


def _redacted_message(message: Request | Response) -> dict[str, Any]:
    """The fields of ``message`` that change, as ``dataclasses.replace`` arguments."""
    headers = redact_headers(message.headers)
    changes: dict[str, Any] = {}
    body = message.body
    coding = (message.headers.get("content-encoding") or "").strip().lower()
    if coding and coding != "identity":
        plain = None if message.body_truncated else _decoded(body, coding)
        if plain is not None:
            redacted = redact_body(plain, message.headers.get("content-type") or "")
            if redacted != plain:
                body = redacted
                headers = headers.without("content-encoding")
    else:
        body = redact_body(body, message.headers.get("content-type") or "")
    if body != message.body:
        changes["body"] = body
        if not message.body_truncated:
            changes["body_size"] = len(body)
            if "content-length" in headers:
                headers = headers.with_set("content-length", str(len(body)))
    if headers is not message.headers:
        changes["headers"] = headers
    return changes


def _redacted_ws(message: WsMessage) -> WsMessage:
    if message.opcode != 1:
        return message
    payload = redact_body(message.payload, "application/json")
    return message if payload == message.payload else dataclasses.replace(message, payload=payload)


def redact_exchange(exchange: Exchange) -> Exchange:
    """A copy of ``exchange`` with every secret replaced (see the module docstring)."""
    request = exchange.request
    changes = _redacted_message(request)
    target = _redact_url(request.target)
    if target != request.target:
        changes["target"] = target
    fields: dict[str, Any] = {"request": dataclasses.replace(request, **changes)}
    if exchange.response is not None:
        fields["response"] = dataclasses.replace(exchange.response, **_redacted_message(exchange.response))
    if exchange.ws_messages:
        fields["ws_messages"] = [_redacted_ws(m) for m in exchange.ws_messages]
    return dataclasses.replace(exchange, **fields)
