"""``Exchange.begun``: the agent's quicker way to make an ``Exchange``, held to the dataclass's own."""

from __future__ import annotations

import dataclasses

from devtunnel.capture.model import Exchange, Headers, Request, Response, RuleMark


CLASS_DEFAULTS = ("held", "holding")
"""Fields ``begun`` leaves to the class's defaults (set only for a request that waited for its app)."""

MESSAGE_CLASS_DEFAULTS = ("body_budget_cut",)
"""Fields ``received`` leaves to the class's defaults (set only on a body the body budget cut)."""


def _request() -> Request:
    return Request(headers=Headers.of_pairs(((b"Host", b"h"),)), http_version="1.1", method="GET", target=b"/x")


def test_begun_sets_every_field_as_the_dataclass_init_does_and_nothing_else() -> None:
    request, rule = _request(), RuleMark(2, "forward")
    for websocket, mark in ((True, rule), (False, None)):
        quick = Exchange.begun("01ID", "t", 1.5, request, "1.2.3.4:5", "https", "http://127.0.0.1:8080", websocket, mark)
        made = Exchange(id="01ID", tunnel="t", started_at=1.5, request=request, remote_addr="1.2.3.4:5", scheme="https",
                        target_url="http://127.0.0.1:8080", websocket=websocket, rule=mark)
        # The fields nearly no exchange sets read their defaults from the class.
        assert vars(quick) == {k: v for k, v in vars(made).items() if k not in CLASS_DEFAULTS}  # signature_notice too
        assert list(vars(quick)) == [f.name for f in dataclasses.fields(Exchange) if f.name not in CLASS_DEFAULTS]
        assert quick == made and (quick.held, quick.holding) == (None, False)


def test_each_exchange_begun_has_its_own_message_list() -> None:
    a = Exchange.begun("a", "t", 1.0, _request(), "", "http", "", True, None)
    b = Exchange.begun("b", "t", 1.0, _request(), "", "http", "", True, None)
    assert a.ws_messages == [] and a.ws_messages is not b.ws_messages


def test_request_and_response_received_set_every_field_as_the_dataclass_init_does() -> None:
    headers = Headers.of_pairs(((b"Host", b"h"), (b"X", b"1")))
    quick_req = Request.received(headers, "1.0", "POST", b"/hook?a=1")
    made_req = Request(headers=headers, http_version="1.0", method="POST", target=b"/hook?a=1")
    assert vars(quick_req) == {k: v for k, v in vars(made_req).items() if k not in MESSAGE_CLASS_DEFAULTS}
    assert type(quick_req) is Request and quick_req == made_req and not quick_req.body_budget_cut
    assert sorted(vars(quick_req)) == sorted(f.name for f in dataclasses.fields(Request)
                                             if f.name not in MESSAGE_CLASS_DEFAULTS)
    quick_res = Response.received(headers, "1.1", 404, "Not Found")
    made_res = Response(headers=headers, http_version="1.1", status=404, reason="Not Found")
    assert vars(quick_res) == {k: v for k, v in vars(made_res).items() if k not in MESSAGE_CLASS_DEFAULTS}
    assert type(quick_res) is Response and quick_res == made_res and not quick_res.body_budget_cut
    assert sorted(vars(quick_res)) == sorted(f.name for f in dataclasses.fields(Response)
                                             if f.name not in MESSAGE_CLASS_DEFAULTS)
