"""The agent: holds tunnels to a relay, forwards their streams to local services, records them.

Read it from the top down: a module imports only modules listed after it.

- ``service.py``: ``AgentService``, the tunnels of one agent, the embedded relay, subscribers.
- ``tunnel.py``: ``AgentTunnel``, one tunnel: connects, reconnects (``Backoff``), keeps its state.
- ``info.py``: ``TunnelState`` and ``TunnelInfo``, what a tunnel tells its subscribers.
- ``session.py``: one WebSocket connection to the relay, from HELLO to close; it opens the streams.
- ``relay_signals.py``: what the relay decided (the rule that answered a request, a GOAWAY).
- ``config.py``: ``TunnelConfig``, what a tunnel forwards and where it connects (relay URLs).
- ``quick.py``: a request without a body answered from the local connection's callbacks;
  ``local_ws.py``: WebSockets to the local service.
- ``forward.py``: ``Forwarder``, HTTP requests to the local service, each in its stream's task.
- ``local_response.py``: reading the local service's response; ``local_pool.py``: kept-alive
  local connections; ``stream.py``: ``AgentStream``, one stream as a handler sees it;
  ``socket.py``: the WebSocket to the relay; ``recording.py``: an exchange as it is captured.
- ``app_runner.py`` and ``via_runner.py``: the app and the public-URL provider (``--via``)
  devtunnel runs beside a tunnel.
- ``children.py``: their supervised processes; ``port_memory.py``: ports remembered per tunnel
  name; ``hold.py``: requests waiting for the app.
"""
