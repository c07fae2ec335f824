"""copy_text: always the terminal clipboard (OSC 52); the system clipboard only where it can work."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from textual.app import App

from devtunnel.tui.clipboard import copy, copy_text, tmux_set_clipboard

TEXT = "curl 'http://shop.localhost/ü'"
SIZE = len(TEXT.encode())
SENT = f"Sent {SIZE} bytes to the terminal's clipboard (OSC 52)"


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
    monkeypatch.delenv("TMUX", raising=False)
    return tmp_path


async def test_without_a_display_only_osc52_is_used_and_no_tool_runs(bin_dir: Path) -> None:
    record = _fake_tool(bin_dir, "xclip")
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == SENT
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
    assert sentence == f"Copied {SIZE} bytes to the system clipboard; also sent them to the terminal's clipboard (OSC 52)"
    assert record.read_text() == TEXT
    assert "Can't open display" not in err and "noise" not in out


async def test_a_failing_tool_falls_back_to_the_next_then_to_osc52_alone(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    xclip = _fake_tool(bin_dir, "xclip", status=1)
    xsel = _fake_tool(bin_dir, "xsel", status=1)
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == SENT
        assert app.clipboard == TEXT
    assert xclip.read_text() == TEXT and xsel.read_text() == TEXT


async def test_wayland_uses_wl_copy(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAYLAND_DISPLAY", "wayland-0")
    record = _fake_tool(bin_dir, "wl-copy")
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT).startswith(f"Copied {SIZE} bytes to the system clipboard")
    assert record.read_text() == TEXT


async def test_a_display_without_any_tool_is_not_an_error(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPLAY", ":99")
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == SENT
    assert os.listdir(bin_dir) == []


def _fake_tmux(bin_dir: Path, answer: str, *, status: int = 0, hang: bool = False) -> Path:
    """A stand-in ``tmux`` that records its arguments and prints ``answer`` (or never answers)."""
    record = bin_dir / "tmux.args"
    script = bin_dir / "tmux"
    script.write_text(
        "#!/bin/sh\n"
        f"echo \"$@\" >> '{record}'\n"
        + ("exec /bin/sleep 30\n" if hang else "")
        + f"printf '%s\\n' '{answer}'\n"
        f"exit {status}\n"
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return record


@pytest.fixture
def in_tmux(bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TMUX", "/tmp/tmux-0/default,4242,0")
    return bin_dir


async def test_inside_tmux_with_set_clipboard_off_says_nothing_arrived_and_how_to_fix_it(in_tmux: Path) -> None:
    record = _fake_tmux(in_tmux, "off")
    app: App[None] = App()
    async with app.run_test():
        copied = copy(app, TEXT)
    assert copied.tmux_blocks and not copied.system
    assert copied.sentence == (f"{SENT}. tmux drops it: its set-clipboard option is off. "
                               "To enable: tmux set -g set-clipboard on")
    assert record.read_text() == "show -gv set-clipboard\n"


async def test_inside_tmux_with_set_clipboard_external_the_default_says_nothing_arrived(in_tmux: Path) -> None:
    """``external`` only sends what is copied in tmux itself: a program's OSC 52 is dropped as with ``off``."""
    _fake_tmux(in_tmux, "external")
    app: App[None] = App()
    async with app.run_test():
        copied = copy(app, TEXT)
    assert copied.tmux_blocks == "external"
    assert copied.sentence == (f"{SENT}. tmux drops it: its set-clipboard option is external. "
                               "To enable: tmux set -g set-clipboard on")


async def test_inside_tmux_that_passes_osc52_on_nothing_is_added(in_tmux: Path) -> None:
    _fake_tmux(in_tmux, "on")
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == SENT


@pytest.mark.parametrize("kind", ["missing", "failing", "garbage", "hanging"])
async def test_a_tmux_that_cannot_answer_adds_nothing_and_raises_nothing(in_tmux: Path, kind: str) -> None:
    if kind == "failing":
        _fake_tmux(in_tmux, "no server running on /tmp/tmux-0/default", status=1)
    elif kind == "garbage":
        _fake_tmux(in_tmux, "\x1b]52;c;evil\x07")
    elif kind == "hanging":
        _fake_tmux(in_tmux, "off", hang=True)
    assert tmux_set_clipboard() is None
    app: App[None] = App()
    async with app.run_test():
        assert copy_text(app, TEXT) == SENT


def test_outside_tmux_tmux_is_not_asked(bin_dir: Path) -> None:
    record = _fake_tmux(bin_dir, "off")
    assert tmux_set_clipboard() is None
    assert not record.exists()


def test_a_real_tmux_server_with_set_clipboard_off_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil
    import subprocess

    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed")
    socket = tmp_path / "tmux.sock"
    run = [tmux, "-S", str(socket), "-f", "/dev/null"]
    subprocess.run([*run, "new-session", "-d", "-s", "clip", "sleep 60"], check=True, timeout=10)
    try:
        subprocess.run([*run, "set", "-g", "set-clipboard", "off"], check=True, timeout=10)
        monkeypatch.setenv("TMUX", f"{socket},0,0")
        assert tmux_set_clipboard() == "off"
        subprocess.run([*run, "set", "-g", "set-clipboard", "on"], check=True, timeout=10)
        assert tmux_set_clipboard() == "on"
    finally:
        subprocess.run([*run, "kill-server"], check=False, timeout=10)
