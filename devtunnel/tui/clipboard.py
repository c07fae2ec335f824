"""Copy text from the inspector: to the terminal's clipboard always, to the system's when possible.

The terminal clipboard (OSC 52, via ``App.copy_to_clipboard``) works over SSH and inside tmux,
so it is always used. The system clipboard is tried as well where it can work:

* macOS and Windows: pyperclip.
* Linux and other Unixes: only with a display (``WAYLAND_DISPLAY`` or ``DISPLAY``), through
  ``wl-copy``, ``xclip`` or ``xsel`` (pyperclip's choices, in its order). They are started here
  rather than by pyperclip because pyperclip lets them inherit stderr, and the inspector draws
  on stderr: a message from xclip would scribble over the screen. Here their output goes to
  ``/dev/null`` and they run in their own session, without the terminal.

OSC 52 is a request to the terminal, with no answer: whether the text arrived is unknown, so the
sentence shown says what was sent, not "copied". Inside tmux (``TMUX`` set) a program's request
is taken (and passed to the outer terminal) only when tmux's ``set-clipboard`` option is ``on``;
``off`` and ``external``, tmux's default, drop it (``external`` only sends what is copied in tmux
itself: tmux's ``input_osc_52`` returns unless the option is ``on``), and the sentence says so
and how to turn it on.

Nothing here raises: a headless box simply gets the OSC 52 request.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from textual.app import App

__all__ = ["Copied", "copy", "copy_text", "copy_to_system_clipboard", "tmux_set_clipboard"]

_TOOL_TIMEOUT = 3.0
"""Seconds to wait for a clipboard tool; xclip and wl-copy fork and return at once."""

_TMUX_TIMEOUT = 1.0
"""Seconds to wait for ``tmux show``: it answers at once, or its server is not reachable."""

TMUX_ENABLE = "tmux set -g set-clipboard on"
"""The command that lets the terminal clipboard through tmux."""


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


def tmux_set_clipboard(environ: Mapping[str, str] | None = None) -> str | None:
    """The value of tmux's ``set-clipboard`` option (``on``, ``external``, ``off``) inside tmux.

    None outside tmux, or when tmux cannot say (not on PATH, no server, no answer in time).
    """
    environ = os.environ if environ is None else environ
    if not environ.get("TMUX") or shutil.which("tmux") is None:
        return None
    try:
        done = subprocess.run(
            ["tmux", "show", "-gv", "set-clipboard"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=_TMUX_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    value = done.stdout.decode("utf-8", "replace").strip()
    return value if done.returncode == 0 and value in ("on", "off", "external") else None


def _dropped_by(setting: str | None) -> str | None:
    """``setting`` if tmux drops a program's OSC 52 under it: every value but ``on``."""
    return setting if setting in ("off", "external") else None


@dataclass(frozen=True)
class Copied:
    """What became of a copy.

    Attributes:
        size: bytes of UTF-8 text.
        system: the system clipboard took the text (known to have worked).
        tmux_blocks: inside tmux, the ``set-clipboard`` value (``off`` or ``external``) under
            which tmux dropped the terminal request; None when it was not dropped.
    """

    size: int
    system: bool
    tmux_blocks: str | None

    @property
    def sentence(self) -> str:
        """Where the text went, honestly, for a notification."""
        sent = f"{self.size} bytes to the terminal's clipboard (OSC 52)"
        if self.system:
            head = f"Copied {self.size} bytes to the system clipboard; also sent them to the terminal's clipboard (OSC 52)"
        else:
            head = f"Sent {sent}"
        if self.tmux_blocks:
            head += f". tmux drops it: its set-clipboard option is {self.tmux_blocks}. To enable: {TMUX_ENABLE}"
        return head


def copy(app: App[object], text: str) -> Copied:
    """Send ``text`` to the terminal clipboard (OSC 52) and, where possible, copy it to the system's."""
    app.copy_to_clipboard(text)
    return Copied(
        size=len(text.encode("utf-8")),
        system=copy_to_system_clipboard(text),
        tmux_blocks=_dropped_by(tmux_set_clipboard()),
    )


def copy_text(app: App[object], text: str) -> str:
    """Copy ``text`` as :func:`copy` does.

    Returns:
        A sentence saying where the text went, for a notification.
    """
    return copy(app, text).sentence
