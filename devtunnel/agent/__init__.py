"""The agent: holds tunnels to a relay, forwards their streams to local services, records them."""
