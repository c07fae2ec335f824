"""Which agents hold which tunnel names at the relay (``AgentRegistry``): a new agent's name is
picked or checked, claimed (against the token that holds it, the holders' liveness, and what the
token holds already), joined and left. Each name is held by a ``Pool``: one agent, or several
sharing it.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable

from devtunnel.errors import ConfigError
from devtunnel.protocol.connection import ErrorCode
from devtunnel.relay.link import AgentLink
from devtunnel.relay.pool import Pool, mix_refusal, rules_refusal
from devtunnel.values.names import random_name, validate_name
from devtunnel.values.terminal import quoted


class AgentRegistry:
    """The tunnel names online, each with the agents holding it.

    Args:
        name_check_timeout: seconds a holder has to answer a ping when another agent with its
            token asks for the name (``RelaySettings.name_check_timeout``).
        names_per_token: names one token may hold at once; 0 for no limit
            (``RelaySettings.tunnels_per_token``).
        connections_per_token: agent connections one token may hold at once, over all its
            names and pools; 0 for no limit (``RelaySettings.connections_per_token``).
    """

    def __init__(self, name_check_timeout: float, names_per_token: int = 0, connections_per_token: int = 0) -> None:
        self.name_check_timeout = name_check_timeout
        self.names_per_token = names_per_token
        self.connections_per_token = connections_per_token
        self.pools: dict[str, Pool] = {}
        """The agents holding each tunnel name online (one, or a pool sharing it), oldest name first."""

    def pick_name(self, wanted: str | None) -> tuple[str, tuple[ErrorCode, str] | None]:
        """The tunnel name to give, or why the wanted one is not a valid name."""
        if not wanted:
            name = random_name()
            while name in self.pools:
                name = random_name()
            return name, None
        try:
            name = validate_name(wanted)
        except ConfigError as exc:
            # NAME_TAKEN is the code for "this name is refused; retrying will not help".
            return wanted, (ErrorCode.NAME_TAKEN, str(exc))
        return name, None

    async def claim(
        self,
        name: str,
        token: str,
        instance: str | None,
        shared: bool,
        fits: Callable[[list[AgentLink]], bool] | None = None,
    ) -> tuple[list[AgentLink], tuple[ErrorCode, str] | None]:
        """Whether an agent may have ``name`` (``shared``: in a pool): (the connections it
        displaces, refusal or None). ``fits``: whether its rules fit a pool of these members
        (each member judges the requests it takes by its own rules: one without the pool's
        basic auth would let every other request past it).

        A name belongs to the token that holds it. Under the same token, an agent with a
        holder's instance id is that holder coming back (its old connection is the stale one)
        and takes its place at once; an agent asking for a pool joins a pool; any other agent
        (one alone against a pool, a pool against one alone, one alone against another) gets
        the name only if every holder fails a liveness check now: a healthy agent is never
        displaced. A name the token does not hold yet is refused while the token holds
        ``names_per_token`` others: a name it holds already (a pool joined, a holder coming
        back or displaced) is never counted twice. Any agent is refused while the token holds
        ``connections_per_token`` connections besides those it would displace. Returns with no
        await after its last look, so the caller can take the name before anyone else.
        """
        while True:
            pool = self.pools.get(name)
            if pool is None:
                return [], self._limit_refusal(token) or self._connections_refusal(token, [])
            if not hmac.compare_digest(pool.token.encode(), token.encode()):
                return [], (ErrorCode.NAME_TAKEN, f"tunnel name {quoted(name)} is in use by an agent with another token")
            stale = pool.find(instance) if instance is not None else None
            if stale is not None and (len(pool) == 1 or (pool.shared and shared)):
                return [stale], self._connections_refusal(token, [stale])
            refusal = mix_refusal(pool, shared)
            if refusal is None and fits is not None and not fits(pool.members):
                refusal = rules_refusal(pool)
            if refusal is None:
                return [], self._connections_refusal(token, [])
            holders = list(pool.members)
            alive = await asyncio.gather(*(holder.answers(self.name_check_timeout) for holder in holders))
            if any(alive):
                return [], (ErrorCode.NAME_IN_USE, refusal)
            if self.pools.get(name) is pool and pool.members == holders:
                return holders, self._connections_refusal(token, holders)
            # The name changed hands during the check: look again.

    def _limit_refusal(self, token: str) -> tuple[ErrorCode, str] | None:
        """Why ``token`` may not take one more name (it holds ``names_per_token``), or None."""
        limit = self.names_per_token
        if not limit:
            return None
        # A scan, not a count kept up to date: one HELLO's worth of work, and nothing to get out of step.
        held = sum(1 for pool in self.pools.values() if pool.token == token)
        if held < limit:
            return None
        tunnels = "tunnel" if limit == 1 else "tunnels"
        # NAME_TAKEN: final, as for a name of another token (an agent of any version stops and says why).
        return ErrorCode.NAME_TAKEN, (
            f"this token holds {held} {tunnels} on the relay already, the most it allows one token"
            " (devtunnel relay --tunnels-per-token): stop one of them first"
        )

    def _connections_refusal(self, token: str, displaced: list[AgentLink]) -> tuple[ErrorCode, str] | None:
        """Why ``token`` may not open one more agent connection, in place of ``displaced`` (its
        own, let go when it joins): it holds ``connections_per_token`` others. Or None."""
        limit = self.connections_per_token
        if not limit:
            return None
        # A scan, as for names: the members of this token's pools are its connections online.
        held = sum(len(pool) for pool in self.pools.values() if pool.token == token) - len(displaced)
        if held < limit:
            return None
        connections = "agent connection" if held == 1 else "agent connections"
        return ErrorCode.TOO_MANY_CONNECTIONS, (
            f"this token holds {held} {connections} on the relay already, the most it allows one token"
            " (devtunnel relay --connections-per-token): stop one of them first"
        )

    def join(self, name: str, token: str, shared: bool, tunnel: AgentLink, displaced: list[AgentLink]) -> Pool:
        """Give ``tunnel`` its place under ``name`` (after ``claim``), in place of ``displaced``."""
        pool = self.pools.get(name)
        if pool is not None:
            for old in displaced:
                pool.remove(old)
        if pool is None or not pool.members:
            pool = self.pools[name] = Pool(name, token, shared=shared)
        pool.add(tunnel)
        self._announce(pool, tunnel)
        return pool

    def leave(self, name: str, tunnel: AgentLink) -> int:
        """Take ``tunnel`` out of its pool (if still in it) and free the name after the last one;
        returns how many agents it leaves holding the name (0 for one already displaced)."""
        pool = self.pools.get(name)
        if pool is None or not pool.remove(tunnel):
            return 0
        if not pool.members:
            del self.pools[name]
            return 0
        self._announce(pool)
        return len(pool)

    @staticmethod
    def _announce(pool: Pool, joined: AgentLink | None = None) -> None:
        """Tell each member of a pool how many agents share the name now (``joined`` learns it
        from its WELCOME)."""
        if not pool.shared:
            return
        for member in pool.members:
            if member is not joined and not member.closed:
                member.conn.send_pool(len(pool))
                member.flush()
