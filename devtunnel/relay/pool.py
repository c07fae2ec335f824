"""The agents holding one tunnel name at the relay, and which of them takes the next request.

A name is held by one agent, or shared by a pool: agents of the same token that all asked for
it with ``pool`` (``devtunnel http PORT --name NAME --pool``). New requests go round robin over
the members that take new streams and have room for one; a member that leaves is removed at
once by the relay, and the name is free when the last one left. A pool and an agent holding the
name alone never mix.
"""

from __future__ import annotations

import hmac

from devtunnel.relay.link import AgentLink
from devtunnel.values.terminal import quoted

__all__ = ["Pool", "mix_refusal", "rules_refusal"]


class Pool:
    """The agents holding tunnel ``name``: one, or several sharing it when ``shared``.

    Args:
        name: the tunnel name.
        token: the token the name belongs to.
        shared: the holders asked for a pool (``--pool``).
    """

    __slots__ = ("_turn", "members", "name", "shared", "token")

    def __init__(self, name: str, token: str, *, shared: bool) -> None:
        self.name = name
        self.token = token
        self.shared = shared
        self.members: list[AgentLink] = []
        """The agents' connections, oldest first."""
        self._turn = 0

    def __len__(self) -> int:
        return len(self.members)

    def add(self, tunnel: AgentLink) -> None:
        """Take ``tunnel`` in as a member."""
        self.members.append(tunnel)

    def remove(self, tunnel: AgentLink) -> bool:
        """Let ``tunnel`` go; False if it was not a member."""
        try:
            index = self.members.index(tunnel)
        except ValueError:
            return False
        del self.members[index]
        if index < self._turn:
            self._turn -= 1
        return True

    def pick(self) -> AgentLink | None:
        """The member that takes the next request: round robin over those taking new streams."""
        tunnel = self.peek()
        if tunnel is not None:
            self.took(tunnel)
        return tunnel

    def peek(self) -> AgentLink | None:
        """The member ``pick`` would return, without moving on (``took`` does).

        The next member in turn that takes new streams and has room for one more; a member
        carrying its maximum of concurrent requests is passed over while another has room.
        When every member is full, the next one taking new streams (its client gets the 503
        of a full tunnel); when each is leaving, the first one (the 503 of a tunnel going away,
        rather than the 404 of a name nobody holds).
        """
        members = self.members
        count = len(members)
        open_one: AgentLink | None = None
        for step in range(count):
            tunnel = members[(self._turn + step) % count]
            if tunnel.draining or tunnel.closed:
                continue
            if not tunnel.conn.streams_full:
                return tunnel
            if open_one is None:
                open_one = tunnel
        if open_one is not None:
            return open_one
        return members[0] if members else None

    def another(self, tried: list[AgentLink]) -> AgentLink | None:
        """The member a request refused by each of ``tried`` goes to: the next in turn that
        takes new streams and has room for one, and is not in ``tried``; None when there is none."""
        members = self.members
        count = len(members)
        for step in range(count):
            tunnel = members[(self._turn + step) % count]
            if tunnel not in tried and not (tunnel.draining or tunnel.closed or tunnel.conn.streams_full):
                return tunnel
        return None

    def took(self, tunnel: AgentLink) -> None:
        """``tunnel`` took a request: the next one goes to the member after it."""
        try:
            self._turn = (self.members.index(tunnel) + 1) % len(self.members)
        except ValueError:
            pass

    def find(self, instance: str) -> AgentLink | None:
        """The member with agent instance id ``instance``, if any (its earlier connection)."""
        for tunnel in self.members:
            held = tunnel.instance
            if held is not None and hmac.compare_digest(held.encode(), instance.encode()):
                return tunnel
        return None


def mix_refusal(pool: Pool, shared: bool) -> str | None:
    """Why an agent asking for ``pool``'s name with or without ``pool`` cannot have it while
    the holders are online, or None when it may join."""
    if pool.shared and shared:
        return None
    if pool.shared:
        count = len(pool)
        agents = "agent" if count == 1 else "agents"
        return (
            f"tunnel name {quoted(pool.name)} is shared by a pool of {count} {agents} (--pool); this agent asked for it"
            " alone: add --pool to join the pool"
        )
    if shared:
        return (
            f"tunnel name {quoted(pool.name)} is held by an agent that does not share it (no --pool); this agent asked"
            " to join a pool"
        )
    return f"tunnel name {quoted(pool.name)} is in use by another agent that is online"


def rules_refusal(pool: Pool) -> str:
    """Why an agent whose rules differ from every member's cannot join ``pool``."""
    count = len(pool)
    agents = "agent" if count == 1 else "agents"
    return (
        f"tunnel name {quoted(pool.name)} is shared by a pool of {count} {agents} whose rules differ from this agent's:"
        " start every member with the same rules (--basic-auth, --allow-ip, --rate-limit, --rules, [[tunnels.NAME.rules]])"
    )
