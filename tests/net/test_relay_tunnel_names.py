"""The relay's Host -> tunnel name memo gives what working it out each time gives."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from devtunnel.relay.server import TunnelNames, tunnel_name

SUFFIX = b".tunnel.example"
labels = st.sampled_from([b"app", b"App", b"x-1", b"", b"tunnel", b"[::1]", b"127.0.0.1", b"."])
hosts = st.builds(
    lambda label, tail, port, dot: label + tail + dot + port,
    labels,
    st.sampled_from([SUFFIX, SUFFIX.upper(), b".example", b"", b".tunnel.example.evil"]),
    st.sampled_from([b"", b":80", b":8080", b":"]),
    st.sampled_from([b"", b"."]),
) | st.binary(max_size=24)


@given(st.lists(hosts, max_size=40), st.integers(min_value=1, max_value=5))
def test_names_are_tunnel_name_of_each_host_also_past_the_bound(seen: list[bytes], kept: int) -> None:
    names = TunnelNames(SUFFIX, kept=kept)
    for host in seen + seen:  # each host asked twice: worked out, then (if still held) remembered
        assert names[host] == tunnel_name(host, SUFFIX)
        assert len(names) <= kept


def test_a_host_under_the_domain_names_its_label_and_others_name_none() -> None:
    names = TunnelNames(SUFFIX)
    assert names[b"App.tunnel.example:8080"] == "app"
    assert names[b"app.tunnel.example."] == "app"
    assert names[b"tunnel.example"] is None
    assert names[b"app.example"] is None


def test_a_long_host_is_worked_out_but_not_kept() -> None:
    names = TunnelNames(SUFFIX)
    long_host = b"a" * 60_000 + SUFFIX  # under the relay's head limit: a client may send it
    assert names[long_host] == "a" * 60_000
    assert long_host not in names and len(names) == 0
    assert names[b"app" + SUFFIX] == "app" and len(names) == 1
