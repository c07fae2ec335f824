"""The relay: the public side of tunnels (uvicorn), routing NAME.DOMAIN to the agent holding NAME.

The modules, by job:

- ``server``: ``Relay``, the ASGI application; routes each request by Host (or pinned port) to
  a tunnel, to the relay's own ``pages``, or to the agents' door. ``settings``: ``RelaySettings``.
  ``listening``: uvicorn set up and driven inside the caller's event loop.
- Agents: ``agents`` (``AgentGate``: HELLO, admission, an agent's messages until it leaves),
  ``registry`` (``AgentRegistry``: who holds which name), ``pool`` (the agents sharing one
  name), ``link`` (``AgentLink``, the relay's side of one agent's WebSocket, with its
  ``RelayStream`` objects and the ``BufferBudget``).
- Public traffic: ``http_proxy`` (``HttpForwarder``), ``http_direct`` (``DirectExchange``, the
  path without a task), ``http_responses`` (what a client is sent), ``ws_proxy``
  (``WebSocketForwarder``), ``slots`` (``ClientSlots``: one client's share of a tunnel),
  ``headers`` (hop-by-hop and forwarding headers), ``rules`` (``RuleBook``), ``asgi`` (the
  pieces they share).
- uvicorn's protocols with the relay's limits: ``http`` (``HeadLimitedHttpProtocol``),
  ``ws_guard`` (``GuardedWebSocketProtocol``); ``pending`` (``PendingConnections``: the
  connections waiting to send a request, or an agent's HELLO, per address and in all);
  ``tls_door`` (``TlsDoor``: a TLS connection until its handshake is done); ``log``: peers'
  mistakes, logged throttled.
"""
