"""The build backend: setuptools', plus mypy when DEVTUNNEL_USE_MYPYC=1 asks for compiled modules.

mypyc is part of mypy; its version is pinned because what it compiles, and how compiled code
checks types at run time, changes between releases (the tests run against what it builds).
"""

from __future__ import annotations

import os

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # noqa: F403  (the rest of the PEP 517 hooks, as they are)

MYPYC = "mypy==2.4.1"


def _compiling() -> bool:
    return os.environ.get("DEVTUNNEL_USE_MYPYC") == "1"


def get_requires_for_build_wheel(config_settings=None):  # type: ignore[no-untyped-def]
    if _compiling():
        # setuptools' own hook runs setup.py, which needs mypyc before it is installed; it would
        # return nothing more (setup.py has no setup_requires).
        return [MYPYC]
    return _setuptools.get_requires_for_build_wheel(config_settings)


def get_requires_for_build_editable(config_settings=None):  # type: ignore[no-untyped-def]
    if _compiling():
        raise RuntimeError(
            "DEVTUNNEL_USE_MYPYC=1 works with `pip install .`, not `pip install -e .`: the compiled "
            "modules would hide every later edit of their sources"
        )
    return _setuptools.get_requires_for_build_editable(config_settings)
