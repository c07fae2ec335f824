"""The modules mypyc may compile (devtunnel/native.py) and the build hooks that compile them."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from devtunnel import native

ROOT = Path(__file__).resolve().parents[1]


def _backend(monkeypatch: pytest.MonkeyPatch, compiling: bool):  # type: ignore[no-untyped-def]
    if compiling:
        monkeypatch.setenv("DEVTUNNEL_USE_MYPYC", "1")
    else:
        monkeypatch.delenv("DEVTUNNEL_USE_MYPYC", raising=False)
    monkeypatch.syspath_prepend(str(ROOT / "_build"))
    return importlib.import_module("backend")


def test_every_listed_module_is_a_source_file_setup_py_compiles() -> None:
    for name in native.NATIVE_MODULES:
        assert (ROOT / (name.replace(".", "/") + ".py")).is_file(), name
    # setup.py reads the tuple without importing the package: the same names, in the same order.
    tree = ast.parse((ROOT / "devtunnel" / "native.py").read_text())
    [listed] = [n.value for n in tree.body if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "NATIVE_MODULES"]
    assert ast.literal_eval(listed) == native.NATIVE_MODULES
    assert "_native_modules()" in (ROOT / "setup.py").read_text()


def test_no_listed_module_holds_a_surrogate_in_a_string_literal() -> None:
    """mypyc refuses one ("Surrogate codepoints in string literals not supported"): the compiled
    build fails, which only the compiled CI run would show. Write such a character as an escape
    the code reads (``re``'s ``\\udcff``, ``chr(0xDCFF)``)."""
    for name in native.NATIVE_MODULES:
        path = ROOT / (name.replace(".", "/") + ".py")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                bad = [ch for ch in node.value if 0xD800 <= ord(ch) <= 0xDFFF]
                assert not bad, f"{path.relative_to(ROOT)}:{node.lineno}: a surrogate in a string literal"


def test_version_says_whether_the_per_request_modules_run_compiled() -> None:
    out = subprocess.run([sys.executable, "-m", "devtunnel", "--version"], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    compiled = native.compiled_modules()
    origins = [importlib.util.find_spec(name).origin for name in native.NATIVE_MODULES]  # type: ignore[union-attr]
    assert compiled == [n for n, o in zip(native.NATIVE_MODULES, origins) if o is not None and not o.endswith(".py")]
    if compiled:
        assert out.stdout == f"devtunnel 0.1.0 ({len(compiled)} of {len(native.NATIVE_MODULES)} per-request modules compiled with mypyc)\n"
    else:
        assert out.stdout == "devtunnel 0.1.0 (pure Python)\n"
    assert out.stderr == ""


def test_the_build_asks_for_the_pinned_mypy_only_when_compiling(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _backend(monkeypatch, compiling=True)
    assert backend.get_requires_for_build_wheel() == [backend.MYPYC]
    assert backend.MYPYC.startswith("mypy==")  # pinned: what mypyc compiles, and how, changes between releases
    monkeypatch.setenv("DEVTUNNEL_USE_MYPYC", "0")  # anything but 1: setuptools' own hook, no mypy
    assert not backend._compiling()


def test_an_editable_install_is_never_compiled(monkeypatch: pytest.MonkeyPatch) -> None:
    # The compiled extensions would sit beside their sources and hide every edit of them.
    backend = _backend(monkeypatch, compiling=True)
    with pytest.raises(RuntimeError, match=r"works with `pip install \.`, not `pip install -e \.`"):
        backend.get_requires_for_build_editable()


def _classes_of_native_modules() -> dict[str, set[str]]:
    """The classes each listed module defines (at its top level)."""
    out = {}
    for name in native.NATIVE_MODULES:
        tree = ast.parse((ROOT / (name.replace(".", "/") + ".py")).read_text())
        out[name] = {n.name for n in tree.body if isinstance(n, ast.ClassDef)}
    return out


def test_no_interpreted_class_inherits_from_a_compiled_one() -> None:
    """mypyc makes no instance of an interpreted subclass of a compiled class (TypeError:
    interpreted classes cannot inherit from compiled), and says so only when one is made: a
    subclass of ``StreamReset`` in an interpreted module left the relay's stalled-body stream
    unfailed and its client waiting. Such subclasses live in a listed module, compiled with
    their base. Read from the sources (``from M import C`` and ``M.C`` bases), so the pure run
    holds every module and test to it too (package re-exports are looked up)."""
    classes = _classes_of_native_modules()
    found = []
    for path in sorted([*(ROOT / "devtunnel").rglob("*.py"), *(ROOT / "tests").rglob("*.py"), *(ROOT / "bench").rglob("*.py")]):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        if module in classes:
            continue
        tree = ast.parse(path.read_text())
        imported: dict[str, str] = {}  # local name -> "module.Class" or "module" of a listed module
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module is not None:
                for alias in node.names:
                    qualified = f"{node.module}.{alias.name}"
                    if any(m.startswith(node.module + ".") for m in classes) and qualified not in classes:
                        # A package's re-export (devtunnel.protocol's StreamReset): where it is defined.
                        value = getattr(importlib.import_module(node.module), alias.name, None)
                        if isinstance(value, type):
                            qualified = f"{value.__module__}.{value.__qualname__}"
                    owner, _, name = qualified.rpartition(".")
                    if owner in classes and name in classes[owner] or qualified in classes:
                        imported[alias.asname or alias.name] = qualified
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in classes and alias.asname:
                        imported[alias.asname] = alias.name
        for node in ast.walk(tree):
            if not isinstance(node, ast.ClassDef):
                continue
            for base in node.bases:
                if isinstance(base, ast.Name) and base.id in imported and imported[base.id] not in classes:
                    found.append(f"{module}.{node.name}({imported[base.id]})")
                elif isinstance(base, ast.Attribute) and isinstance(base.value, ast.Name):
                    owner = imported.get(base.value.id)
                    if owner in classes and base.attr in classes[owner]:
                        found.append(f"{module}.{node.name}({owner}.{base.attr})")
    assert found == []
