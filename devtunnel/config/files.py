"""Where the settings files are: the user file, the project file and ``$DEVTUNNEL_CONFIG``.

Which files the settings read lives here; the folders themselves (XDG rules) are
``values.paths``, like the capture database's default path (``paths.db_path``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from devtunnel.values import paths

FILE_NAME = "devtunnel.toml"
ENV_CONFIG = "DEVTUNNEL_CONFIG"


@dataclass(frozen=True, slots=True)
class ConfigFile:
    """One file in the order files are read."""

    path: Path
    """Where it is."""
    role: str
    """``user``, ``project`` or ``DEVTUNNEL_CONFIG``."""

    @property
    def exists(self) -> bool:
        """Whether there is something at ``path``; True when that cannot be told (a folder this user
        cannot search, as ``sudo -u`` keeping HOME gives): reading it then says why in one line."""
        try:
            self.path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError:
            return True
        return True


def user_file(environ: Mapping[str, str] | None = None) -> Path:
    """``devtunnel.toml`` in ``values.paths.config_dir()`` (``$XDG_CONFIG_HOME/devtunnel/``, else ``~/.config/devtunnel/``)."""
    return paths.config_dir(environ) / FILE_NAME


def project_file(cwd: Path | None = None) -> Path:
    """``./devtunnel.toml``."""
    return (cwd or Path.cwd()) / FILE_NAME


def config_files(environ: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[ConfigFile]:
    """The files settings are read from, lowest precedence first."""
    env = os.environ if environ is None else environ
    files = [ConfigFile(user_file(env), "user"), ConfigFile(project_file(cwd), "project")]
    if env.get(ENV_CONFIG):
        files.append(ConfigFile(Path(env[ENV_CONFIG]).expanduser(), ENV_CONFIG))
    return files
