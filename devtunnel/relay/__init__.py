"""The relay: the public side of tunnels (uvicorn), routing NAME.DOMAIN to the agent holding NAME."""
