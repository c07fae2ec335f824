"""Captured exchanges as a self-contained pytest module: one test per exchange.

Each test sends its request again to a base URL (``DEVTUNNEL_BASE_URL``, else the service the
exchange was forwarded to) and asserts what a webhook sender or client expects of the answer,
which the captured status may not be (``pytest_checks.expectation``: 2xx for a delivery, a
refusal for one judged invalid when it came, no 5xx where one was captured, else the status
captured; a Slack url_verification's challenge echoed), or with ``asserts="captured"`` the
captured status. Its failed assertion says what it expected and why. Webhooks from a provider
devtunnel knows (a custom one of devtunnel.toml too, its scheme written into the module) are
signed afresh at run time from the same secret variables the receiver reads (``STRIPE_WEBHOOK_SECRET``, ..., or the ``secret_env`` its tunnel's
``[webhooks.PROVIDER]`` names), as a replay is and by the same rule
(``webhooks.resign.signs_unverified``): with the one of a variable's secrets that verifies the
captured signature; a delivery none verifies, and that was not judged valid when it came, is
sent with its captured signature (anyone can post a delivery to the public URL: signed afresh, a
forged one would pass the receiver's check), unless ``DEVTUNNEL_SIGN_UNVERIFIED=1`` (or the
module's ``SIGN_UNVERIFIED``) says to sign it anyway, as ``--sign-unverified`` does for a replay.
A suite written today still passes next month; without the variable, a delivery whose scheme has
a timestamp is skipped (its old signature would be refused) and the others are sent as captured.
A delivery that came unsigned is sent unsigned. A delivery whose signature was found invalid when
it came is sent as captured: its test checks the refusal (with ``asserts="captured"``, only one
its receiver refused then).

The module imports only pytest, httpx and the standard library (``pip install pytest httpx``:
its docstring says so). A failed test shows the service's answer as ``ascii`` of its text, so
no control character of the reply reaches the terminal. Captured values enter it only
as ASCII Python literals (``ascii``/``repr``: a str when the bytes are UTF-8, else bytes), never
as code or comments, so nothing in it can hide on a terminal. A test sends the method, target,
headers and body byte for byte as captured (httpx's URL normalisation, method upper-casing and
default headers are bypassed), in the captured HTTP version (an HTTP/1.0 request is written on a
socket of its own: httpx speaks only 1.1 and 2), but for Host and the framing, which are the client's, bytes
of the target outside visible ASCII, which go percent-encoded (h11 refuses them raw), and spaces
and tabs around a header value, which are not part of it (RFC 9110 section 5.5) and which h11
refuses to send. A request httpx cannot send at all (a method or header name that is not a
token, a control byte in a header value) and one a rule at the relay answered (it never reached
the service) become a skipped test that says why.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

from devtunnel.capture.model import Exchange
from devtunnel.capture.verdict import Signature
from devtunnel.export.base import Export, each_prepared, joined
from devtunnel.export.pytest_checks import Asserts, check_asserts, expectation, slack_challenge
from devtunnel.values.http1 import FRAMING, HOP_BY_HOP, field_value, is_token
from devtunnel.values.terminal import escape, quoted
from devtunnel.webhooks import BUILTIN, Provider, delivery_of, detect
from devtunnel.webhooks.custom import CustomProvider
from devtunnel.webhooks.resign import signs_unverified

__all__ = ["export_pytest", "pytest_pieces"]

_DROP = frozenset(name.decode() for name in HOP_BY_HOP | FRAMING) | {"host", "expect"}

_HEADER = '''\
"""{count} captured request(s) sent again to a running service, checking its answers.

Made by `devtunnel export --format pytest`. It needs pytest and httpx (pip install pytest httpx).
{run}

    DEVTUNNEL_BASE_URL=http://127.0.0.1:8000 pytest {path}

DEVTUNNEL_BASE_URL defaults to the service each request was captured for. Webhook deliveries are
signed afresh from the secret variables their receivers read ({envs}), each only when the
variable's secret verifies its captured signature or it was judged valid when it came; else it
is sent with its captured signature (it may be forged). DEVTUNNEL_SIGN_UNVERIFIED=1 signs those
afresh too.

