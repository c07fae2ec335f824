"""An ngrok.yml that would expand without bound (YAML aliases, a huge file, deep nesting) is one
clear error, in bounded memory and time, from every command that reads one.

Before: a 444-byte file with ``labels: *i`` (nine levels of ten aliases) made ``config
import-ngrok`` run 17 s, reach 1.5 GB and print 522 MB; ``addr: *j`` ended in a MemoryError traceback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devtunnel.ngrok_config import read_ngrok_config
from devtunnel.values.ngrok_keys import edge_labels
from tests.kit.procs import DEVTUNNEL

MEMORY = 512 * 1024 * 1024
"""The address space each command gets (``prlimit --as``): a few times what it needs."""


def _laughs(levels: int = 9) -> str:
    """Anchors ``a`` .. ``i`` under ``x``, each a list of ten aliases of the one before: ``*i`` is 10**9 values."""
    names = "abcdefghij"[:levels]
    lines = ["x:", '  a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"  {name}: &{name} [{','.join([f'*{prev}'] * 10)}]" for prev, name in zip(names, names[1:])]
    return "\n".join(lines) + "\n"


FILES = {
    "labels": _laughs() + "tunnels:\n  web:\n    addr: 80\n    labels: *i\n",
    "addr": _laughs() + "  j: &j [*i,*i,*i,*i,*i,*i,*i,*i,*i,*i]\ntunnels:\n  web:\n    addr: *j\n",
    "upstream": "version: 3\n" + _laughs() + "endpoints:\n  - name: web\n    upstream: {url: *i}\n",
    "long text": 'a: &a "' + "x" * 500_000 + '"\ntunnels:\n  web:\n    addr: 80\n    labels: [' + ", ".join(["*a"] * 10) + "]\n",
    "itself": "tunnels: &t\n  web:\n    addr: 80\n    labels: *t\n",
    "deep": "tunnels: " + "[" * 200_000 + "\n",
    "huge": "# " + "x" * (2 * 1024 * 1024) + "\ntunnels:\n  web: {addr: 80}\n",
}
SAYS = {
    "labels": "its aliases (*NAME) expand it to more than 4,000,000 characters: not read",
    "addr": "its aliases (*NAME) expand it to more than 4,000,000 characters: not read",
    "upstream": "its aliases (*NAME) expand it to more than 4,000,000 characters: not read",
    "long text": "its aliases (*NAME) expand it to more than 4,000,000 characters: not read",
    "itself": "an alias (*NAME) stands inside the value it names: a value without end",
    "deep": "its values are nested too deeply: not an ngrok configuration",
    "huge": "larger than 1024 KiB: not an ngrok configuration",
}


def _bounded(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``devtunnel ARGS`` in ``root`` with at most ``MEMORY`` of address space and a minute."""
    assert shutil.which("prlimit"), "prlimit (util-linux) is needed"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    env.update(HOME=str(root), XDG_CONFIG_HOME=str(root / ".config"), XDG_STATE_HOME=str(root / ".state"))
    return subprocess.run(["prlimit", f"--as={MEMORY}", "--", *DEVTUNNEL, *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=root, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("kind", list(FILES))
@pytest.mark.parametrize(("command", "prefix", "code"), [
    (["config", "import-ngrok", "ngrok.yml", "--dry-run"], "devtunnel config: ", 2),
    (["config", "import-ngrok", "ngrok.yml"], "devtunnel config: ", 2),
    (["config", "check", "--config", "ngrok.yml"], "devtunnel config: ", 2),  # an invalid file: bad usage, as README says
    (["start", "web", "--config", "ngrok.yml", "--no-tui", "--api-port", "0"], "devtunnel: ", 2),
    (["start", "--all", "--config", "ngrok.yml", "--no-tui", "--api-port", "0"], "devtunnel: ", 2),
])
def test_an_ngrok_yml_that_would_expand_without_bound_is_one_clear_error(
    tmp_path: Path, kind: str, command: list[str], prefix: str, code: int
) -> None:
    path = tmp_path / "ngrok.yml"
    path.write_text(FILES[kind])
    done = _bounded(tmp_path, *command)
    assert "Traceback" not in done.stderr and "MemoryError" not in done.stderr, done.stderr[-2000:]
    assert (done.returncode, done.stderr) == (code, f"{prefix}{path.name}: {SAYS[kind]}\n"), done.stderr[-2000:]
    assert len(done.stdout) < 1000, done.stdout[:1000]
    assert not (tmp_path / ".config" / "devtunnel" / "devtunnel.toml").exists()


def test_aliases_of_a_reasonable_size_are_read_as_ngrok_reads_them(tmp_path: Path) -> None:
    # go-yaml, ngrok's reader, takes anchors, aliases and merge keys: a file sharing settings so
    # is imported as before.
    (tmp_path / "ngrok.yml").write_text(
        "version: 2\nshared: &shared\n  proto: http\n  host_header: rewrite\n"
        "tunnels:\n  web:\n    <<: *shared\n    addr: 8080\n  api:\n    <<: *shared\n    addr: 8081\n")
    done = _bounded(tmp_path, "config", "import-ngrok", "ngrok.yml", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would import web: target 8080, host_header rewrite" in done.stdout
    assert "would import api: target 8081, host_header rewrite" in done.stdout


def test_values_of_the_wrong_kind_are_named_by_their_kind_and_text_is_cut() -> None:
    from devtunnel.values.ngrok_keys import shown

    result = read_ngrok_config("tunnels:\n  web:\n    addr: [1, 2]\n  v3:\n    upstream: {url: {a: 1}}\n"
                               "  long:\n    addr: 80\n    host_header: '" + "h" * 5000 + "'\n"
                               "  odd:\n    proto: [tcp]\n    addr: 80\n")
    assert ("web", "its addr a list is not a port, HOST:PORT or URL") in result.skipped
    assert ("v3", "its upstream url a mapping is not a port, HOST:PORT or URL") in result.skipped
    assert ("odd", "a list tunnels are not supported (only http)") in result.skipped
    [note] = [n for n in result.notes if n.startswith("long: host_header")]
    assert note == "long: host_header '" + "h" * 100 + "… (4900 more characters)': only rewrite or preserve exist; left out"
    assert edge_labels({"labels": [["edge=a"] * 1000]}) == (
        "it is a labeled tunnel, reached only through an ngrok edge whose protections are set at ngrok, not in its "
        "definition, and every devtunnel tunnel is public on its relay")
    assert shown("x" * 101).endswith("… (1 more characters)'") and shown({"a": 1}) == "a mapping"
    assert shown(True) == "True" and shown(None) == "None" and shown(4040) == "4040"


def test_a_value_yaml_cannot_build_is_a_clear_error_not_a_traceback() -> None:
    from devtunnel.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^ngrok.yml: not valid YAML: a value that cannot be read: month must be in 1\.\.12$"):
        read_ngrok_config("tunnels:\n  web:\n    addr: 2001-13-45\n")
    for number in ("1" * 5000, "0x" + "f" * 3600, "1:" + "59:" * 200 + "59.5", "1:" + "59:" * 200 + "59"):
        with pytest.raises(ConfigError, match=rf"^ngrok.yml: a number written in {len(number):,} characters \(line 3\): not read$"):
            read_ngrok_config("tunnels:\n  web:\n    addr: " + number + "\n")
    for text in ("inspect: !!bool maybe\n", "tunnels:\n  web:\n    addr: !!int ''\n", "tunnels:\n  web:\n    addr: !!int '-'\n"):
        with pytest.raises(ConfigError, match=r"^ngrok.yml: not valid YAML: a value that cannot be read: "):
            read_ngrok_config(text)


def test_a_tunnel_with_keys_of_mixed_types_is_read() -> None:
    result = read_ngrok_config("tunnels:\n  web:\n    addr: 80\n    proto: http\n    1: x\n    foo: y\n    ~: z\n")
    assert {"web: 1 left out (no equivalent)", "web: None left out (no equivalent)",
            "web: foo left out (no equivalent)"} <= set(result.notes), result.notes
