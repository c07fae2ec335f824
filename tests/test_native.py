"""The modules mypyc may compile (devtunnel/native.py) and the build hooks that compile them."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
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
        assert out.stdout == f"devtunnel version 0.1.0 ({len(compiled)} of {len(native.NATIVE_MODULES)} per-request modules compiled with mypyc)\n"
    else:
        assert out.stdout == "devtunnel version 0.1.0 (pure Python)\n"
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


_TIMEOUT = "asyncio.timeout"


def _suspensions_while_handling(tree: ast.AST) -> list[tuple[int, str]]:
    """Where a coroutine would suspend inside an ``except`` or ``finally`` block, and each
    ``async with`` that is not ``asyncio.timeout(...)`` (its exit runs in an exception handler)."""
    found: list[tuple[int, str]] = []

    def visit(node: ast.AST, handling: bool) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            handling = False  # a function defined here runs when it is called
        if handling and isinstance(node, (ast.Await, ast.AsyncFor, ast.AsyncWith, ast.Yield, ast.YieldFrom)):
            found.append((node.lineno, type(node).__name__.lower() + " inside an except or finally block"))
        if isinstance(node, ast.AsyncWith):
            for item in node.items:
                call = item.context_expr
                if not (isinstance(call, ast.Call) and ast.unparse(call.func) == _TIMEOUT):
                    found.append((node.lineno, f"async with {ast.unparse(call)}"))
        if isinstance(node, (ast.Try, ast.TryStar)):
            for child in [*node.body, *node.orelse]:
                visit(child, handling)
            for handler in node.handlers:
                for child in handler.body:
                    visit(child, True)
            for child in node.finalbody:
                visit(child, True)
            return
        for child in ast.iter_child_nodes(node):
            visit(child, handling)

    visit(tree, False)
    return found


def test_no_listed_module_suspends_while_an_exception_is_being_handled() -> None:
    """devtunnel/native.py says why: compiled, such a coroutine leaks the exception it handles
    into every other task (``test_a_compiled_coroutine_suspended_in_a_handler_leaks_its_exception``)."""
    found = []
    for name in native.NATIVE_MODULES:
        path = ROOT / (name.replace(".", "/") + ".py")
        found += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in _suspensions_while_handling(ast.parse(path.read_text()))]
    assert found == []


def test_the_rule_finds_each_way_of_suspending_in_a_handler() -> None:
    source = '''
async def f(ev, lock):
    try:
        await ev.wait()                      # fine: the try block itself
    except ValueError:
        await ev.wait()                      # 6
    finally:
        async for _ in ev: pass              # 8
    try:
        pass
    except* KeyError:
        async with lock: pass                # 12 (twice: in a handler, and not a timeout)
    async with asyncio.timeout(1):           # fine
        await ev.wait()
    try:
        pass
    finally:
        async def later():
            await ev.wait()                  # fine: runs when called
'''
    assert _suspensions_while_handling(ast.parse(source)) == [
        (6, "await inside an except or finally block"),
        (8, "asyncfor inside an except or finally block"),
        (12, "asyncwith inside an except or finally block"),
        (12, "async with lock"),
    ]


_LEAKS = '''
import asyncio
import sys


async def handling(ev: asyncio.Event) -> None:
    try:
        raise ValueError("handled in a suspended coroutine")
    except ValueError:
        await ev.wait()


async def probe() -> str:
    ev = asyncio.Event()
    task = asyncio.ensure_future(handling(ev))
    await asyncio.sleep(0)
    seen = repr(sys.exc_info()[1])  # in another task, while ``handling`` waits in its handler
    ev.set()
    await task
    return seen


def main() -> str:
    return asyncio.run(probe())
'''


def test_a_compiled_coroutine_suspended_in_a_handler_leaks_its_exception(tmp_path: Path) -> None:
    """Why the rule above holds for listed modules: the installed mypyc compiles a coroutine that
    awaits in an ``except`` block, and another task sees its exception as the one being
    handled. Interpreted, it sees none. Should a mypyc release put it aside while suspended,
    this fails, and the rule in devtunnel/native.py may go."""
    pytest.importorskip("mypyc.build", reason="mypyc comes with mypy, in the test extras")
    if not _can_compile():
        pytest.skip("no C compiler or Python headers (CI installs them: .ci/run)")
    (tmp_path / "leaks.py").write_text(_LEAKS)
    run = "import leaks; print(leaks.__file__.endswith('.py'), leaks.main())"
    interpreted = subprocess.run([sys.executable, "-c", run], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert interpreted.stdout == "True None\n"
    subprocess.run([sys.executable, "-m", "mypyc", "leaks.py"], cwd=tmp_path, capture_output=True, text=True, check=True)
    compiled = subprocess.run([sys.executable, "-c", run], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert compiled.stdout == "False ValueError('handled in a suspended coroutine')\n"


def _can_compile() -> bool:
    return shutil.which("cc") is not None and Path(sysconfig.get_paths()["include"], "Python.h").is_file()
