"""The package as users get it: an sdist built from the tracked files, a wheel built from that sdist.

``python -m build`` makes the wheel from the sdist, not from the source tree, and ``pip install``
of an sdist does the same: each file the build or the program needs at run time (the build
backend, the inspector's stylesheet, the webhook samples) must travel in both.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# Each hook runs in a fresh interpreter in the folder it builds, as a PEP 517 frontend runs it,
# with pyproject.toml's backend-path on sys.path and no network (no isolated build environment).
HOOK = """
import sys
sys.path.insert(0, "_build")
import backend
print(getattr(backend, sys.argv[1])(sys.argv[2]))
"""


def _hook(folder: Path, hook: str, outdir: Path) -> Path:
    outdir.mkdir(exist_ok=True)
    done = subprocess.run([sys.executable, "-c", HOOK, hook, str(outdir)], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return outdir / done.stdout.strip().splitlines()[-1]


def _tracked_copy(into: Path) -> Path:
    """The files git tracks (what a clone has), copied into ``into``; a skip outside a checkout's top
    (CI's second pass runs the tests in a copy of the tree inside it)."""
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    if top.returncode != 0 or Path(top.stdout.strip()).resolve() != ROOT:
        pytest.skip("not the top of a git checkout: which files a clone has is not known")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for name in filter(None, names):
        target = into / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((ROOT / name.decode()).read_bytes())
    return into


def _setuptools_builds_this() -> bool:
    """pyproject.toml's build-system asks for setuptools>=77 (``project.license`` as an SPDX expression)."""
    import setuptools

    return int(setuptools.__version__.split(".")[0]) >= 77


@pytest.mark.skipif(not _setuptools_builds_this(), reason="needs setuptools>=77, as the build does (the test extras)")
def test_a_wheel_built_from_the_sdist_carries_the_files_the_program_reads(tmp_path: Path) -> None:
    source = _tracked_copy(tmp_path / "clone")
    sdist = _hook(source, "build_sdist", tmp_path / "dist")
    with tarfile.open(sdist) as tar:
        tar.extractall(tmp_path / "unpacked", filter="data")
    (unpacked,) = (tmp_path / "unpacked").iterdir()
    assert (unpacked / "_build" / "backend.py").is_file()
    wheel = _hook(unpacked, "build_wheel", tmp_path / "wheels")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "devtunnel/tui/app.tcss" in names
    fixtures = {n for n in names if n.startswith("devtunnel/webhooks/fixtures/")}
    tracked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "devtunnel/webhooks/fixtures").glob("*.json")}
    assert fixtures == tracked
    assert "devtunnel/cli.py" in names


def test_no_docstring_holds_a_surrogate_which_python_3_13_cannot_compile() -> None:
    """Python 3.13 dedents docstrings as it compiles them, through UTF-8: a lone surrogate in one
    (``"\\ud800"`` written without its backslash doubled) made ``devtunnel/api/plumbing.py`` fail
    to import there, and with it the agent API: the inspector restarted its agent for good."""
    for path in sorted((ROOT / "devtunnel").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node, clean=False) or ""
                bad = [ch for ch in doc if 0xD800 <= ord(ch) <= 0xDFFF]
                assert not bad, f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 1)}: a surrogate in a docstring"
