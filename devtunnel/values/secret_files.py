"""Files that hold secrets in clear while other users of the machine can read them.

A project's devtunnel.toml, a ``--rules`` file, a ``users_file`` or an ngrok.yml is often mode
0644: made with the usual umask, or cloned with the project. What it holds is then every local
user's. ``shared_mode`` tells whether users other than the owner can read a file;
``note_shared_secrets`` says so on stderr, once a file, naming the file, the kinds of secret it
holds (never a value) and the fix, ``chmod 600 FILE``, and the command goes on: such files are
too common to refuse. (The relay token and webhook secrets are refused in such a file instead,
``config.source.refuse_shared_secret``; a file that holds only a token, ``--token-file`` and the
relay's ``--tokens-file``, gets its own note, ``commands.output.note_readable_secret``.)
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterable
from pathlib import Path

from devtunnel.values.terminal import escape

__all__ = ["CLEAR_PASSWORDS", "HASH_INSTEAD", "HEADER_VALUES", "note_shared_secrets", "shared_mode"]

CLEAR_PASSWORDS = "basic-auth passwords in clear"
"""A basic-auth user's password that is neither ``sha256:HEX`` nor a bcrypt hash."""
HEADER_VALUES = "values of request headers to add"
"""What a rule sets on each request forwarded: most often the service's credential
(``Authorization: Bearer ...``), and nothing tells a token from a harmless value
(``rules.model.hide_secrets``). A response header is no secret: every client gets it."""
HASH_INSTEAD = "write the passwords as sha256:HEX (docs/policy.md)"
"""The other fix where passwords may be hashes (devtunnel.toml, rules files, users files)."""

_noted: set[str] = set()
"""The files already said in this process (their real paths): one note a file, however often it is read."""


def shared_mode(path: Path) -> int | None:
    """The permission bits of ``path`` when users other than its owner can read it (its group
    or everyone), else None (a file that cannot be looked at, or Windows, says nothing)."""
    if os.name == "nt":
        return None
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return mode & 0o777 if mode & 0o044 else None


def note_shared_secrets(path: str | Path, held: Iterable[str], instead: str = "") -> None:
    """Say on stderr, not refuse, that the file at ``path`` holds secrets of the kinds ``held``
    (``CLEAR_PASSWORDS``, ``HEADER_VALUES``) while other users can read it, and the fix:
    ``chmod 600 FILE``, or ``instead``. Nothing when it holds none or only its owner can read
    it; once a file per process (some commands read the settings more than once).
    """
    kinds = list(dict.fromkeys(held))
    if not kinds:
        return
    file = Path(path)
    mode = shared_mode(file)
    key = os.path.realpath(file)
    if mode is None or key in _noted:
        return
    _noted.add(key)
    fix = f"run chmod 600 {shlex.quote(str(file))}" + (f", or {instead}" if instead else "")
    print(escape(f"devtunnel: note: {file} holds {' and '.join(kinds)}, and other users can read it (mode {mode:03o}):"
                 f" {fix}"), file=sys.stderr)
