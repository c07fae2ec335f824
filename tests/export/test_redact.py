"""Secrets never leave in an export: one redaction, the same in curl, HAR, raw, HTTPie and the API's export."""

from __future__ import annotations

import gzip
import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.capture.model import Exchange, Headers, Response, WsMessage
from devtunnel.capture.recorder import Recorder
from devtunnel.capture.store import Store
from devtunnel.export import export
from devtunnel.export.redact import is_secret_field, is_secret_header, redact_body, redact_exchange
from devtunnel.agent.service import AgentService
from devtunnel.api.app import serve_api
from tests.kit.exchanges import make_exchange, make_response

# Every secret value below is a distinct marker: none may appear in a redacted export.
SECRETS = [
    "QAK111", "QAT222", "QSIG333",  # query: api_key, access_token, X-Amz-Signature
    "BEARER444", "CT555", "HS666", "PK777", "STRIPE888", "HUB999", "SLACK101", "SHOP202", "WEBHOOK303",
    "SVIX404", "TWILIO505", "COOKIE606", "XAUTH707",  # headers
    "PW808", "CS909", "AK010", "TK020", "S030", "NESTED040",  # JSON fields, nested too
    "SETCOOKIE050", "RAT060", "RRT070",  # response: Set-Cookie, access_token, refresh_token
]
KEPT = ["page=2", "max_tokens", "256", "token_type", "bearer", "idem-1", "sid", "ok-value"]

REQUEST_JSON = {
    "user": {"name": "ok-value", "password": "PW808", "profile": {"client_secret": "CS909"}},
    "api_key": "AK010",
    "token": "TK020",
    "max_tokens": 256,
    "items": [{"secret": "S030"}, {"credentials": {"inner": "NESTED040"}}],
}
RESPONSE_JSON = {"access_token": "RAT060", "refresh_token": "RRT070", "token_type": "bearer", "expires_in": 3600}


def leaky() -> Exchange:
    body = json.dumps(REQUEST_JSON).encode()
    response_body = json.dumps(RESPONSE_JSON).encode()
    headers = [
        ("Host", "pub.example"),
        ("Authorization", "Bearer BEARER444"),
        ("X-Custom-Token", "CT555"),
        ("X-Hasura-Admin-Secret", "HS666"),
        ("X-Partner-Key", "PK777"),
        ("Stripe-Signature", "t=1,v1=STRIPE888"),
        ("X-Hub-Signature-256", "sha256=HUB999"),
        ("X-Slack-Signature", "v0=SLACK101"),
        ("X-Shopify-Hmac-Sha256", "SHOP202"),
        ("webhook-signature", "v1,WEBHOOK303"),
        ("svix-signature", "v1,SVIX404"),
        ("X-Twilio-Signature", "TWILIO505"),
        ("Cookie", "sid=COOKIE606"),
        ("X-Auth", "XAUTH707"),
        ("Idempotency-Key", "idem-1"),
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
    ]
    response = Response(
        status=200,
        headers=Headers([("Set-Cookie", "sid=SETCOOKIE050; Path=/; HttpOnly"), ("Content-Type", "application/json"),
                         ("Content-Length", str(len(response_body)))]),
        body=response_body,
        body_size=len(response_body),
    )
    return make_exchange(
        "POST", b"/cb?api_key=QAK111&page=2&access_token=QAT222&X-Amz-Signature=QSIG333", headers, body, response
    )


def assert_redacted(text: str, *, response: bool = True) -> None:
    for secret in SECRETS if response else [s for s in SECRETS if s not in ("SETCOOKIE050", "RAT060", "RRT070")]:
        assert secret not in text, secret
    for kept in KEPT if response else KEPT[:3] + ["idem-1", "ok-value"]:
        assert kept in text, kept
    assert "<redacted>" in text or "%3Credacted%3E" in text


def test_curl_redacts_headers_query_and_nested_json_fields() -> None:
    text = export("curl", leaky(), redact=True).text
    assert_redacted(text, response=False)
    assert "api_key=%3Credacted%3E&page=2&access_token=%3Credacted%3E" in text
    assert "-H 'Authorization: Bearer <redacted>'" in text and "-H 'Cookie: sid=<redacted>'" in text


def test_httpie_redacts_the_same() -> None:
    assert_redacted(export("httpie", leaky(), redact=True).text, response=False)


def test_raw_redacts_request_and_response_and_fixes_content_length() -> None:
    text = export("raw", leaky(), redact=True, response=True).text
    assert_redacted(text)
    request_head, _, rest = text.partition("\r\n\r\n")
    body = rest.split("\r\nHTTP/1.1 ")[0]
    assert f"Content-Length: {len(body.encode())}" in request_head
    assert "Set-Cookie: sid=<redacted>; Path=/; HttpOnly" in text


