"""Small pure value rules shared by several parts of devtunnel (no IO, no event loop, no screen)."""