{checks}
"""

import base64
import hashlib
import hmac
import http.client
import json
import os
import re
import socket
import ssl
import time
import warnings
from urllib.parse import parse_qsl

import httpx
import pytest

# A delivery that no secret verifies as captured, and that was not judged valid when it came, is
# sent with its captured signature: anyone can post a delivery to a public URL, and signed afresh
# a forged one would pass the receiver's check. True signs those afresh too (as
# `devtunnel replay --sign-unverified` does); DEVTUNNEL_SIGN_UNVERIFIED=1 sets it for one run.
SIGN_UNVERIFIED = os.environ.get("DEVTUNNEL_SIGN_UNVERIFIED", "") not in ("", "0")


def _set(headers, name, value):
    out = [(n, v) for n, v in headers if str(n).lower() != name.lower()]
    return out + [(name, value)]


def _get(headers, name):
    value = next((v for n, v in headers if str(n).lower() == name.lower()), None)
    return value.decode("latin-1") if isinstance(value, bytes) else value


def _bytes(value):
    return value if isinstance(value, bytes) else value.encode()


def _mac(algorithm, key, message):
    return hmac.new(key, message, getattr(hashlib, algorithm)).digest()


def _sign_stripe(headers, body, url, secret, now):
    return _set(headers, "Stripe-Signature", f"t={{now}},v1={{_mac('sha256', secret.encode(), f'{{now}}.'.encode() + body).hex()}}")


def _sign_github(headers, body, url, secret, now):
    # The headers it was sent with (GitHub Enterprise Server before 3.0: SHA-1 alone); neither: both.
    sha256 = _get(headers, "X-Hub-Signature-256") is not None
    sha1 = _get(headers, "X-Hub-Signature") is not None
    if sha1 or not sha256:
        headers = _set(headers, "X-Hub-Signature", "sha1=" + _mac("sha1", secret.encode(), body).hex())
    if sha256 or not sha1:
        headers = _set(headers, "X-Hub-Signature-256", "sha256=" + _mac("sha256", secret.encode(), body).hex())
    return headers


def _sign_slack(headers, body, url, secret, now):
    headers = _set(headers, "X-Slack-Request-Timestamp", str(now))
    return _set(headers, "X-Slack-Signature", "v0=" + _mac("sha256", secret.encode(), f"v0:{{now}}:".encode() + body).hex())


def _sign_shopify(headers, body, url, secret, now):
    return _set(headers, "X-Shopify-Hmac-Sha256", base64.b64encode(_mac("sha256", secret.encode(), body)).decode())


def _sign_standard(headers, body, url, secret, now):
    both = all(_get(headers, p + "-signature") is not None for p in ("svix", "webhook"))  # each library reads one
    prefixes = ("svix", "webhook") if both else ("svix" if _get(headers, "svix-id") is not None else "webhook",)
    key = secret[len("whsec_"):] if secret.startswith("whsec_") else secret
    for prefix in prefixes:
        content = f"{{_get(headers, prefix + '-id')}}.{{now}}.".encode() + body
        signature = base64.b64encode(_mac("sha256", base64.b64decode(key + "=" * (-len(key) % 4)), content)).decode()
        headers = _set(_set(headers, prefix + "-timestamp", str(now)), prefix + "-signature", "v1," + signature)
    return headers


def _sign_twilio(headers, body, url, secret, now):
    settings = (_get(headers, "X-Twilio-Webhooks-Signature-Settings") or "").split(",")
    algorithm = "sha256" if any(p.partition("=")[0].strip() == "algorithm" and p.partition("=")[2].strip().upper()
                                == "HMAC_SHA256" for p in settings) else "sha1"
    params = ""
    if (_get(headers, "Content-Type") or "").split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        params = "".join(k + v for k, v in sorted(set(parse_qsl(body.decode(), keep_blank_values=True))))
    return _set(headers, "X-Twilio-Signature", base64.b64encode(_mac(algorithm, secret.encode(), (url + params).encode())).decode())


SIGNERS = {{"stripe": _sign_stripe, "github": _sign_github, "slack": _sign_slack, "shopify": _sign_shopify,
           "standard": _sign_standard, "twilio": _sign_twilio}}
SIGNATURE = {{"stripe": "Stripe-Signature", "github": "X-Hub-Signature-256", "slack": "X-Slack-Signature",
             "shopify": "X-Shopify-Hmac-Sha256", "standard": "webhook-signature", "twilio": "X-Twilio-Signature"}}


def _signed_at(provider, headers):
    """The captured signature's timestamp, for the schemes that sign one (else None)."""
    if provider == "stripe":
        items = (_get(headers, "Stripe-Signature") or "").split(",")
        return next((item[2:].strip() for item in items if item.startswith("t=")), None)
    if provider == "slack":
        return _get(headers, "X-Slack-Request-Timestamp")
    if provider == "standard":
        return _get(headers, ("svix" if _get(headers, "svix-id") is not None else "webhook") + "-timestamp")
    return None


