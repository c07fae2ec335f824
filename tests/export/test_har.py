"""HAR export checked against the HAR 1.2 spec's required fields and types."""

from __future__ import annotations

import base64
import gzip
import json
import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel.capture.model import Headers, Response, WsMessage
from devtunnel.export import export
from tests.kit.exchanges import make_exchange

# ----------------------------------------------------------------------------------------------
# A checker written from the HAR 1.2 spec: (field, type, required) per object; custom fields
# must start with "_"; any other unknown field is an error.

STR, NUM, BOOL, OBJ, ARR = "string", "number", "boolean", "object", "array"
SPEC: dict[str, dict[str, tuple[str, bool]]] = {
    "log": {"version": (STR, True), "creator": (OBJ, True), "browser": (OBJ, False), "pages": (ARR, False),
            "entries": (ARR, True), "comment": (STR, False)},
    "creator": {"name": (STR, True), "version": (STR, True), "comment": (STR, False)},
    "entry": {"pageref": (STR, False), "startedDateTime": (STR, True), "time": (NUM, True), "request": (OBJ, True),
              "response": (OBJ, True), "cache": (OBJ, True), "timings": (OBJ, True), "serverIPAddress": (STR, False),
              "connection": (STR, False), "comment": (STR, False)},
    "request": {"method": (STR, True), "url": (STR, True), "httpVersion": (STR, True), "cookies": (ARR, True),
                "headers": (ARR, True), "queryString": (ARR, True), "postData": (OBJ, False),
                "headersSize": (NUM, True), "bodySize": (NUM, True), "comment": (STR, False)},
    "response": {"status": (NUM, True), "statusText": (STR, True), "httpVersion": (STR, True), "cookies": (ARR, True),
                 "headers": (ARR, True), "content": (OBJ, True), "redirectURL": (STR, True),
                 "headersSize": (NUM, True), "bodySize": (NUM, True), "comment": (STR, False)},
    "cookie": {"name": (STR, True), "value": (STR, True), "path": (STR, False), "domain": (STR, False),
               "expires": (STR, False), "httpOnly": (BOOL, False), "secure": (BOOL, False), "comment": (STR, False)},
    "pair": {"name": (STR, True), "value": (STR, True), "comment": (STR, False)},
    "postData": {"mimeType": (STR, True), "params": (ARR, False), "text": (STR, False), "comment": (STR, False)},
    "content": {"size": (NUM, True), "compression": (NUM, False), "mimeType": (STR, True), "text": (STR, False),
                "encoding": (STR, False), "comment": (STR, False)},
    "cache": {"beforeRequest": (OBJ, False), "afterRequest": (OBJ, False), "comment": (STR, False)},
    "timings": {"blocked": (NUM, False), "dns": (NUM, False), "connect": (NUM, False), "send": (NUM, True),
                "wait": (NUM, True), "receive": (NUM, True), "ssl": (NUM, False), "comment": (STR, False)},
}
ISO_8601 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


def _type_ok(value: Any, kind: str) -> bool:
    return {
        STR: isinstance(value, str),
        NUM: isinstance(value, (int, float)) and not isinstance(value, bool),
        BOOL: isinstance(value, bool),
        OBJ: isinstance(value, dict),
        ARR: isinstance(value, list),
    }[kind]


def check_object(obj: Any, kind: str, where: str) -> None:
    assert isinstance(obj, dict), f"{where}: not an object"
    for name, (ftype, required) in SPEC[kind].items():
        if name not in obj:
            assert not required, f"{where}.{name}: required field missing"
            continue
        assert _type_ok(obj[name], ftype), f"{where}.{name}: {obj[name]!r} is not a {ftype}"
    unknown = [k for k in obj if k not in SPEC[kind] and not k.startswith("_")]
    assert not unknown, f"{where}: fields outside the spec without a leading underscore: {unknown}"


