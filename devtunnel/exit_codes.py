"""The exit statuses of the ``devtunnel`` command: one table for the CLI, its help and the TUI's supervisor."""

from __future__ import annotations

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_USAGE", "EXIT_TUNNEL_REFUSED", "EXIT_DIFFERENT", "EXIT_DIFF_ERROR", "HELP_TABLE"]

EXIT_OK = 0
"""Done, Ctrl-C included; for ``diff``: the two exchanges are the same."""

EXIT_ERROR = 1
"""Something failed: no such exchange, an unreadable database, a replay that got no answer ..."""

EXIT_USAGE = 2
"""Bad usage: an unknown flag, a bad flag value or argument, an invalid devtunnel.toml."""

EXIT_TUNNEL_REFUSED = 3
"""The relay refused the tunnel for good (token, name): retrying cannot help."""

EXIT_DIFFERENT = 1
"""``diff`` only, as diff(1): the two exchanges differ."""

EXIT_DIFF_ERROR = 2
"""``diff`` only, as diff(1): any trouble (bad usage or an error), since 1 means "different"."""

HELP_TABLE = f"""\
exit status: {EXIT_OK} done (Ctrl-C included), {EXIT_ERROR} error, {EXIT_USAGE} bad usage or config file,
             {EXIT_TUNNEL_REFUSED} the relay refused the tunnel (token or name): retrying cannot help;
             diff: {EXIT_OK} same, {EXIT_DIFFERENT} different, {EXIT_DIFF_ERROR} trouble
"""
"""The exit statuses as the main help prints them."""
