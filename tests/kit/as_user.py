"""``devtunnel`` run in a forked child as another user (root drops to it), for the paths other
users and users without a home meet: what the command wrote on stderr, and its exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path


def main_as_user(uid: int, argv: Sequence[str], *, cwd: Path | str = "/",
                 env: Mapping[str, str | None] = {}) -> tuple[str, int]:
    """``devtunnel.cli.main(argv)`` in a child with user and group ``uid``, in ``cwd``, with
    ``env`` applied to its environment (None removes a variable). Needs root."""
    from devtunnel.cli import main

    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop rights, run the command, report, leave without pytest's teardown
        code = 99
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            for name, value in env.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            os.chdir(cwd)
            sys.stderr = os.fdopen(write_end, "w")  # the child's own: pytest's capture stays behind
            code = main(list(argv))
            sys.stderr.flush()
        except BaseException as exc:  # noqa: BLE001
            os.write(write_end, f"raised {type(exc).__name__}: {exc}\n".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        said = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    return said, os.waitstatus_to_exitcode(status)