def check_har(doc: Any) -> None:
    """Fail with the path of the first violation of the HAR 1.2 spec."""
    assert set(doc) == {"log"}
    log = doc["log"]
    check_object(log, "log", "log")
    assert log["version"] == "1.2"
    check_object(log["creator"], "creator", "log.creator")
    for i, entry in enumerate(log["entries"]):
        at = f"log.entries[{i}]"
        check_object(entry, "entry", at)
        assert ISO_8601.match(entry["startedDateTime"]), f"{at}.startedDateTime is not ISO 8601"
        req, resp = entry["request"], entry["response"]
        check_object(req, "request", f"{at}.request")
        assert re.match(r"^https?://[^/]+", req["url"]), f"{at}.request.url is not absolute"
        check_object(resp, "response", f"{at}.response")
        for part, obj in (("request", req), ("response", resp)):
            for j, cookie in enumerate(obj["cookies"]):
                check_object(cookie, "cookie", f"{at}.{part}.cookies[{j}]")
            for j, header in enumerate(obj["headers"]):
                check_object(header, "pair", f"{at}.{part}.headers[{j}]")
        for j, pair in enumerate(req["queryString"]):
            check_object(pair, "pair", f"{at}.request.queryString[{j}]")
        if "postData" in req:
            check_object(req["postData"], "postData", f"{at}.request.postData")
            assert ("text" in req["postData"]) != ("params" in req["postData"]), "postData: text xor params"
        check_object(resp["content"], "content", f"{at}.response.content")
        check_object(entry["cache"], "cache", f"{at}.cache")
        timings = entry["timings"]
        check_object(timings, "timings", f"{at}.timings")
        for name in ("send", "wait", "receive"):
            assert timings[name] >= 0, f"{at}.timings.{name} must be non-negative"
        total = sum(v for k, v in timings.items() if k != "comment" and v != -1)
        assert abs(entry["time"] - total) < 1e-6, f"{at}.time is not the sum of the timings"


def har(exchanges: Any, **options: Any) -> dict[str, Any]:
    result = export("har", exchanges, **options)
    assert result.files == {}
    doc = json.loads(result.text)
    check_har(doc)
    return doc


# ----------------------------------------------------------------------------------------------


def test_checker_rejects_a_missing_required_field_and_an_unprefixed_custom_field() -> None:
    doc = har(make_exchange(response=Response()))
    del doc["log"]["entries"][0]["request"]["queryString"]
    try:
        check_har(doc)
    except AssertionError as exc:
        assert "queryString" in str(exc)
    else:
        raise AssertionError("the checker accepted a HAR without queryString")
    doc = har(make_exchange(response=Response()))
    doc["log"]["entries"][0]["custom"] = 1
    try:
        check_har(doc)
    except AssertionError as exc:
        assert "custom" in str(exc)
    else:
        raise AssertionError("the checker accepted a custom field without underscore")


def test_many_exchanges_make_one_log_with_entries_oldest_first() -> None:
    newer = make_exchange(target=b"/new", started_at=2_000_000_000.0, response=Response())
    older = make_exchange(target=b"/old", started_at=1_000_000_000.5, response=Response())
    doc = har([newer, older])
    entries = doc["log"]["entries"]
    assert [e["request"]["url"] for e in entries] == ["http://pub.example/old", "http://pub.example/new"]
    assert datetime.fromisoformat(entries[0]["startedDateTime"]).timestamp() == 1_000_000_000.5
    assert doc["log"]["creator"]["name"] == "devtunnel"


def test_request_fields_headers_cookies_query_and_text_body() -> None:
    ex = make_exchange(
        "POST",
        b"/hook?a=1&b=x%20y&a=2&empty=",
        [(b"Host", b"pub.example"), (b"Cookie", b"sid=abc; theme=dark"), (b"Content-Type", b"application/json")],
        b'{"ok": true}',
        response=Response(status=204, reason="No Content"),
        duration=0.050,
        ttfb=0.030,
    )
    entry = har(ex)["log"]["entries"][0]
    req = entry["request"]
    assert req["method"] == "POST" and req["httpVersion"] == "HTTP/1.1"
    assert req["queryString"] == [
        {"name": "a", "value": "1"}, {"name": "b", "value": "x y"}, {"name": "a", "value": "2"},
        {"name": "empty", "value": ""},
    ]
    assert req["cookies"] == [{"name": "sid", "value": "abc"}, {"name": "theme", "value": "dark"}]
    assert req["headers"][1] == {"name": "Cookie", "value": "sid=abc; theme=dark"}
    assert req["postData"] == {"mimeType": "application/json", "text": '{"ok": true}'}
    assert req["bodySize"] == 12
    assert entry["time"] == 50.0 and entry["timings"] == {"send": 0.0, "wait": 30.0, "receive": 20.0}


def test_headers_size_counts_the_bytes_of_the_head_as_sent() -> None:
    # UTF-8 in the target, a header value and the reason: each character of two bytes counts two.
    ex = make_exchange(
        "GET", "/Größe?q=✓".encode(), [(b"Host", b"pub.example"), (b"X-Name", "Größe".encode())], b"",
        response=Response(status=200, reason="Größe".encode().decode("latin-1"),
                          headers=Headers.of_pairs([(b"X-Name", "✓".encode())])),
    )
    entry = har(ex)["log"]["entries"][0]
    request_head = "GET /Größe?q=✓ HTTP/1.1\r\nHost: pub.example\r\nX-Name: Größe\r\n\r\n".encode()
    response_head = "HTTP/1.1 200 Größe\r\nX-Name: ✓\r\n\r\n".encode()
    assert entry["request"]["headersSize"] == len(request_head)
    assert entry["response"]["headersSize"] == len(response_head)


