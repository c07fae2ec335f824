"""``devtunnel init``: a commented ``devtunnel.toml`` for the current folder, asking nothing.

The tunnel is named after the folder. Its ``run`` command is guessed from what the folder holds:
``manage.py`` (Django), a pyproject.toml or requirements.txt naming FastAPI/uvicorn or Flask, or
a package.json with a ``dev`` or ``start`` script; with no guess the ``run`` line is left
commented. An existing file is never replaced (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from devtunnel.commands.output import err, safe
from devtunnel.config import FILE_NAME
from devtunnel.exit_codes import EXIT_USAGE
from devtunnel.values.names import label_from

__all__ = ["Guess", "guess_app", "render", "run"]

_READ_LIMIT = 1 << 20
"""Bytes read at most from a file looked at for a guess."""


@dataclass(frozen=True)
class Guess:
    """What the folder suggests: the command, the port it listens on, and where that was seen."""

    run: str | None
    port: int
    source: str


def _read(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(_READ_LIMIT).decode("utf-8", "replace")
    except OSError:
        return ""


def _table(doc: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``doc[k1][k2]...`` when every step is a table, else an empty one (a file may hold anything)."""
    for key in keys:
        value = doc.get(key)
        doc = value if isinstance(value, dict) else {}
    return doc


def _texts(value: object) -> list[str]:
    return [item for item in value if isinstance(item, str)] if isinstance(value, list) else []


def _python_dependencies(folder: Path) -> tuple[str, str]:
    """The lowercased dependency text of pyproject.toml or requirements.txt, and that file's name."""
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file():
        try:
            doc: dict[str, Any] = tomllib.loads(_read(pyproject))
        except tomllib.TOMLDecodeError:
            doc = {}
        project = _table(doc, "project")
        parts = _texts(project.get("dependencies"))
        for group in _table(project, "optional-dependencies").values():
            parts += _texts(group)
        parts += list(_table(doc, "tool", "poetry", "dependencies"))
        if parts:
            return " ".join(parts).lower(), "pyproject.toml"
    requirements = folder / "requirements.txt"
    if requirements.is_file():
        return _read(requirements).lower(), "requirements.txt"
    return "", ""


_ASGI_APP = re.compile(r"^([A-Za-z_]\w*)\s*(?::[^=\n]*)?=\s*(?:fastapi\.)?FastAPI\(", re.MULTILINE)
"""``api = FastAPI(`` (or ``app: FastAPI = FastAPI(``) at the top level of a module: the app's name."""


_ASGI_FILES = ("main.py", "app.py", "api.py", "server.py", "asgi.py")
"""The names a module creating the app usually has, most likely first."""


def _asgi_candidates(folder: Path) -> list[tuple[Path, str]]:
    """Each file that may create the app, with the folder uvicorn is to import it from (``.``, or
    ``src`` for a src layout), most likely first: the folder's own modules, then its packages'
    (``app/main.py``), then a src layout's (``src/main.py``, ``src/shop/main.py``)."""
    found = [(folder / name, "") for name in _ASGI_FILES]
    src = folder / "src"
    found += [(src / name, "src") for name in _ASGI_FILES]
    packages = [(folder, "")] + ([(src, "src")] if src.is_dir() else [])
    for base, app_dir in packages:
        try:
            children = sorted(p for p in base.iterdir() if p.is_dir() and ((p / "__init__.py").is_file() or p.name == "app"))
        except OSError:
            continue
        for child in children[:50]:  # bounded: a folder of many packages is not searched whole
            found += [(child / name, app_dir) for name in _ASGI_FILES]
    return found


def _asgi_module(folder: Path) -> str:
    """``main:app``: the module that most likely creates the FastAPI app, and the app's name there
    (with ``--app-dir src`` when it lives under ``src/``)."""
    for path, app_dir in _asgi_candidates(folder):
        text = _read(path) if path.is_file() else ""
        if "FastAPI(" in text:
            found = _ASGI_APP.search(text)
            module = path.relative_to(folder / app_dir).with_suffix("").as_posix().replace("/", ".")
            return f"{module}:{found.group(1) if found else 'app'}" + (f" --app-dir {app_dir}" if app_dir else "")
    return "app:app" if (folder / "app.py").is_file() else "main:app"


