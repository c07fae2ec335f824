"""The count by client address (``relay.slots.AddressCounts``) that the relay's open and pending
connections each keep: the limit per address, the addresses it does not apply to, and memory
bounded by what is held (an address that gives its last back has no entry left)."""

from __future__ import annotations

import ipaddress

import pytest

from devtunnel.relay.slots import AddressCounts


def test_an_address_past_its_limit_is_refused_and_others_are_not() -> None:
    counts = AddressCounts(2)
    assert counts.take("192.0.2.1") == "192.0.2.1" and counts.take("::ffff:192.0.2.1") == "192.0.2.1"
    assert counts.take("192.0.2.1") is None  # nothing counted
    assert counts.held_by("192.0.2.1") == 2 and counts.take("192.0.2.2") == "192.0.2.2"
    assert counts.take("2001:db8::1") == "2001:db8::/64" and counts.take("2001:db8::2") == "2001:db8::/64"
    assert counts.take("2001:db8::ffff") is None and counts.take("2001:db8:0:1::1") == "2001:db8:0:1::/64"
    counts.give_back("192.0.2.1")
    assert counts.take("192.0.2.1") == "192.0.2.1"


def test_no_limit_counts_and_an_exempt_address_is_counted_never_refused() -> None:
    unlimited = AddressCounts(None)
    assert all(unlimited.take("192.0.2.1") for _ in range(1000)) and unlimited.held_by("192.0.2.1") == 1000
    counts = AddressCounts(1, exempt=[ipaddress.ip_network("10.0.0.0/8")])
    assert all(counts.take("::ffff:10.0.0.1") == "10.0.0.1" for _ in range(5))
    assert counts.held_by("10.0.0.1") == 5 and counts.take("192.0.2.1") and counts.take("192.0.2.1") is None


def test_an_address_added_past_its_limit_is_counted() -> None:
    # (a connection kept alive after a response: counted, never refused)
    counts = AddressCounts(1)
    key = counts.take("192.0.2.1")
    assert key is not None
    counts.add(key)
    assert counts.held_by("192.0.2.1") == 2 and counts.take("192.0.2.1") is None
    counts.give_back(key)
    assert counts.take("192.0.2.1") is None
    counts.give_back(key)
    assert counts.take("192.0.2.1") == key


def test_memory_is_bounded_by_what_is_held_not_by_the_addresses_seen() -> None:
    counts = AddressCounts(3)
    for round_ in range(3):
        keys = [counts.take(f"10.{round_}.{i >> 8}.{i & 255}") for i in range(5000)]
        keys += [counts.take(f"2001:db8:{round_}:{i:x}::1") for i in range(5000)]
        counts.add("192.0.2.1")  # (one kept alive)
        assert len(counts) == 10_001
        for key in keys:
            assert key is not None
            counts.give_back(key)
        assert counts.by_key == {"192.0.2.1": 1}
        counts.give_back("192.0.2.1")
        assert len(counts) == 0 and counts.by_key == {}


def test_giving_back_what_was_not_counted_is_a_bug_said_at_once() -> None:
    counts = AddressCounts(1)
    with pytest.raises(KeyError):
        counts.give_back("192.0.2.1")
    assert len(counts) == 0