def test_binary_bodies_are_base64_and_round_trip() -> None:
    request_body = bytes(range(256))
    response_body = b"\x89PNG\r\n\x1a\n\x00\xff" * 10
    ex = make_exchange(
        "PUT", b"/img", body=request_body,
        response=Response(headers=Headers([("Content-Type", "image/png")]), body=response_body, body_size=len(response_body)),
    )
    entry = har(ex)["log"]["entries"][0]
    post = entry["request"]["postData"]
    assert post["_encoding"] == "base64" and base64.b64decode(post["text"]) == request_body
    content = entry["response"]["content"]
    assert content["encoding"] == "base64" and base64.b64decode(content["text"]) == response_body
    assert content["size"] == len(response_body) and content["mimeType"] == "image/png"


def test_gzip_response_is_decoded_and_compression_recorded() -> None:
    plain = b"<p>hello</p>" * 100
    packed = gzip.compress(plain)
    headers = Headers([("Content-Type", "text/html"), ("Content-Encoding", "gzip")])
    ex = make_exchange(response=Response(headers=headers, body=packed, body_size=len(packed)))
    content = har(ex)["log"]["entries"][0]["response"]["content"]
    assert content["text"] == plain.decode() and "encoding" not in content
    assert content["size"] == len(plain) and content["compression"] == len(plain) - len(packed)


def test_a_gzip_bomb_is_kept_as_captured_not_inflated_in_memory() -> None:
    # 128 MiB of zeros in 130 KB of gzip: inflated whole (zlib.decompress), one export held
    # gigabytes for a few KiB captured.
    import tracemalloc

    packed = gzip.compress(bytes(128 << 20), 9)
    headers = Headers([("Content-Type", "text/plain"), ("Content-Encoding", "gzip")])
    ex = make_exchange(response=Response(headers=headers, body=packed, body_size=len(packed)))
    tracemalloc.start()
    try:
        content = har(ex)["log"]["entries"][0]["response"]["content"]
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert content["encoding"] == "base64" and base64.b64decode(content["text"]) == packed
    assert content["comment"] == "gzip body kept as captured (it decodes to more than 32 MiB)"
    assert peak < 96 << 20, peak  # about twice the 32 MiB looked at (zlib grows its buffer), not the 128 MiB


def test_a_gzip_body_that_does_not_decode_is_kept_and_said() -> None:
    headers = Headers([("Content-Encoding", "gzip")])
    ex = make_exchange(response=Response(headers=headers, body=b"not gzip", body_size=8))
    content = har(ex)["log"]["entries"][0]["response"]["content"]
    assert content["text"] == "not gzip" and content["comment"] == "gzip body kept as captured (it does not decode)"


def test_truncated_bodies_carry_a_comment() -> None:
    ex = make_exchange(response=Response(body=b"abc", body_size=5000, body_truncated=True))
    content = har(ex)["log"]["entries"][0]["response"]["content"]
    assert content["comment"] == "body truncated: 3 of 5000 bytes were recorded"
    assert content["size"] == 5000


def test_exchange_with_an_error_and_no_response_is_a_valid_entry() -> None:
    ex = make_exchange(error="local_refused", error_message="connection refused by 127.0.0.1:3000", duration=0.002)
    entry = har(ex)["log"]["entries"][0]
    assert entry["response"]["status"] == 0 and entry["response"]["_error"] == "local_refused"
    assert "refused" in entry["response"]["comment"] and "refused" in entry["comment"]
    # An empty text, not none: haralyzer's HarEntry(entry).response.text raised KeyError('text').
    assert entry["response"]["content"] == {"size": 0, "mimeType": "x-unknown", "text": ""}


def test_request_without_host_gets_an_absolute_url_from_the_target() -> None:
    ex = make_exchange(target=b"/x?y=1", headers=[], target_url="http://127.0.0.1:3000")
    assert har(ex)["log"]["entries"][0]["request"]["url"] == "http://127.0.0.1:3000/x?y=1"


def test_in_flight_exchange_has_zero_timings() -> None:
    entry = har(make_exchange())["log"]["entries"][0]
    assert entry["time"] == 0 and entry["response"]["status"] == 0


def test_redact_hides_credentials_in_headers_and_cookies() -> None:
    ex = make_exchange(
        headers=[(b"Host", b"h"), (b"Authorization", b"Bearer sk_live_123"), (b"Cookie", b"sid=secret")],
        response=Response(headers=Headers([("Set-Cookie", "sid=secret2; Path=/; HttpOnly")])),
    )
    text = export("har", ex, redact=True).text
    assert "sk_live_123" not in text and "secret" not in text
    entry = json.loads(text)["log"]["entries"][0]
    assert entry["request"]["cookies"] == [{"name": "sid", "value": "<redacted>"}]
    assert entry["response"]["cookies"][0]["value"] == "<redacted>"
    assert entry["response"]["cookies"][0]["httpOnly"] is True


