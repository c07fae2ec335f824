"""copy_text: always the terminal clipboard (OSC 52); the system clipboard only where it can work."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from textual.app import App

from devtunnel.tui.clipboard import copy_text

TEXT = "curl 'http://shop.localhost/ü'"
SIZE = len(TEXT.encode())


def _fake_tool(bin_dir: Path, name: str, *, status: int = 0) -> Path:
    """A stand-in clipboard tool that records its stdin and shouts on stderr and stdout."""
    record = bin_dir / f"{name}.got"
    script = bin_dir / name
    script.write_text(
        "#!/bin/sh\n"
        f"/bin/cat > '{record}'\n"
        "printf '\\033[31mError: Can\\047t open display\\033[0m\\n' >&2\n"
        "printf 'noise on stdout\\n'\n"
        f"exit {status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


@pytest.fixture
def bin_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Only our stand-ins are on PATH, whatever this machine has installed.
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    return tmp_path


async def test_without_a_display_only_osc52_is_used_and_no_tool_runs(bin_dir: Path) -> None:
    record = _fake_tool(bin_dir, "xclip")
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == f"Copied {SIZE} bytes to the clipboard (terminal OSC 52)"
        assert app.clipboard == TEXT
    assert not record.exists()


async def test_with_a_display_xclip_gets_the_text_and_cannot_write_to_the_terminal(
    bin_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    record = _fake_tool(bin_dir, "xclip")
    app: App[None] = App()
    async with app.run_test():
        capfd.readouterr()
        sentence = copy_text(app, TEXT)
        out, err = capfd.readouterr()
    assert sentence == f"Copied {SIZE} bytes to the clipboard (terminal OSC 52) and the system clipboard"
    assert record.read_text() == TEXT
    assert "Can't open display" not in err and "noise" not in out


async def test_a_failing_tool_falls_back_to_the_next_then_to_osc52_alone(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    xclip = _fake_tool(bin_dir, "xclip", status=1)
    xsel = _fake_tool(bin_dir, "xsel", status=1)
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == f"Copied {SIZE} bytes to the clipboard (terminal OSC 52)"
        assert app.clipboard == TEXT
    assert xclip.read_text() == TEXT and xsel.read_text() == TEXT


async def test_wayland_uses_wl_copy(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    record = _fake_tool(bin_dir, "wl-copy")
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT).endswith("and the system clipboard")
    assert record.read_text() == TEXT


async def test_a_display_without_any_tool_is_not_an_error(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == f"Copied {SIZE} bytes to the clipboard (terminal OSC 52)"
    assert os.listdir(bin_dir) == []