def test_har_redacts_headers_query_cookies_and_bodies() -> None:
    text = export("har", leaky(), redact=True).text
    assert_redacted(text)
    entry = json.loads(text)["log"]["entries"][0]
    assert {"name": "api_key", "value": "<redacted>"} in entry["request"]["queryString"]
    assert json.loads(entry["request"]["postData"]["text"])["user"]["password"] == "<redacted>"
    assert json.loads(entry["response"]["content"]["text"])["token_type"] == "bearer"


def test_without_redact_everything_is_exported_as_captured() -> None:
    text = export("raw", leaky(), response=True).text
    assert all(secret in text for secret in SECRETS)


def test_redaction_leaves_the_captured_exchange_untouched() -> None:
    ex = leaky()
    before = (ex.request.target, ex.request.headers, ex.request.body, ex.response.body)  # type: ignore[union-attr]
    redact_exchange(ex)
    assert (ex.request.target, ex.request.headers, ex.request.body, ex.response.body) == before  # type: ignore[union-attr]


def test_form_and_multipart_fields_are_redacted() -> None:
    form = make_exchange("POST", b"/login", [("Host", "h"), ("Content-Type", "application/x-www-form-urlencoded")],
                         b"user=bob&password=PW1&client_secret=CS2&next=%2Fhome")
    text = export("curl", form, redact=True).text
    assert "PW1" not in text and "CS2" not in text and "user=bob" in text and "next=%2Fhome" in text
    boundary = "XyZ"
    body = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"user\"\r\n\r\nbob\r\n"
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"password\"\r\n\r\nPW3\r\n"
        f"--{boundary}--\r\n"
    ).encode()
    multipart = make_exchange("POST", b"/login", [("Host", "h"), ("Content-Type", f"multipart/form-data; boundary={boundary}")], body)
    result = export("httpie", multipart, redact=True)
    (sent,) = result.files.values()  # CRLF in the body: it is read from a side file
    assert b"PW3" not in sent and b"bob" in sent and b'name="password"\r\n\r\n<redacted>\r\n' in sent


def test_a_gzip_response_holding_a_token_is_redacted_and_kept_decoded() -> None:
    payload = gzip.compress(json.dumps({"access_token": "GZ123", "scope": "read"}).encode())
    response = Response(status=200, headers=Headers([("Content-Encoding", "gzip"), ("Content-Type", "application/json"),
                                                     ("Content-Length", str(len(payload)))]), body=payload, body_size=len(payload))
    ex = make_exchange(response=response)
    for fmt in ("har", "raw"):
        text = export(fmt, ex, redact=True, **({"response": True} if fmt == "raw" else {})).text
        assert "GZ123" not in text and "read" in text, fmt


def test_truncated_json_is_redacted_up_to_the_cut() -> None:
    ex = make_exchange("POST", b"/", [("Host", "h"), ("Content-Type", "application/json")], b'{"a": 1, "password": "PW-cut-her')
    ex.request.body_size, ex.request.body_truncated = 500, True
    text = export("curl", ex, redact=True).text
    assert "PW-cut" not in text and '"password": "<redacted>"' in text


def test_websocket_text_messages_are_redacted_in_har() -> None:
    ex = make_exchange(websocket=True, ws_messages=[WsMessage("client", 1, 1.0, b'{"type": "auth", "token": "WS1"}')])
    text = export("har", ex, redact=True).text
    assert "WS1" not in text and "auth" in text


@pytest.mark.parametrize(
    "name", ["Authorization", "X-Custom-Token", "X-Hasura-Admin-Secret", "X-Partner-Key", "x-amz-security-token",
             "Linear-Signature", "X-Shopify-Hmac-Sha256", "X-Auth", "Signature", "Set-Cookie",
             "Ocp-Apim-Subscription-Key", "DD-API-KEY", "DD-APPLICATION-KEY", "Access-Key"],
)
def test_secret_headers(name: str) -> None:
    assert is_secret_header(name)


@pytest.mark.parametrize(
    "name", ["Sec-WebSocket-Key", "Idempotency-Key", "X-Idempotency-Key", "X-Cache-Key", "Content-Type", "X-Request-Id",
             "Signature-Input", "Keep-Alive", "X-Forwarded-For"],
)
def test_headers_that_are_not_secrets(name: str) -> None:
    assert not is_secret_header(name)


@pytest.mark.parametrize(
    "name", ["password", "newPassword", "password_confirmation", "client_secret", "secret", "token", "access_token",
             "refreshToken", "id_token", "api_key", "apiKey", "apikey", "APIKey", "private_key", "X-Amz-Signature", "sig",
             "credentials", "passphrase", "subscription-key", "application_key"],
)
def test_secret_field_names(name: str) -> None:
    assert is_secret_field(name)


@pytest.mark.parametrize(
    "name", ["max_tokens", "token_type", "tokens_used", "idempotency_key", "key", "page", "secretary", "user", "keyword"],
)
def test_field_names_that_are_not_secrets(name: str) -> None:
    assert not is_secret_field(name)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Exchange]]:
    store = Store(tmp_path / "captures.db")
    recorder = Recorder(store)
    ex = leaky()
    store.put(ex)
    server, port = await serve_api(AgentService(store=store, recorder=recorder), port=0)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
            yield client, ex
    finally:
        await server.stop()
        recorder.close()
        store.close()


