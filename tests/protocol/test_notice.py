"""The ``devtunnel-rule`` header: what the relay writes, the agent reads back (one module for both)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.agent.relay_signals import rule_of
from devtunnel.protocol.events import RequestReceived
from devtunnel.protocol.notice import MAX_ACTION, RULE_HEADER, Notice, notice_value, read_notice, route_value

ACTIONS = st.sampled_from(["deny", "respond", "basic-auth", "rate-limit", "drill"])
SIZES = st.integers(min_value=0, max_value=10**18 - 1)


@given(st.sampled_from(["relay", "tunnel"]), st.integers(0, 10**6), ACTIONS, st.integers(0, 599), SIZES,
       st.none() | SIZES)
def test_what_the_relay_writes_the_agent_reads_back(scope, index, action, status, size, cut):
    assert read_notice(notice_value(scope, index, action, status, size, cut)) == Notice(scope, index, action, status, size, cut)


def test_a_route_reads_as_its_rule_with_nothing_answered():
    assert read_notice(route_value(3)) == Notice("tunnel", 3, "forward", 0, 0, -1)


@pytest.mark.parametrize(("value", "expected"), [
    (b"relay;2;deny;403", Notice("relay", 2, "deny", 403, 0, -1)),  # a relay before SIZE
    (b"relay;2;deny;403;9", Notice("relay", 2, "deny", 403, 9, -1)),  # ... and before BODY
    (b"relay;2;deny;403;9;all;later", Notice("relay", 2, "deny", 403, 9, None)),  # a later field is ignored
    (b"relay;2;deny;4030;9;all", Notice("relay", 2, "deny", 0, 9, None)),  # no status of four digits
    (b"relay;2;deny;403;" + b"9" * 19 + b";all", Notice("relay", 2, "deny", 403, 0, None)),
    (b"relay;2;deny;403;9;x", Notice("relay", 2, "deny", 403, 9, 0)),  # cut, of a size it cannot read
    (b"relay;2;" + b"a" * 100, Notice("relay", 2, "a" * MAX_ACTION, 0, 0, -1)),
])
def test_fields_it_cannot_read_read_as_not_said(value, expected):
    assert read_notice(value) == expected


@pytest.mark.parametrize("value", [
    b"", b"relay", b"relay;2", b"relay;2;", b"other;2;deny", b"relay;-2;deny", b"relay;x;deny",
    b"relay;" + b"9" * 5000 + b";deny",  # no 5,000-digit int (Python refuses past 4,300: no error either)
])
def test_what_is_no_notice_is_none(value):
    assert read_notice(value) is None


def test_the_agent_takes_the_header_off_the_head_whatever_it_says():
    for value in (b"relay;" + b"9" * 5000 + b";deny", b"tunnel;1;deny;403;10;all"):
        head = RequestReceived(1, b"GET", b"/", b"1.1", ((b"Host", b"app"), (RULE_HEADER, value)), True)
        rest, mark, *_ = rule_of(head)
        assert rest.headers == ((b"Host", b"app"),)
        assert (mark is None) == value.startswith(b"relay;9")
