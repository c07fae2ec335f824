"""Copy text from the inspector: to the terminal's clipboard always, to the system's when possible.

The terminal clipboard (OSC 52, via ``App.copy_to_clipboard``) works over SSH and inside tmux,
so it is always used. The system clipboard is tried as well where it can work:

* macOS and Windows: pyperclip.
* Linux and other Unixes: only with a display (``WAYLAND_DISPLAY`` or ``DISPLAY``), through
  ``wl-copy``, ``xclip`` or ``xsel`` (pyperclip's choices, in its order). They are started here
  rather than by pyperclip because pyperclip lets them inherit stderr, and the inspector draws
  on stderr: a message from xclip would scribble over the screen. Here their output goes to
  ``/dev/null`` and they run in their own session, without the terminal.

Nothing here raises: a headless box simply gets the OSC 52 copy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

from textual.app import App

__all__ = ["copy_text", "copy_to_system_clipboard"]

_TOOL_TIMEOUT = 3.0
"""Seconds to wait for a clipboard tool; xclip and wl-copy fork and return at once."""


def _unix_commands(environ: Mapping[str, str]) -> list[list[str]]:
    commands: list[list[str]] = []
    if environ.get("WAYLAND_DISPLAY"):
        commands.append(["wl-copy"])
    if environ.get("DISPLAY"):
        commands.append(["xclip", "-selection", "clipboard"])
        commands.append(["xsel", "--clipboard", "--input"])
    return commands


def _copy_with_tool(text: str) -> bool:
    for command in _unix_commands(os.environ):
        if shutil.which(command[0]) is None:
            continue
        try:
            done = subprocess.run(
                command,
                input=text.encode("utf-8"),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                timeout=_TOOL_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            continue
        if done.returncode == 0:
            return True
    return False


def _copy_with_pyperclip(text: str) -> bool:
    try:
        import pyperclip  # type: ignore[import-untyped]
    except ImportError:
        return False
    try:
        pyperclip.copy(text)
    except (pyperclip.PyperclipException, OSError):
        return False
    return True


def copy_to_system_clipboard(text: str) -> bool:
    """Put ``text`` on the desktop clipboard if this machine has one; True when it worked."""
    if sys.platform in ("darwin", "win32"):
        return _copy_with_pyperclip(text)
    return _copy_with_tool(text)


def copy_text(app: App[object], text: str) -> str:
    """Copy ``text`` to the terminal clipboard (OSC 52) and, where possible, the system's.

    Returns:
        A sentence saying where the text went, for a notification.
    """
    app.copy_to_clipboard(text)
    size = len(text.encode("utf-8"))
    where = "the clipboard (terminal OSC 52)"
    if copy_to_system_clipboard(text):
        where += " and the system clipboard"
    return f"Copied {size} bytes to {where}"