def _custom_signer(scheme):
    """The signer of a scheme described in devtunnel.toml (``[webhooks.NAME]``: header, algorithm,
    encoding, prefix, template of {{body}} {{timestamp}} {{id}} {{url}}, timestamp_header, id_header)."""
    def sign(headers, body, url, secret, now):
        if scheme["timestamp_header"]:
            headers = _set(headers, scheme["timestamp_header"], str(now))
        values = {{"body": body, "timestamp": str(now).encode() if scheme["timestamp_header"] else b"",
                  "url": url.encode(),
                  "id": _bytes(_get(headers, scheme["id_header"]) or "").strip() if scheme["id_header"] else b""}}
        parts = re.split(r"\\{{(body|timestamp|id|url)\\}}", scheme["template"])
        content = b"".join(values[p] if i % 2 else p.encode() for i, p in enumerate(parts))
        digest = _mac(scheme["algorithm"], secret.encode(), content)
        text = digest.hex() if scheme["encoding"] == "hex" else base64.b64encode(digest).decode()
        return _set(headers, scheme["header"], scheme["prefix"] + text)
    return sign


def _secret(provider, sign, scheme, headers, body, url, secrets):
    """The one of ``secrets`` that made the captured signature (``headers`` and ``body`` as
    captured, ``url`` the one it was called at), whatever its timestamp's age, else None. During a
    rotation ("whsec_new,whsec_old") the receiver may still hold only the one it accepted the
    delivery with."""
    if scheme:
        name = scheme["header"]
        stamp = _get(headers, scheme["timestamp_header"]) if scheme["timestamp_header"] else None
    else:
        name = "svix-signature" if provider == "standard" and _get(headers, "svix-id") is not None else SIGNATURE[provider]
        if provider == "github" and _get(headers, name) is None:
            name = "X-Hub-Signature"
        stamp = _signed_at(provider, headers)
    captured = _get(headers, name) or ""
    for secret in secrets:
        try:
            again = _get(sign(headers, body, url, secret, int(stamp) if stamp else 0), name) or ""
        except Exception:  # a secret of another form (a Standard Webhooks one that is no base64)
            continue
        again = again.rpartition("v1=")[2] if provider == "stripe" else again
        if again and again in captured.replace(" ", ","):
            return secret
    return None


def _visible(text):
    """``text`` with every character outside printable ASCII escaped as in a Python literal: what
    a skip reason, a warning or a failed test's message shows reaches the terminal."""
    return ascii(text)[1:-1]


def _answered(response, expected=""):
    """What a failed test says: what it ``expected`` and why, then why a delivery's signature was
    not made afresh (when it was not), then the first 500 characters of the service's answer,
    each as ``ascii`` (an escape sequence in the reply reaches no terminal)."""
    said = [_visible(expected)] if expected else []
    notice = getattr(response, "signature_notice", "")
    said += [notice] if notice else []
    return "; ".join([*said, "the service answered " + ascii(response.text[:500])])


def _echoes_challenge(response, challenge):
    """Whether ``response`` echoes the ``challenge`` of Slack's url_verification as Slack takes
    it: the text alone, JSON {{"challenge": ...}}, or a form challenge=..."""
    text = response.text.strip()
    if text == challenge:
        return True
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        return data.get("challenge") == challenge
    return dict(parse_qsl(text, keep_blank_values=True)).get("challenge") == challenge


def _send_http10(method, base, target, headers, body):
    """An HTTP/1.0 request, as it was captured: httpx sends only HTTP/1.1 and 2, so its bytes go
    on a socket of their own (Host and Content-Length added as httpx adds them), and http.client
    reads the answer."""
    url = httpx.URL(base)
    sock = socket.create_connection((_connect_host(url), url.port or (443 if url.scheme == "https" else 80)), timeout=30)
    if url.scheme == "https":
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=url.host)
    lines = [_bytes(method) + b" " + target + b" HTTP/1.0", b"Host: " + url.netloc]
    lines += [_bytes(n) + b": " + _bytes(v) for n, v in headers]
    if body:
        lines.append(b"Content-Length: %d" % len(body))
    with sock:
        sock.sendall(b"\\r\\n".join(lines) + b"\\r\\n\\r\\n" + body)
        answer = http.client.HTTPResponse(sock, method=method.upper())
        answer.begin()
        content = answer.read()
    fields = [(n.encode("latin-1"), v.encode("latin-1")) for n, v in answer.getheaders()]
    return httpx.Response(answer.status, headers=fields, content=content)


