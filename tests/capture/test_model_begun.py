"""``Exchange.begun``: the agent's quicker way to make an ``Exchange``, held to the dataclass's own."""

from __future__ import annotations

import dataclasses

from devtunnel.capture.model import Exchange, Headers, Request, RuleMark


def _request() -> Request:
    return Request(headers=Headers.of_pairs(((b"Host", b"h"),)), http_version="1.1", method="GET", target=b"/x")


def test_begun_sets_every_field_as_the_dataclass_init_does_and_nothing_else() -> None:
    request, rule = _request(), RuleMark(2, "forward")
    for websocket, mark in ((True, rule), (False, None)):
        quick = Exchange.begun("01ID", "t", 1.5, request, "1.2.3.4:5", "https", "http://127.0.0.1:8080", websocket, mark)
        made = Exchange(id="01ID", tunnel="t", started_at=1.5, request=request, remote_addr="1.2.3.4:5", scheme="https",
                        target_url="http://127.0.0.1:8080", websocket=websocket, rule=mark)
        assert vars(quick) == vars(made)  # signature_notice too, which == leaves out
        assert list(vars(quick)) == [f.name for f in dataclasses.fields(Exchange)]
        assert quick == made


def test_each_exchange_begun_has_its_own_message_list() -> None:
    a = Exchange.begun("a", "t", 1.0, _request(), "", "http", "", True, None)
    b = Exchange.begun("b", "t", 1.0, _request(), "", "http", "", True, None)
    assert a.ws_messages == [] and a.ws_messages is not b.ws_messages