def _node(folder: Path) -> Guess | None:
    package = folder / "package.json"
    if not package.is_file():
        return None
    try:
        scripts = json.loads(_read(package)).get("scripts") or {}
    except (ValueError, AttributeError):
        return None
    if not isinstance(scripts, dict):
        return None
    runner = "npm"
    for lock, tool in (("pnpm-lock.yaml", "pnpm"), ("yarn.lock", "yarn"), ("bun.lockb", "bun"), ("bun.lock", "bun")):
        if (folder / lock).is_file():
            runner = tool
            break
    for script in ("dev", "start"):
        body = scripts.get(script)
        if isinstance(body, str):
            port = 5173 if "vite" in body else 3000
            command = f"{runner} start" if script == "start" and runner in ("npm", "yarn") else f"{runner} run {script}"
            return Guess(command, port, f"package.json scripts.{script}")
    return None


def guess_app(folder: Path) -> Guess:
    """The best guess for ``folder``; ``run`` is None when nothing suggests one."""
    if (folder / "manage.py").is_file():
        return Guess("python manage.py runserver 8000", 8000, "manage.py")
    deps, source = _python_dependencies(folder)
    if "fastapi" in deps or "uvicorn" in deps or "starlette" in deps:
        return Guess(f"uvicorn {_asgi_module(folder)} --port 8000 --reload", 8000, source)
    if "flask" in deps:
        return Guess("flask run --port 5000 --reload", 5000, source)
    if "django" in deps:
        return Guess("python manage.py runserver 8000", 8000, source)
    return _node(folder) or Guess(None, 8000, "")


def tunnel_name(folder: Path) -> str:
    """The folder's name as a tunnel name (``My App`` -> ``my-app``), or ``app``."""
    return label_from(folder.name) or "app"


def render(name: str, guess: Guess) -> str:
    """The file's text."""
    if guess.run:
        run = tomli_w.dumps({"run": guess.run}).strip()
        run_lines = (f"# The command that starts your app (guessed from {guess.source}): devtunnel starts it,\n"
                     "# watches it, restarts it when it exits, and stops it with its children when devtunnel stops.\n"
                     f"{run}\n")
    else:
        run_lines = ("# The command that starts your app: devtunnel starts it, watches it, restarts it when it\n"
                     "# exits, and stops it with its children when devtunnel stops.\n"
                     '# run = "uvicorn app:app --port 8000 --reload"\n')
    return f"""\
# devtunnel.toml: the tunnels `devtunnel up` starts, with their apps (reference: docs/config.md).
# `devtunnel config check` checks this file; `devtunnel http {name}` starts one tunnel of it.

[tunnels.{name}]
# The local service: a port, HOST:PORT or URL.
target = "{guess.port}"
{run_lines}# Ready when this path answers 2xx or 3xx (default: when the port accepts connections).
# health = "/healthz"
# While the app is down or restarting, requests wait this long instead of failing with 502.
hold = "30s"
"""


def run(args: argparse.Namespace) -> int:
    """``devtunnel init``; returns the exit code."""
    folder = Path.cwd()
    path = folder / FILE_NAME
    if path.exists():
        err(f"{path} already exists: it is left as it is (edit it, or remove it and run devtunnel init again)")
        return EXIT_USAGE
    name = tunnel_name(folder)
    guess = guess_app(folder)
    text = render(name, guess)
    try:
        with open(path, "x", encoding="utf-8") as f:  # "x": never replace a file created meanwhile
            f.write(text)
    except FileExistsError:
        err(f"{path} already exists: it is left as it is")
        return EXIT_USAGE
    print(f"Wrote {safe(str(path))}: tunnel {name} -> {guess.port}")
    if guess.run:
        print(f"  run: {safe(guess.run)}  (guessed from {guess.source})")
    else:
        print("  run: none guessed; set run = \"...\" to have devtunnel start your app")
    print("Start it with: devtunnel up")
    return 0
