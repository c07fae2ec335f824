"""``--log``, ``--log-format`` and ``--log-level`` of ``http`` and ``up``, as ngrok takes them.

``devtunnel http 8080 --log stdout`` runs without the inspector (as ``--no-tui``) and writes
its log where ``--log`` says: ``stdout``, ``stderr`` or a file (appended to); ``false`` or
``none`` is no log, as ngrok's default (the inspector, then). ``--log-format logfmt`` (the
default) and ``json`` write ngrok's records (``values.ngrok_log``): ``started tunnel`` with
``url=`` once each tunnel is online, one ``join connections`` record a request, and
devtunnel's own messages as records too, so every line of the log parses. ``term`` writes
devtunnel's own lines (``Forwarding ...``, one line a request) there instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from collections.abc import Callable
from typing import TextIO

from devtunnel.errors import ConfigError
from devtunnel.values.ngrok_log import FORMATS, LEVELS, level_at_least, record
from devtunnel.values.terminal import quoted

__all__ = ["LogTarget", "NgrokFormatter", "add_log_flags", "log_target", "wants_inspector", "wants_log"]

_OFF = ("false", "none")
_LEVEL_NAMES = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn", logging.ERROR: "error",
                logging.CRITICAL: "crit"}
_LOGGING_LEVELS = {name: level for level, name in _LEVEL_NAMES.items()}


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    """An argparse type taking one of ``choices``, in any case (``JSON`` as ``json``)."""
    def check(text: str) -> str:
        if text.lower() not in choices:
            raise argparse.ArgumentTypeError(f"expected {', '.join(choices)}, not {quoted(text)}")
        return text.lower()
    return check


def add_log_flags(p: argparse.ArgumentParser) -> None:
    """ngrok's three log flags, on ``http`` and ``up``."""
    p.add_argument("--log", metavar="TARGET",
                   help="no inspector: write the log to stdout, stderr or a FILE (appended), as ngrok does; "
                        "false or none: no log (docs/config.md)")
    p.add_argument("--log-format", type=_one_of(FORMATS), default="logfmt", metavar="FORMAT",
                   help="with --log: logfmt (the default) or json, ngrok's records (a 'started tunnel' record with "
                        "the url, one a request); term: devtunnel's own lines")
    p.add_argument("--log-level", type=_one_of(LEVELS), default="info", metavar="LEVEL",
                   help=f"with --log: the least severe records written, {', '.join(LEVELS)} (default: info)")


def wants_inspector(args: argparse.Namespace) -> bool:
    """Whether ``http``, ``up`` or ``start`` opens the inspector: not with ``--no-tui``, nor with
    ``--log TARGET`` (ngrok's way: a log and no screen)."""
    return not args.no_tui and not wants_log(args)


def wants_log(args: argparse.Namespace) -> bool:
    """Whether ``--log`` names a place to write to (not ``false`` or ``none``): no inspector then."""
    target = getattr(args, "log", None)
    return target is not None and target.lower() not in _OFF


@dataclass
class LogTarget:
    """Where the log goes and in which shape."""

    out: TextIO
    fmt: str
    """``logfmt``, ``json`` (ngrok's records) or ``term`` (devtunnel's lines)."""
    level: str
    owned: bool = False
    """``out`` is a file opened here, closed by ``close``."""

    @property
    def ngrok_format(self) -> str | None:
        """``logfmt`` or ``json`` when the lines are ngrok's records, else None."""
        return None if self.fmt == "term" else self.fmt

    def wants(self, level: str) -> bool:
        """Whether a record of ``level`` is written (``--log-level``)."""
        return level_at_least(level, self.level)

    def logging_level(self) -> int:
        """``--log-level`` as the ``logging`` module's level."""
        return _LOGGING_LEVELS[self.level]

    def close(self) -> None:
        """Close the file opened for ``--log FILE`` (stdout and stderr stay open)."""
        if self.owned:
            self.out.close()


def log_target(args: argparse.Namespace) -> LogTarget | None:
    """The log ``--log`` asks for, opened; None without one (``false``, ``none`` or no flag).

    Raises:
        ConfigError: the file cannot be opened for writing.
    """
    if not wants_log(args):
        return None
    target: str = args.log
    fmt, level = getattr(args, "log_format", "logfmt"), getattr(args, "log_level", "info")
    if target.lower() == "stdout":
        return LogTarget(sys.stdout, fmt, level)
    if target.lower() == "stderr":
        return LogTarget(sys.stderr, fmt, level)
    try:
        out = open(target, "a", encoding="utf-8", errors="backslashreplace", buffering=1)
    except OSError as exc:
        raise ConfigError(f"--log {quoted(target)}: cannot write there: {exc.strerror or exc}") from exc
    return LogTarget(out, fmt, level, owned=True)


class NgrokFormatter(logging.Formatter):
    """devtunnel's own log messages as ngrok's records (``obj`` the logger), escaped by ``record``."""

    def __init__(self, fmt: str) -> None:
        super().__init__()
        self._fmt_name = fmt

    def format(self, rec: logging.LogRecord) -> str:
        fields = [("obj", rec.name)]
        if rec.exc_info:
            fields.append(("err", self.formatException(rec.exc_info)))
        level = _LEVEL_NAMES.get(rec.levelno, "error" if rec.levelno > logging.WARNING else "info")
        return record(rec.getMessage(), fields, fmt=self._fmt_name, level=level, now=rec.created)
