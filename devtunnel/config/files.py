"""Where the settings files are: the user file, the project file and ``$DEVTUNNEL_CONFIG``.

Every path rule of the settings lives here, so a change to where files are looked for is one
change in one module. The capture database's default path is the store's
(``devtunnel.capture.store.default_db_path``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

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
        """Whether there is something at ``path``."""
        return self.path.exists()


def user_file(environ: Mapping[str, str] | None = None) -> Path:
    """``$XDG_CONFIG_HOME/devtunnel/devtunnel.toml`` (``~/.config/devtunnel/`` when unset)."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "devtunnel" / FILE_NAME


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
