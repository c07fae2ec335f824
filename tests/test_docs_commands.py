"""The docs' commands stay true: every flag a page gives a ``devtunnel`` command is one its --help lists."""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEVTUNNEL = str(Path(sys.executable).parent / "devtunnel")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COMMANDS = {"relay", "http", "requests", "show", "export", "replay", "diff", "agent", "up", "init", "logs", "inspect",
            "send", "help", "config path", "config show", "config set", "config add-token", "config add-authtoken",
            "config import-ngrok"}
_USE = re.compile(r"devtunnel ((?:config )?[a-z][a-z-]*)([^`\n|#]*)")
_FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def documented() -> list[tuple[str, str, str]]:
    """(page, command, flag) for each flag written after ``devtunnel COMMAND`` in a page."""
    found = set()
    for page in PAGES:
        for command, rest in _USE.findall(page.read_text()):
            if command in COMMANDS:
                found.update((page.name, command, flag) for flag in _FLAG.findall(rest))
    return sorted(found)


@functools.cache
def help_of(command: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEVTUNNEL_")}
    done = subprocess.run([DEVTUNNEL, *command.split(), "--help"], capture_output=True, text=True, timeout=60,
                          env=env, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_pages_give_flags_to_commands() -> None:
    assert len(documented()) > 50  # the pattern still finds what the pages write


@pytest.mark.parametrize(("page", "command", "flag"), documented())
def test_a_flag_the_docs_give_a_command_is_in_its_help(page: str, command: str, flag: str) -> None:
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_of(command)), f"{page}: devtunnel {command} {flag}"
