"""The agent API (starlette on 127.0.0.1:4040): ngrok-shaped tunnels and endpoints, captures, replay, events."""