def test_websocket_messages_are_listed() -> None:
    ex = make_exchange(websocket=True, response=Response(status=101), ws_messages=[
        WsMessage("client", 1, 1.0, b"hello"), WsMessage("server", 2, 2.0, b"\x00\x01"),
    ])
    entry = har(ex)["log"]["entries"][0]
    assert entry["_resourceType"] == "websocket"  # what Chrome's HAR importer reads a WebSocket's entry by
    messages = entry["_webSocketMessages"]
    assert messages == [
        {"type": "send", "time": 1.0, "opcode": 1, "data": "hello"},
        {"type": "receive", "time": 2.0, "opcode": 2, "data": "AAE="},
    ]


def test_websocket_messages_recorded_in_part_have_their_real_size() -> None:
    ex = make_exchange(websocket=True, response=Response(status=101), ws_messages=[
        WsMessage("client", 1, 1.0, b"hel", size=5), WsMessage("server", 2, 2.0, b"", size=2),
    ])
    messages = har(ex)["log"]["entries"][0]["_webSocketMessages"]
    assert messages == [  # (an empty message, for the second, before)
        {"type": "send", "time": 1.0, "opcode": 1, "data": "hel", "_size": 5},
        {"type": "receive", "time": 2.0, "opcode": 2, "data": "", "_size": 2},
    ]


def test_control_characters_in_captured_text_are_escaped_in_the_output() -> None:
    ex = make_exchange(response=Response(body=b"\x1b[2J\x1b]0;owned\x07 \xe2\x80\xae", body_size=12))
    text = export("har", ex).text
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert json.loads(text)["log"]["entries"][0]["response"]["content"]["text"] == "\x1b[2J\x1b]0;owned\x07 \u202e"


header_bytes = st.binary(min_size=1, max_size=20)


@settings(max_examples=60, deadline=None)
@given(
    target=st.binary(max_size=40).map(lambda b: b"/" + b),
    headers=st.lists(st.tuples(st.text("abcXYZ-", min_size=1, max_size=8), header_bytes), max_size=6),
    req_body=st.binary(max_size=200),
    resp_body=st.binary(max_size=200),
    status=st.integers(100, 599),
    truncated=st.booleans(),
)
def test_any_exchange_gives_a_valid_har_whose_bodies_round_trip(
    target: bytes, headers: list, req_body: bytes, resp_body: bytes, status: int, truncated: bool
) -> None:
    response = Response(status=status, body=resp_body, body_size=len(resp_body) + (7 if truncated else 0),
                        body_truncated=truncated, headers=Headers(headers))
    ex = make_exchange("POST", target, [("Host", "h"), *headers], req_body, response=response, duration=0.01, ttfb=0.02)
    entry = har(ex)["log"]["entries"][0]
    content = entry["response"]["content"]
    decoded = base64.b64decode(content["text"]) if content.get("encoding") == "base64" else content["text"].encode()
    assert decoded == resp_body
    if req_body:
        post = entry["request"]["postData"]
        sent = base64.b64decode(post["text"]) if post.get("_encoding") == "base64" else post["text"].encode()
        assert sent == req_body


def test_an_asterisk_form_target_gives_a_valid_absolute_url() -> None:
    # `OPTIONS * HTTP/1.1` was written as http://host:8080* (a port of "8080*": no URL at all).
    ex = make_exchange("OPTIONS", b"*", headers=[(b"Host", b"demo.localhost:8080")])
    url = har(ex)["log"]["entries"][0]["request"]["url"]
    assert url == "http://demo.localhost:8080/*"
    assert urlsplit(url).port == 8080
    no_host = make_exchange("OPTIONS", b"*", headers=[], target_url="http://127.0.0.1:3000/")
    assert har(no_host)["log"]["entries"][0]["request"]["url"] == "http://127.0.0.1:3000/*"


def test_a_header_value_that_is_not_utf8_keeps_its_bytes() -> None:
    # `X-Val: \xe9t\xe9` (Latin-1 "été") was written "\ufffdt\ufffd": the bytes were gone, silently.
    ex = make_exchange(headers=[(b"Host", b"h"), (b"X-Val", b"\xe9t\xe9"), (b"X-Ok", "café".encode())])
    headers = har(ex)["log"]["entries"][0]["request"]["headers"]
    bad = next(h for h in headers if h["name"] == "X-Val")
    assert base64.b64decode(bad["_valueBase64"]) == b"\xe9t\xe9" and "_valueBase64" in bad["comment"]
    assert next(h for h in headers if h["name"] == "X-Ok") == {"name": "X-Ok", "value": "café"}
