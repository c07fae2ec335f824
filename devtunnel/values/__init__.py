"""Small pure rules about values from the network, shared by the relay, the agent and the core."""
