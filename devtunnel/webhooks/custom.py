"""A provider described in config, for a scheme devtunnel does not know by name.

::

    [webhooks.acme]
    header = "X-Acme-Signature"          # required
    algorithm = "sha256"                 # sha1, sha256 (default) or sha512
    encoding = "hex"                     # hex (default) or base64
    prefix = "sha256="                   # put before the digest
    template = "{timestamp}.{body}"      # what is signed: {body} {timestamp} {id} {url}; default "{body}"
    timestamp_header = "X-Acme-Timestamp"
    tolerance = 300                      # seconds, with a timestamp header
    id_header = "X-Acme-Delivery"
    event_path = "type"                  # dotted JSON path of the event type
    secret_env = "ACME_WEBHOOK_SECRET"   # default: NAME_WEBHOOK_SECRET
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from devtunnel.capture.model import Headers
from devtunnel.errors import ConfigError
from devtunnel.capture.verdict import Signature
from devtunnel.values.http1 import is_token
from devtunnel.values.terminal import quoted
from devtunnel.webhooks.base import DEFAULT_TOLERANCE, Check, Delivery, Provider, SignatureError, hmac_digest, json_field, stamped

__all__ = ["CustomProvider", "ALGORITHMS", "ENCODINGS"]

ALGORITHMS = ("sha1", "sha256", "sha512")
ENCODINGS = ("hex", "base64")
_FIELD = re.compile(r"\{([^{}]*)\}")
_PLACES = ("body", "timestamp", "id", "url")


@dataclass(frozen=True)
class _Spec:
    name: str
    header: str
    algorithm: str
    encoding: str
    prefix: str
    template: str
    timestamp_header: str | None
    tolerance: float
    id_header: str | None
    event_path: str | None
    secret_env: str


class CustomProvider(Provider):
    """A signature scheme from config (see the module's docstring)."""

    def __init__(self, name: str, header: str, *, algorithm: str = "sha256", encoding: str = "hex", prefix: str = "",
                 template: str = "{body}", timestamp_header: str | None = None, tolerance: float = DEFAULT_TOLERANCE,
                 id_header: str | None = None, event_path: str | None = None, secret_env: str | None = None) -> None:
        """Check and keep the scheme.

        Raises:
            ConfigError: an unknown algorithm, encoding or template field, or a template that
                names ``{timestamp}`` without a ``timestamp_header`` (or ``{id}`` without ``id_header``).
        """
        where = f"webhooks.{name}"
        if not header:
            raise ConfigError(f"{where}.header: the signature header is required")
        for key, value in (("header", header), ("timestamp_header", timestamp_header), ("id_header", id_header)):
            if value and not is_token(value):  # no request carries it: the provider would never be recognised
                raise ConfigError(f"{where}.{key}: expected a header name (an HTTP token such as X-Acme-Signature), "
                                  f"got {quoted(value)}")
        if algorithm not in ALGORITHMS:
            raise ConfigError(f"{where}.algorithm: expected one of {', '.join(ALGORITHMS)}, got {quoted(algorithm)}")
        if encoding not in ENCODINGS:
            raise ConfigError(f"{where}.encoding: expected hex or base64, got {quoted(encoding)}")
        for field_name in _FIELD.findall(template):
            if field_name not in _PLACES:
                raise ConfigError(f"{where}.template: unknown field {{{field_name}}}; "
                                  "use {body}, {timestamp}, {id} or {url}")
        if "{timestamp}" in template and not timestamp_header:
            raise ConfigError(f"{where}.template: {{timestamp}} needs timestamp_header")
        if "{id}" in template and not id_header:
            raise ConfigError(f"{where}.template: {{id}} needs id_header")
        if tolerance <= 0:
            raise ConfigError(f"{where}.tolerance: expected seconds, more than 0")
        self.spec = _Spec(name, header, algorithm, encoding, prefix, template, timestamp_header, float(tolerance),
                          id_header, event_path, secret_env or f"{re.sub(r'[^A-Z0-9]', '_', name.upper())}_WEBHOOK_SECRET")
        self.name = name
        self.title = name
        self.secret_env = self.spec.secret_env
        self.signature_headers = (header,) + ((timestamp_header,) if timestamp_header else ())
        self.tolerance = float(tolerance) if timestamp_header else None

    def detects(self, delivery: Delivery) -> bool:
        return self.signed(delivery)

    def event_type(self, delivery: Delivery) -> str | None:
        return json_field(delivery.json(), self.spec.event_path) if self.spec.event_path else None

    def delivery_id(self, delivery: Delivery) -> str | None:
        return delivery.header(self.spec.id_header) if self.spec.id_header else None

    def _content(self, delivery: Delivery, stamp: str) -> bytes:
        values = {"body": delivery.body, "timestamp": stamp.encode(), "url": delivery.url.encode(),
                  "id": (self.delivery_id(delivery) or "").encode()}
        out = bytearray()
        last = 0
        for match in _FIELD.finditer(self.spec.template):
            out += self.spec.template[last:match.start()].encode()
            out += values[match.group(1)]
            last = match.end()
        out += self.spec.template[last:].encode()
        return bytes(out)

    def _encode(self, digest: bytes) -> str:
        text = digest.hex() if self.spec.encoding == "hex" else base64.b64encode(digest).decode("ascii")
        return self.spec.prefix + text

    def signed_timestamp(self, delivery: Delivery) -> str | None:
        return delivery.header(self.spec.timestamp_header) if self.spec.timestamp_header else None

    def check(self, delivery: Delivery, secret: str, now: float) -> Check:
        stamp = ""
        if self.spec.timestamp_header:
            given_stamp = delivery.header(self.spec.timestamp_header)
            value = self._timestamp_check(given_stamp, now)
            if isinstance(value, Check):
                return value
            stamp = given_stamp or ""  # the header's text as sent: what the sender signed
        given = delivery.header(self.spec.header) or ""
        if not given.startswith(self.spec.prefix):
            return Check(Signature.INVALID, f"malformed {self.spec.header} header (expected {self.spec.prefix}DIGEST)")
        encoded = given[len(self.spec.prefix):]
        try:
            raw = bytes.fromhex(encoded) if self.spec.encoding == "hex" else base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error):
            return Check(Signature.INVALID, f"malformed {self.spec.header} header (expected {self.spec.encoding})")
        expected = hmac_digest(self.spec.algorithm, secret.encode(), self._content(delivery, stamp))
        return self._matches(expected, [raw])

    def sign(self, delivery: Delivery, secret: str, now: float) -> Headers:
        headers = delivery.headers
        stamp = ""
        if self.spec.timestamp_header:
            headers, stamp = stamped(headers, self.spec.timestamp_header, now)
        if "{id}" in self.spec.template and not self.delivery_id(delivery):
            raise SignatureError(f"{self.name}: the delivery has no {self.spec.id_header} header to sign")
        digest = hmac_digest(self.spec.algorithm, secret.encode(), self._content(delivery, stamp))
        return headers.with_set(self.spec.header, self._encode(digest))
