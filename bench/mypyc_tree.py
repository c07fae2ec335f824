"""Compile a source tree's per-request modules with mypyc, in place, for A/B measurements.

Usage:
    .venv/bin/python bench/mypyc_tree.py TREE

TREE is a copy of the sources (``git archive REV | tar -x -C TREE``). The script builds a wheel
of it exactly as ``DEVTUNNEL_USE_MYPYC=1 pip install .`` would (pip, the pinned mypy in an
isolated build environment, setup.py) and puts the wheel's compiled extensions beside their
sources in TREE, where ``PYTHONPATH=TREE`` imports them first. Then, for example:

    git archive HEAD | tar -x -C /tmp/pure && git archive HEAD | tar -x -C /tmp/compiled
    .venv/bin/python bench/mypyc_tree.py /tmp/compiled
    .venv/bin/python bench/relay_callgrind.py /tmp/pure /tmp/compiled --requests 2000
    .venv/bin/python bench/agent_callgrind.py /tmp/pure /tmp/compiled --requests 2000 --runs 2
    .venv/bin/python bench/recorder_cpu.py /tmp/pure /tmp/compiled --callgrind
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path


def compile_tree(tree: Path) -> list[str]:
    """Build ``tree``'s wheel with mypyc and unpack its extensions into ``tree``; their names."""
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ, DEVTUNNEL_USE_MYPYC="1")
        subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", out, str(tree)],
                       check=True, env=env)
        [wheel] = Path(out).glob("devtunnel-*.whl")
        with zipfile.ZipFile(wheel) as archive:
            names = [n for n in archive.namelist() if n.endswith(".so") or n.endswith(".pyd")]
            for name in names:
                archive.extract(name, tree)
    return names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tree", type=Path, help="a copy of the sources, compiled in place")
    args = ap.parse_args()
    names = compile_tree(args.tree.resolve())
    print(f"{len(names)} extensions in {args.tree}:", *names, sep="\n  ")


if __name__ == "__main__":
    main()
