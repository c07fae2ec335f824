"""The pure core stays pure: importing it loads no event loop, server, client or screen library."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import pytest

FORBIDDEN = ("asyncio", "textual", "uvicorn", "websockets", "httpx", "starlette")

CORE_MODULES = [
    "devtunnel.values.logthrottle",
    "devtunnel.protocol",
    "devtunnel.capture",
    "devtunnel.capture.model",
    "devtunnel.capture.store",
    "devtunnel.capture.schema",
    "devtunnel.capture.rows",
    "devtunnel.capture.recorder",
    "devtunnel.capture.filters",
    "devtunnel.capture.diff",
    "devtunnel.capture.edit",
    "devtunnel.capture.outcome",
    "devtunnel.capture.bodies",
    "devtunnel.export",
    "devtunnel.ngrok_config",
    "devtunnel.webhooks",
    "devtunnel.webhooks.resign",
    "devtunnel.via",
    "devtunnel.values.request_head",
    "devtunnel.export.assemble",
    "devtunnel.export.redact",
    "devtunnel.values.http1",
    "devtunnel.values",
    "devtunnel.values.terminal",
    "devtunnel.values.exchange_ids",
    "devtunnel.webhooks.context",
    "devtunnel.capture.filters.webhook",
    "devtunnel.rules",
    "devtunnel.rules.model",
    "devtunnel.rules.engine",
    "devtunnel.capture.filters.edge",
    "devtunnel.values.durations",
    "devtunnel.values.health_path",
    "devtunnel.values.target",
    "devtunnel.values.names",
    "devtunnel.values.sizes",
    "devtunnel.values.numbers",
    "devtunnel.values.relay_url",
    "devtunnel.values.websocket",
    "devtunnel.capture.verdict",
    "devtunnel.export.agent_json",
    "devtunnel.values.paths",
    "devtunnel.values.ngrok_keys",
]


def exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


PROBE = """
import json, sys
import {module}
forbidden = {forbidden!r}
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in forbidden)))
"""


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_no_io_or_ui_library(module: str) -> None:
    assert exists(module), f"{module} is named here but cannot be found: moved or renamed? update this list"
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module, forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == [], f"importing {module} loaded {', '.join(loaded)}"


def test_probe_sees_a_forbidden_import() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE.format(module="asyncio", forbidden=FORBIDDEN)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "asyncio" in json.loads(result.stdout.strip().splitlines()[-1])


def test_no_module_of_devtunnel_takes_part_in_an_import_circle() -> None:
    # Lazy imports inside functions count too: a circle is a circle, whenever it closes.
    import grimp  # import-linter's graph, in the test extras
    graph = grimp.build_graph("devtunnel")
    circles = []
    for module in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(module):
            if graph.chain_exists(importer=imported, imported=module):
                circles.append((module, imported))
    assert circles == [], circles
