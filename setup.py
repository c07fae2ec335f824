"""Build hook: with DEVTUNNEL_USE_MYPYC=1, compile the per-request modules with mypyc.

Everything else about the package is in pyproject.toml. The modules are listed in
devtunnel/native.py; the build backend (_build/backend.py) adds the pinned mypy to the build's
requirements when the variable is set, and refuses it for editable installs.
"""

import ast
import os
from pathlib import Path

from setuptools import setup


def _native_modules() -> list[str]:
    # Read, not imported: the package is not importable while it is being built.
    tree = ast.parse(Path(__file__).with_name("devtunnel").joinpath("native.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "NATIVE_MODULES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise RuntimeError("NATIVE_MODULES not found in devtunnel/native.py")


ext_modules = []
if os.environ.get("DEVTUNNEL_USE_MYPYC") == "1":
    from mypyc.build import mypycify

    paths = [name.replace(".", "/") + ".py" for name in _native_modules()]
    ext_modules = mypycify(["--config-file", "_build/mypyc.ini", *paths], opt_level="3", debug_level="1")

setup(ext_modules=ext_modules)