@pytest.mark.parametrize("fmt", ["curl", "har", "raw", "httpie"])
async def test_api_export_redacts_every_format(api: tuple[httpx.AsyncClient, Exchange], fmt: str) -> None:
    client, ex = api
    resp = await client.get(f"/api/requests/http/{ex.id}/export", params={"format": fmt, "redact": "true"})
    assert resp.status_code == 200, resp.text
    assert_redacted(resp.json()["text"], response=fmt == "har")
    plain = await client.get(f"/api/requests/http/{ex.id}/export", params={"format": fmt})
    assert "BEARER444" in plain.json()["text"]


async def test_api_export_to_another_base_url_or_the_local_service(api: tuple[httpx.AsyncClient, Exchange]) -> None:
    client, ex = api
    path = f"/api/requests/http/{ex.id}/export"
    to = await client.get(path, params={"format": "curl", "to": "http://127.0.0.1:3000"})
    assert to.status_code == 200 and "http://127.0.0.1:3000/cb?api_key=" in to.json()["text"]
    local = await client.get(path, params={"format": "httpie", "local": "true"})
    assert local.status_code == 200 and f"{ex.target_url}/cb?" in local.json()["text"]
    for params, message in [
        ({"format": "curl", "to": "ftp://127.0.0.1/"}, "not an http:// or https:// URL"),
        ({"format": "raw", "to": "http://127.0.0.1:3000"}, "names no URL"),
        ({"format": "curl", "to": "http://127.0.0.1:3000", "local": "true"}, "not both"),
    ]:
        resp = await client.get(path, params=params)
        assert resp.status_code == 400 and message in resp.json()["msg"], resp.text


# -- the JSON scanner against any document -----------------------------------------------------

KEYS = st.sampled_from(["password", "token", "name", "max_tokens", "api_key", "a\"b", "client_secret", "note", "ké"])
LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=8))
DOCS = st.recursive(LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
                    max_leaves=20)


def expected(doc: object) -> object:
    if isinstance(doc, dict):
        return {k: ("<redacted>" if is_secret_field(k) and v not in (None, "") else expected(v)) for k, v in doc.items()}
    if isinstance(doc, list):
        return [expected(v) for v in doc]
    return doc


@settings(max_examples=200, deadline=None)
@given(doc=DOCS, indent=st.sampled_from([None, 2]), ascii_only=st.booleans())
def test_json_redaction_keeps_the_document_valid_and_replaces_exactly_the_secret_members(
    doc: object, indent: int | None, ascii_only: bool
) -> None:
    body = json.dumps(doc, indent=indent, ensure_ascii=ascii_only).encode()
    assert json.loads(redact_body(body, "application/json")) == expected(doc)


@pytest.mark.parametrize("fmt", ["curl", "httpie", "raw", "har", "pytest"])
def test_tokens_in_the_urls_of_referer_and_location_are_redacted(fmt: str) -> None:
    # An OAuth callback: the token rode in the Referer's query and the redirect's fragment, and
    # every format printed them under --redact.
    response = make_response(302, [
        (b"Location", b"https://app.example/done?state=s1#access_token=TOKEN2&token_type=bearer"),
        (b"Content-Location", b"/cb?client_secret=TOKEN3"), (b"Content-Length", b"0"),
    ], reason="Found")
    ex = make_exchange("GET", b"/cb?code=c1", [
        (b"Host", b"demo.localhost"), (b"Referer", b"https://app.example/login?access_token=TOKEN1&next=%2Fhome#top"),
    ], response=response)
    options = {"response": True} if fmt == "raw" else {}
    text = export(fmt, ex, redact=True, **options).text
    assert not [t for t in ("TOKEN1", "TOKEN2", "TOKEN3") if t in text]
    if fmt in ("raw", "har"):
        assert "https://app.example/login?access_token=%3Credacted%3E&next=%2Fhome#top" in text
        assert "https://app.example/done?state=s1#access_token=%3Credacted%3E&token_type=bearer" in text


def test_api_keys_of_azure_and_datadog_are_redacted_in_every_format() -> None:
    # Printed as captured under --redact: only X- names ending in Key counted as keys.
    ex = make_exchange("GET", b"/v1/series?subscription-key=KEY3&application_key=KEY4&q=1", [
        (b"Host", b"demo.localhost"), (b"Ocp-Apim-Subscription-Key", b"KEY1"), (b"DD-API-KEY", b"KEY2"),
    ], response=make_response(200))
    for fmt in ("curl", "httpie", "raw", "har", "pytest"):
        text = export(fmt, ex, redact=True).text
        assert not [k for k in ("KEY1", "KEY2", "KEY3", "KEY4") if k in text], fmt
        assert "q=1" in text, fmt