def _connect_host(url):
    """Where to connect for ``url``: 127.0.0.1 for the embedded relay's http://NAME.localhost:PORT
    (not every resolver knows such names; the name goes in Host, which the relay routes by)."""
    host = url.host.lower().rstrip(".")
    return "127.0.0.1" if url.scheme == "http" and (host == "localhost" or host.endswith(".localhost")) else url.host


def _forwarded_as(headers, base):
    """``headers`` with a captured X-Forwarded-Host, -Proto and -Port, and the host and proto of a
    captured Forwarded, saying ``base``, as Host does: a receiver behind a proxy (ProxyFix, Rack)
    builds its URL from them, and a signature over the URL (Twilio's) is made for ``base``."""
    url = httpx.URL(base)
    host = url.netloc.decode("ascii")
    port = str(url.port or (443 if url.scheme == "https" else 80))
    said = {{"x-forwarded-host": host, "x-forwarded-proto": url.scheme, "x-forwarded-port": port}}
    out = []
    for n, v in headers:
        name = str(n.decode("latin-1") if isinstance(n, bytes) else n).lower()
        out.append((n, _forwarded_to(v, host, url.scheme) if name == "forwarded" else said.get(name, v)))
    return out


_FORWARDED_PAIR = re.compile(r'(^|[;,][ \\t]*)(host|proto)=("(?:[^"\\\\]|\\\\.)*"|[^;,]*)', re.IGNORECASE)


def _forwarded_to(value, host, scheme):
    """A Forwarded ``value`` (RFC 7239) with its host and proto parameters saying ``host`` and ``scheme``."""
    text = value.decode("latin-1") if isinstance(value, bytes) else value
    said = {{"host": host if re.fullmatch(r"[\\w.~!#$%&'*+^`|-]+", host, re.ASCII) else f'"{{host}}"', "proto": scheme}}
    text = _FORWARDED_PAIR.sub(lambda m: m[1] + m[2] + "=" + said[m[2].lower()], text)
    return text.encode("latin-1") if isinstance(value, bytes) else text


def send(method, captured_base, target, headers, body, provider=None, secret_env=None, timestamped=False,
         version="1.1", scheme=None, signed_url=None, vouched=False):
    """Send the request as captured: text values as UTF-8, bytes as they are, the target and the
    method unchanged (httpx would normalise the one and upper-case the other), in its HTTP
    version, no header added but Host and Content-Length (X-Forwarded-Host, -Proto and -Port, and
    Forwarded's host and proto, when captured, say the base URL as Host does). ``signed_url``: the URL a captured signature covers
    (Twilio's), which cannot verify at another. A delivery of ``provider`` is signed afresh with
    the secret of ``secret_env`` that verifies its captured signature; none verifying, only when
    ``vouched`` (judged valid when it came) or SIGN_UNVERIFIED, else it goes as captured and the
    response's ``signature_notice`` (and a warning) says why."""
    base = (os.environ.get("DEVTUNNEL_BASE_URL") or captured_base).rstrip("/")
    url = base + (target if isinstance(target, str) else target.decode("latin-1"))
    captured, headers = headers, _forwarded_as(headers, base)
    notice = ""
    if provider is not None:
        secrets = os.environ.get(secret_env, "").replace(",", " ").split()
        if secrets:
            sign = _custom_signer(scheme) if scheme else SIGNERS[provider]
            secret = _secret(provider, sign, scheme, captured, body, signed_url or url, secrets)
            if secret is None and (vouched or SIGN_UNVERIFIED):
                secret = secrets[0]
                warnings.warn(_visible(f"signature made with {{secret_env}}, which did not verify the captured"
                                       " delivery: the receiver may hold another secret"), stacklevel=2)
            if secret is not None:
                headers = sign(headers, body, url, secret, int(time.time()))
            else:
                notice = _visible(f"signature not refreshed: {{secret_env}} does not verify the delivery as captured:"
                                  f" it may not come from {{provider}}; sent with its captured signature"
                                  " (DEVTUNNEL_SIGN_UNVERIFIED=1 signs it anyway)")
                warnings.warn(notice, stacklevel=2)
        elif timestamped:
            pytest.skip(_visible(f"set {{secret_env}} to sign this {{provider}} delivery afresh (its captured signature"
                                 " is timestamped: receivers refuse it minutes after it was made)"))
        elif signed_url is not None and signed_url != url:
            pytest.skip(_visible(f"set {{secret_env}} to sign this {{provider}} delivery afresh (its captured"
                                 f" signature covers the URL it was sent to, {{signed_url}}, not {{url}})"))
    # h11 (httpx's HTTP/1.1) refuses other bytes in a target: they go percent-encoded.
    raw_target = re.sub(rb"[^\\x21-\\x7e]", lambda m: b"%%%02X" % m[0][0], _bytes(target))
    if raw_target.startswith(b"/"):
        raw_target = httpx.URL(base).raw_path.split(b"?")[0].rstrip(b"/") + raw_target
    if version == "1.0":
        response = _send_http10(method, base, raw_target, headers, body)
    else:
        response = _send(method, base, raw_target, headers, body)
    response.signature_notice = notice
    return response


