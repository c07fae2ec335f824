"""Captured exchanges for tests: every part has a default, every field can be given.

    make_exchange()                                              # GET / to pub.example, no response
    make_exchange("POST", b"/hooks", body=b"{}", response=make_response(201))
    make_exchange(headers=[], tunnel="shop", started_at=T0 + 3, error="local_refused")

Bodies are recorded whole unless ``body_size`` says otherwise (then ``body_truncated`` says
whether only a part was kept). Any other keyword is a field of ``Exchange``.
"""

from __future__ import annotations

from collections.abc import Iterable

from devtunnel.capture.model import Exchange, Headers, Request, Response, new_id

T0 = 1_764_158_400.25
"""2025-11-26 12:00:00.25 UTC: when an exchange starts unless told otherwise."""

HeaderFields = Headers | Iterable[tuple[bytes | str, bytes | str]]

DEFAULT_HEADERS: tuple[tuple[str, str], ...] = (("Host", "pub.example"),)
"""The request headers of ``make_exchange`` when none are given."""


def make_request(method: str = "GET", target: bytes | str = b"/", headers: HeaderFields = (), body: bytes = b"", *,
                 body_size: int | None = None, body_truncated: bool = False, http_version: str = "1.1") -> Request:
    """A request; ``target`` as text is UTF-8 encoded, ``body_size`` defaults to the body's length."""
    return Request(
        method=method,
        target=target.encode("utf-8") if isinstance(target, str) else target,
        headers=Headers(headers),
        body=body,
        body_size=len(body) if body_size is None else body_size,
        body_truncated=body_truncated,
        http_version=http_version,
    )


def make_response(status: int = 200, headers: HeaderFields = (), body: bytes = b"", *, reason: str = "",
                  body_size: int | None = None, body_truncated: bool = False, http_version: str = "1.1") -> Response:
    """A response; ``body_size`` defaults to the body's length."""
    return Response(
        status=status,
        reason=reason,
        headers=Headers(headers),
        body=body,
        body_size=len(body) if body_size is None else body_size,
        body_truncated=body_truncated,
        http_version=http_version,
    )


def make_exchange(
    method: str = "GET",
    target: bytes | str = b"/",
    headers: HeaderFields | None = None,
    body: bytes = b"",
    response: Response | None = None,
    *,
    body_size: int | None = None,
    body_truncated: bool = False,
    request: Request | None = None,
    id: str | None = None,
    tunnel: str = "demo",
    started_at: float = T0,
    target_url: str = "http://127.0.0.1:9",
    **fields: object,
) -> Exchange:
    """An exchange of ``tunnel`` started at ``started_at`` (a fresh id unless ``id`` is given).

    The request is ``request`` when given, else one made of ``method``, ``target``, ``headers``
    (``DEFAULT_HEADERS`` when None), ``body``, ``body_size`` and ``body_truncated``. ``fields``
    sets any other field of ``Exchange`` (``duration``, ``error``, ``replay_of``, ``webhook``...).
    """
    if request is None:
        request = make_request(method, target, DEFAULT_HEADERS if headers is None else headers, body,
                               body_size=body_size, body_truncated=body_truncated)
    return Exchange(id=new_id() if id is None else id, tunnel=tunnel, started_at=started_at, request=request,
                    response=response, target_url=target_url, **fields)  # type: ignore[arg-type]
