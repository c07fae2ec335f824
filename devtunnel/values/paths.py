"""Where devtunnel keeps its files, by the XDG Base Directory rules.

::

    state_dir()     $XDG_STATE_HOME/devtunnel/    (~/.local/state/devtunnel/ by default)
      db_path()         captures.db       the capture store
      ports_file()      ports.json        ports remembered between runs
      agent_log()       agent.log         the inspector's agent child's output
      filter_history()  filter_history    the inspector's recent filters
    config_dir()    $XDG_CONFIG_HOME/devtunnel/   (~/.config/devtunnel/ by default)
                        devtunnel.toml    the user's settings (``config.user_file``)

A variable that is unset, empty or relative is ignored and the default under the home
directory is used: the spec requires these paths to be absolute and says a relative one is
invalid. With no home either (``HOME`` unset and a user id with no entry in /etc/passwd),
the home is ``/nonexistent``, as for the user ``nobody``: nothing is found there, and what would
be written fails with the folder's name, where ``~`` (what ``expanduser`` leaves) made a
folder named ``~`` in the current one. Each function reads the mapping it is given (``os.environ`` when None) and the home
directory; nothing is created, but by :func:`make_private_folder`.

The folders devtunnel makes are the user's alone (0700, as the XDG spec asks): the state folder
holds every captured request and response (the Authorization headers and cookies of the
tunnel's clients, webhook bodies), the agent's log of them and the rules files with passwords.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "APP_DIR",
    "NO_HOME",
    "state_home",
    "config_home",
    "state_dir",
    "config_dir",
    "db_path",
    "ports_file",
    "agent_log",
    "filter_history",
    "make_private_folder",
    "PRIVATE_FILE_MODE",
]

PRIVATE_FILE_MODE = 0o600
"""The mode of a file devtunnel creates to hold captures or what is said of them (the capture
database, the agent's log): readable by the user alone, whatever the umask."""

APP_DIR = "devtunnel"
"""devtunnel's folder inside each base directory."""

NO_HOME = "/nonexistent"
"""The home directory when there is none (see above)."""


def _base(variable: str, default: tuple[str, ...], environ: Mapping[str, str] | None) -> Path:
    env = os.environ if environ is None else environ
    value = env.get(variable, "")
    if value and os.path.isabs(value):
        return Path(value)
    home = os.path.expanduser("~")
    return Path(home if os.path.isabs(home) else NO_HOME, *default)


def state_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_STATE_HOME``, or ``~/.local/state`` when it is unset, empty or relative."""
    return _base("XDG_STATE_HOME", (".local", "state"), environ)


def config_home(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME``, or ``~/.config`` when it is unset, empty or relative."""
    return _base("XDG_CONFIG_HOME", (".config",), environ)


def state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """devtunnel's state folder: captures, remembered ports, logs, history."""
    return state_home(environ) / APP_DIR


def config_dir(environ: Mapping[str, str] | None = None) -> Path:
    """devtunnel's config folder: the user's ``devtunnel.toml``."""
    return config_home(environ) / APP_DIR


def db_path(environ: Mapping[str, str] | None = None) -> Path:
    """The capture store's default file."""
    return state_dir(environ) / "captures.db"


def ports_file(environ: Mapping[str, str] | None = None) -> Path:
    """The ports remembered between runs (``agent.port_memory``)."""
    return state_dir(environ) / "ports.json"


def agent_log(environ: Mapping[str, str] | None = None) -> Path:
    """Where the inspector writes the output of the agent it runs."""
    return state_dir(environ) / "agent.log"


def filter_history(environ: Mapping[str, str] | None = None) -> Path:
    """The inspector's recent filter expressions."""
    return state_dir(environ) / "filter_history"


def make_private_folder(folder: Path) -> None:
    """Make ``folder`` and any missing folder above it, each readable by the user alone (0700).

    ``Path.mkdir(parents=True)`` gives the folders above the last the umask's mode (0755 with
    the usual 022): the captures in ``~/.local/state/devtunnel`` could be listed and read by
    every user of the machine. A folder that exists is left as it is (the user's choice).

    Raises:
        OSError: as ``Path.mkdir`` (a file in the way, no permission ...).
    """
    missing: list[Path] = []
    for place in (folder, *folder.parents):
        if place.exists():  # a file in the way makes the next mkdir say so (Not a directory)
            break
        missing.append(place)
    if not missing and not folder.is_dir():
        raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(folder))  # as Path.mkdir says it
    for place in reversed(missing):
        try:
            place.mkdir(mode=0o700)
        except FileExistsError:
            if not place.is_dir():
                raise