def _send(method, base, raw_target, headers, body):
    """Send over HTTP/1.1 with httpx, as it is given."""
    parts = httpx.URL(base)
    connect = _connect_host(parts)
    if connect != parts.host:
        headers = [("Host", parts.netloc.decode("ascii")), *headers]
    with httpx.Client(timeout=30, trust_env=False) as client:
        client.headers.clear()  # no Accept, User-Agent ... of httpx's own
        request = client.build_request(method, parts.copy_with(host=connect), headers=[(_bytes(n), _bytes(v)) for n, v in headers],
                                       content=body, extensions={{"target": raw_target}})
        request.method = method
        return client.send(request)
'''


def _literal(raw: bytes) -> str:
    """``raw`` as a Python literal in ASCII: a str when it is UTF-8 (readable, edited as text), else bytes."""
    try:
        return ascii(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return repr(raw)


# What h11 (httpx's HTTP/1.1) sends in a header value: visible ASCII, obs-text, inner spaces and tabs.
_ECHO = ("expected the challenge echoed: Slack sets an Events API URL only when its url_verification is answered"
         " with the challenge (as text, JSON {\"challenge\": ...} or a form challenge=...)")

_UNSENDABLE_IN_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")


def _unsendable(exchange: Exchange) -> str | None:
    """Why httpx cannot send ``exchange``'s request, or None."""
    request = exchange.request
    if not is_token(request.method):
        return "its method is not an HTTP token; httpx cannot send it"
    for name, value in request.headers.fields:
        if not is_token(name):
            return f"the header name {quoted(name)} is not an HTTP token; httpx cannot send it"
        if _UNSENDABLE_IN_VALUE.search(value):
            return f"the header {quoted(name)} holds a control byte; httpx cannot send it"
    return None


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")[:60]


def _scheme_of(provider: Provider) -> dict[str, str | None] | None:
    """A custom provider's scheme as the module's ``_custom_signer`` takes it; None for a built-in one."""
    if not isinstance(provider, CustomProvider):
        return None
    spec = provider.spec
    return {"header": spec.header, "algorithm": spec.algorithm, "encoding": spec.encoding, "prefix": spec.prefix,
            "template": spec.template, "timestamp_header": spec.timestamp_header, "id_header": spec.id_header}


def _keys_for(webhooks: Any, exchange: Exchange) -> tuple[tuple[Provider, ...], Mapping[str, str]]:
    """The providers to recognise ``exchange``'s delivery by and the variables their secrets are
    read from where config names others, for its tunnel (``webhooks``: the agent's context)."""
    if webhooks is None:
        return BUILTIN, {}
    for_tunnel = getattr(webhooks, "for_tunnel", None)
    keys = for_tunnel(exchange.tunnel) if for_tunnel is not None else webhooks
    return tuple(getattr(keys, "providers", BUILTIN)), getattr(keys, "secret_envs", None) or {}


def _signs_url(provider: Provider) -> bool:
    """Whether ``provider``'s signature covers the URL called (Twilio's, a custom template's {url}):
    sent to another base, its captured one cannot verify."""
    if isinstance(provider, CustomProvider):
        return "{url}" in provider.spec.template
    return provider.name == "twilio"


def _signing_comment(exchange: Exchange, vouched: bool) -> list[str]:
    """The comment that says how a signed delivery's test signs it (no captured value in it)."""
    if vouched:
        return ["    # its signature was judged valid when it came: signed afresh from its secret variable"]
    came = ("its signature was found invalid when it came (it may be forged)"
            if exchange.webhook is not None and exchange.webhook.signature is Signature.INVALID
            else "its signature was not verified when it came")
    return [f"    # {came}:",
            "    # signed afresh only if its secret variable verifies the captured signature, else",
            "    # sent with its captured signature (DEVTUNNEL_SIGN_UNVERIFIED=1 signs it afresh all the same)"]


def _test(index: int, exchange: Exchange, width: int, webhooks: Any = None,
          asserts: Asserts = "expected") -> tuple[str, str | None]:
    """The test's code, and the variable its delivery is signed from (None: no delivery)."""
    request = exchange.request
    providers, secret_envs = _keys_for(webhooks, exchange)
    provider = detect(delivery_of(request, exchange.scheme), providers)
    secret_env = (secret_envs.get(provider.name) or provider.secret_env) if provider is not None else None
    event = provider.event_type(delivery_of(request, exchange.scheme)) if provider else None
    name = "_".join(p for p in (f"test_{index:0{width}d}", _slug(request.method), _slug(request.path),
                                _slug(event or "")) if p)
    # Only an id that is a word goes into the comment as it is: a newline would end the comment.
    shown_id = exchange.id if _SAFE_ID.fullmatch(exchange.id) else ascii(exchange.id)
    lines = [f"def {name}():", f"    # exchange {shown_id}"]
    skip = None
    if exchange.websocket:
        skip = "a WebSocket session cannot be sent again as one request"
    elif exchange.rule is not None and exchange.rule.action != "forward":
        skip = f"{exchange.rule.label()} at the relay answered it; it never reached the service"
    elif (unsendable := _unsendable(exchange)) is not None:
        skip = unsendable
    elif exchange.response is None:
        skip = f"no response was recorded ({exchange.error or 'in flight'})"
    elif request.body_truncated:
        skip = "the request body was recorded only in part"
    if skip is not None:
        lines.append(f"    pytest.skip({ascii(skip)})")
        return "\n".join(lines) + "\n", None
    assert exchange.response is not None
    pairs = [(n, field_value(v)) for n, v in request.headers if n.decode("latin-1").lower() not in _DROP]
    base = exchange.target_url or "http://127.0.0.1"
    args = [ascii(request.method), ascii(base), _literal(request.target),
            "[" + ", ".join(f"({_literal(n)}, {_literal(v)})" for n, v in pairs) + "]", repr(request.body)]
    expected = expectation(exchange, provider, asserts=asserts)
    if provider is not None and not provider.signed(delivery_of(request, exchange.scheme)):
        lines.append("    # it came unsigned: sent unsigned, as captured")  # as a replay sends it
        secret_env = None
    elif provider is not None and expected.refusal:
        # Signed afresh, it would be accepted where the receiver must refuse it.
        lines.append("    # its signature was judged invalid when it came: sent as captured, the refusal is checked")
        secret_env = None
    elif provider is not None:
        vouched = signs_unverified(exchange.webhook)  # the rule of a replay, applied when the module runs
        lines.extend(_signing_comment(exchange, vouched))
        args += [f"provider={ascii(provider.name)}", f"secret_env={ascii(secret_env)}",
                 f"timestamped={provider.tolerance is not None}"]
        if vouched:
            args.append("vouched=True")
        if _signs_url(provider):
            args.append(f"signed_url={ascii(delivery_of(request, exchange.scheme).url)}")
        if (scheme := _scheme_of(provider)) is not None:
            args.append(f"scheme={ascii(scheme)}")
    if request.http_version == "1.0":  # else HTTP/1.1, the only other version the relay takes
        args.append("version='1.0'")
    lines.append("    response = send(")
    lines.extend(f"        {arg}," for arg in args)
    lines.append("    )")
    if expected.comment:
        lines.append(f"    {expected.comment}")
    lines.append(f"    assert {expected.condition()}, _answered(response, {ascii(expected.message)})")
    challenge = slack_challenge(exchange, provider) if asserts == "expected" and not expected.refusal else None
    if challenge is not None:
        lines.append("    # Slack's url_verification: Slack sets the URL only when the answer echoes its challenge")
        lines.append(f"    assert _echoes_challenge(response, {ascii(challenge)}), _answered(")
        lines.append(f"        response, {ascii(_ECHO)})")
    return "\n".join(lines) + "\n", secret_env


def pytest_pieces(
    exchanges: Iterable[Exchange], *, redact: bool = False, webhooks: Any = None, path: str | None = None,
    asserts: str = "expected",
) -> Iterator[Export]:
    """The module of :func:`export_pytest` a test at a time. Its head names the tests' count and
    the secret variables they sign from, so the exchanges are read twice: once for those, then
    for the tests, one at a time (``exchanges`` is iterated twice; an iterator is read into a list).

    Raises:
        ExportError: no exchanges, or ``asserts`` is neither ``expected`` nor ``captured``.
    """
    checked = check_asserts(asserts)
    if iter(exchanges) is exchanges:  # one pass only: read it whole
        exchanges = list(exchanges)
    count = 0
    found: set[str] = set()
    for ex in each_prepared(exchanges, redact=redact):
        count += 1
        env = _test(count, ex, 2, webhooks, checked)[1]
        if env is not None:
            found.add(env)
    width = max(2, len(str(count)))
    envs = sorted(found or {p.secret_env for p in BUILTIN})
    if path is None:
        run, path = "Save it as a test file and run it with the service up:", "test_captured.py"
    else:
        run = "Run it with the service up:"
    yield Export(_HEADER.format(count=count, envs=", ".join(envs), run=run, path=_docstring_text(shlex.quote(path)),
                                checks=_CHECKS[checked]))
    for i, ex in enumerate(each_prepared(exchanges, redact=redact), 1):
        yield Export("\n\n" + _test(i, ex, width, webhooks, checked)[0])


_CHECKS: dict[str, str] = {
    "expected": """\
A test asserts what the other side expects, whatever the service answered when it was captured
(a capture of a fault would pass only while the fault is there): a webhook delivery is answered
2xx (its sender retries or records a failure otherwise), and refused (4xx) when its signature
was judged invalid when it came, then sent with its captured signature; a Slack url_verification
echoes its challenge; a request that was answered with a server error gets no 5xx; any other
request, the status captured.""",
    "captured": """\
A test asserts the status captured, as it was (exported with asserts='captured'): a capture of
a fault passes only while the fault is there.""",
}
"""What the module's docstring says its tests assert, by the exporter's ``asserts``."""


def _docstring_text(text: str) -> str:
    """``text`` (the name of a file, which may hold any character) as the module's docstring
    shows it: control and invisible characters as visible escapes (``values.terminal.escape``),
    then the backslashes and quotes of those escaped again for the Python source."""
    return escape(text).replace("\\", "\\\\").replace('"', '\\"')


def export_pytest(
    exchanges: Sequence[Exchange], *, redact: bool = False, webhooks: Any = None, path: str | None = None,
    asserts: str = "expected",
) -> Export:
    """A pytest module with one test per exchange (see the module's docstring).

    Args:
        exchanges: the exchanges, oldest first is the natural order.
        redact: replace credentials and secret fields with placeholders (the tests then send
            the placeholders).
        webhooks: the providers and secret variables of devtunnel.toml, as the agent reads them
            (``config.webhook_context``; any object with ``providers``, ``secret_envs`` and
            optionally ``for_tunnel(name)``): a delivery is signed from the variable its
            tunnel's ``[webhooks.PROVIDER]`` names, and a custom provider's scheme is written
            into the module. None: the built-in providers and their conventional variables.
            Only variable names enter the module, never a secret.
        path: the file the module is written to, named in its docstring's command to run it.
        asserts: ``expected`` (the default): each test asserts what a webhook sender or client
            expects of the answer (``pytest_checks.expectation``: 2xx for a delivery, a refusal
            for one judged invalid when it came, no 5xx where one was captured; a Slack
            url_verification's echoed challenge), whatever was captured; ``captured``: the
            status captured, as it was.

    Raises:
        ExportError: no exchanges, or ``asserts`` is neither ``expected`` nor ``captured``.
    """
    return joined(pytest_pieces(exchanges, redact=redact, webhooks=webhooks, path=path, asserts=asserts))
