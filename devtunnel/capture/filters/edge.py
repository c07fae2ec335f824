"""Filters for rules at the edge: the client's address (``ip:``) and the deciding rule (``rule:``).

``ip:`` is what a rule's ``match`` uses to tell clients apart; ``rule`` finds the exchanges a
rule answered or routed in the inspector and the store. SQL calls ``ip_in_sql`` (registered as
``dt_ip_in`` by the store) so both sides agree on what an address and a network are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from devtunnel.capture.filters.base import Leaf, SqlParams, excerpt, fold, sql_number
from devtunnel.capture.model import Exchange
from devtunnel.errors import FilterSyntaxError
from devtunnel.values.terminal import quoted
from devtunnel.values.numbers import is_decimal

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(text: str) -> Address | None:
    """The address in ``ip``, ``ip:port``, ``[v6]:port`` or ``v6%zone``; None if not one.
    An IPv4 address mapped into IPv6 is the IPv4 one."""
    text = text.strip()
    if text.startswith("["):
        text = text[1 : text.find("]")] if "]" in text else text[1:]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def ip_in(ip: str, networks: Sequence[Network]) -> bool:
    """Whether the client address ``ip`` is in one of ``networks``."""
    address = client_address(ip)
    return address is not None and any(address.version == n.version and address in n for n in networks)


def ip_in_sql(remote_addr: object, networks: object) -> int:
    """``dt_ip_in(e.remote_addr, 'net net ...')`` for SQLite."""
    if not isinstance(remote_addr, str) or not isinstance(networks, str):
        return 0
    return int(ip_in(remote_addr, [ipaddress.ip_network(n) for n in networks.split()]))


class Ip(Leaf):
    code = "ip"
    syntax = "ip:10.0.0.0/8  ip:2001:db8::/32,127.0.0.1"
    help = "client address is one of these addresses or networks (IPv4 and IPv6; commas between)"

    def __init__(self, networks: Sequence[Network]) -> None:
        self.networks = list(networks)

    def __call__(self, ex: Exchange) -> bool:
        return ip_in(ex.remote_addr, self.networks)

    def sql(self) -> tuple[str, SqlParams]:
        return "(dt_ip_in(e.remote_addr, ?) = 1)", [" ".join(str(n) for n in self.networks)]


def build_ip(value: str, pos: int) -> Ip:
    """``ip:`` from its value text (``pos``: where the value starts, for the error's column)."""
    networks = []
    offset = 0
    for part in value.split(","):
        try:
            networks.append(ipaddress.ip_network(part.strip(), strict=False))
        except ValueError:
            raise FilterSyntaxError(
                f"ip expects addresses or networks like 10.0.0.0/8 or ::1, not {quoted(excerpt(part.strip()))}", pos + offset
            ) from None
        offset += len(part) + 1
    return Ip(networks)


class RuleMark(Leaf):
    code = "rule"
    syntax = "rule   rule:rate-limit   rule:2"
    help = "answered or routed by a rule at the relay (of this action, or with this number)"

    def __init__(self, value: str) -> None:
        self.value = fold(value)
        # The rule's number, read the same way for both twins (rule:02 is rule 2).
        self.number = int(self.value) if is_decimal(self.value) else None

    def __call__(self, ex: Exchange) -> bool:
        rule = ex.rule
        if rule is None:
            return False
        return rule.index == self.number if self.number is not None else rule.action == self.value

    def sql(self) -> tuple[str, SqlParams]:
        if self.number is not None:
            return "(e.rule_index IS NOT NULL AND e.rule_index = ?)", [sql_number(self.number)]
        return "(e.rule_action IS NOT NULL AND e.rule_action = ?)", [self.value]


class RuleAny(Leaf):
    code = "rule"
    syntax = "rule"
    help = "answered or routed by a rule at the relay"

    def __call__(self, ex: Exchange) -> bool:
        return ex.rule is not None

    def sql(self) -> tuple[str, SqlParams]:
        return "(e.rule_action IS NOT NULL)", []
