"""A secret given to devtunnel wrongly is refused without being printed.

Each command runs as the user runs it (the CLI as a child process) and its whole output is read:
stderr goes to a terminal, but also to a CI log, a relay's journal or a bug report, so a token
with a stray space (most of a real token) or a relay URL carrying a password must not be in it.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from devtunnel.exit_codes import EXIT_USAGE
from tests.helpers import free_port
from tests.kit.procs import DEVTUNNEL

SECRET = "Sekret-0123456789abcdef"


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"), **extra)
    return env


def _run(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=30, env=_env(tmp_path, **env),
                          stdin=subprocess.DEVNULL, cwd=tmp_path)


def _refused_in_one_line(done: subprocess.CompletedProcess[str], *hidden: str) -> str:
    assert done.returncode == EXIT_USAGE, done
    assert done.stdout == "" and done.stderr.count("\n") == 1, done
    for text in hidden:
        assert text not in done.stderr, done.stderr
    return done.stderr


@pytest.mark.parametrize(("token", "fault"), [
    (SECRET[:6] + " " + SECRET[6:], f"its character 7 of {len(SECRET) + 1} is a space"),
    (SECRET[:6] + "\n" + SECRET[6:], f"its character 7 of {len(SECRET) + 1} is a line feed"),
    (SECRET[:6] + "\x1b" + SECRET[6:], f"its character 7 of {len(SECRET) + 1} is U+001B"),
])
def test_a_token_that_is_refused_is_not_printed(tmp_path: Path, token: str, fault: str) -> None:
    # It was quoted whole: "a token cannot hold spaces or control characters, got 'Sekret-0123… '".
    port = str(free_port())
    runs = {
        "http --token": _run(tmp_path, "http", port, "--no-tui", "--api-port", "0", "--token", token),
        "DEVTUNNEL_TOKEN": _run(tmp_path, "http", port, "--no-tui", "--api-port", "0", DEVTUNNEL_TOKEN=token),
        "config add-token": _run(tmp_path, "config", "add-token", token),
        "relay --token": _run(tmp_path, "relay", "--listen", f"127.0.0.1:{port}", "--token", token),
    }
    if "\n" not in token:  # a line of the file
        tokens = tmp_path / "tokens"
        tokens.write_text(f"# team\n{token}\n")
        runs["relay --tokens-file"] = _run(tmp_path, "relay", "--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens))
    for how, done in runs.items():
        said = _refused_in_one_line(done, SECRET[:6], SECRET[6:], SECRET[-8:])
        assert f"a token cannot hold spaces or control characters: {fault} (the token is not shown: it is a secret)" in said, (how, said)
    assert not (tmp_path / "config" / "devtunnel" / "devtunnel.toml").exists()


@pytest.mark.parametrize("relay", [
    f"ws://me:{SECRET}@127.0.0.1:1",
    f"wss://me:{SECRET}@relay.example.com/_devtunnel/connect",
    f"https://me:{SECRET}@relay.example.com:99999",  # a bad port too: the password is still not quoted
    f"me:{SECRET}@relay.example.com:8000",
])
def test_a_relay_url_with_a_password_is_refused_without_printing_it(tmp_path: Path, relay: str) -> None:
    # Taken, the URL went into every "cannot reach the relay at ..." line, and the API's tunnel error.
    port = str(free_port())
    runs = [
        _run(tmp_path, "http", port, "--no-tui", "--api-port", "0", "--relay", relay),
        _run(tmp_path, "http", port, "--no-tui", "--api-port", "0", DEVTUNNEL_RELAY=relay),
        _run(tmp_path, "config", "set", "relay.url", relay),
    ]
    for done in runs:
        said = _refused_in_one_line(done, SECRET, SECRET[:8])
        assert "a relay URL takes no user name or password" in said, said
        assert "…@relay.example.com" in said or "…@127.0.0.1:1" in said, said


@pytest.mark.parametrize("relay", [
    f"wss://relay.example.com/_devtunnel/connect?token={SECRET}",
    f"ws://127.0.0.1:1/?token={SECRET}",
    f"relay.example.com:8000#{SECRET}",
])
def test_a_relay_url_with_a_query_is_refused_without_printing_it(tmp_path: Path, relay: str) -> None:
    # Taken, "?token=..." went to the relay, which reads nothing there, and into every line naming it.
    port = str(free_port())
    runs = [
        _run(tmp_path, "http", port, "--no-tui", "--api-port", "0", "--relay", relay),
        _run(tmp_path, "config", "set", "relay.url", relay),
    ]
    for done in runs:
        said = _refused_in_one_line(done, SECRET, SECRET[:8])
        assert "a relay URL takes no query or fragment" in said and "…'" in said, said


@pytest.mark.parametrize(("command", "flag", "instead"), [
    (["http"], "--token", "--token-file"),
    (["http"], "--basic-auth", "sha256:HEX"),
    (["relay"], "--token", "--tokens-file"),
])
def test_each_flag_that_takes_a_secret_says_in_its_help_that_ps_shows_it(
        tmp_path: Path, command: list[str], flag: str, instead: str) -> None:
    done = subprocess.run([*DEVTUNNEL, *command, "--help"], capture_output=True, text=True, timeout=30,
                          env=_env(tmp_path, COLUMNS="400"))
    assert done.returncode == 0, done
    options = done.stdout.split("\noptions:\n", 1)[1]
    # One option's help: from its line to the next option's (argparse puts a long one's text below it).
    (said,) = [block for block in options.split("\n  -") if block.startswith(flag[1:] + " ")]
    said = " ".join(said.split())
    assert "other users see it in `ps`" in said and instead in said, said


def test_a_settings_file_other_users_can_read_is_refused_when_it_holds_the_relay_token(tmp_path: Path) -> None:
    # As one holding a webhook secret already was: a project's devtunnel.toml is often 0644 (and committed).
    project = tmp_path / "devtunnel.toml"
    project.write_text(f'[relay]\nurl = "ws://127.0.0.1:1"\ntoken = "{SECRET}"\n')
    project.chmod(0o644)
    for args in (["http", str(free_port()), "--no-tui", "--api-port", "0"], ["config", "show"]):
        said = _refused_in_one_line(_run(tmp_path, *args), SECRET)
        assert (f"relay.token: the file holds the relay token but other users can read it (mode 644): run chmod 600 "
                f"{project}, or give the token with DEVTUNNEL_TOKEN") in said, said
    project.chmod(0o600)
    shown = _run(tmp_path, "config", "show")
    assert shown.returncode == 0 and 'token = "********' in shown.stdout and SECRET not in shown.stdout, shown



@pytest.mark.parametrize(("text", "said"), [
    # The secret written one level too high: the key names the table it should have been in.
    (f'[webhooks]\nstripe = "whsec_{SECRET}"\n', "webhooks.stripe: expected a table ([webhooks.stripe]), got text"),
    (f'webhooks = "whsec_{SECRET}"\n', "webhooks: expected tables such as [webhooks.stripe], got text"),
    (f'relay = "{SECRET}"\n', "relay: expected a table ([relay]), got text"),
    (f'[tunnels.web]\ntarget = "8080"\nwebhooks = "{SECRET}"\n',
     "tunnels.web.webhooks: expected tables such as [tunnels.web.webhooks.stripe], got text"),
    (f'[tunnels.web]\ntarget = "8080"\n[tunnels.web.webhooks]\nslack = "{SECRET}"\n',
     "tunnels.web.webhooks.slack: expected a table ([tunnels.web.webhooks.slack]), got text"),
    # The secret in the key that names the variable holding it (a Slack signing secret is hex).
    (f'[webhooks.slack]\nsecret_env = "8f74{SECRET}"\n',
     "webhooks.slack.secret_env: expected an environment variable name such as STRIPE_WEBHOOK_SECRET"),
    (f'[webhooks.stripe]\nsecret_env = "whsec_{SECRET.replace("-", "_")}"\n',
     "webhooks.stripe.secret_env: expected an environment variable name such as STRIPE_WEBHOOK_SECRET, got a "
     "webhook secret"),
])
def test_a_secret_written_in_the_wrong_place_is_refused_without_printing_it(
    tmp_path: Path, text: str, said: str
) -> None:
    # Before, config check, http and config show quoted the value: "got 'whsec_...'", the secret
    # in a terminal, a CI log or a bug report. A mode-0600 file, as devtunnel asks of one holding
    # a secret, so that the file's mode is not what is refused.
    project = tmp_path / "devtunnel.toml"
    project.write_text(text)
    project.chmod(0o600)
    hidden = (SECRET, SECRET.replace("-", "_"))
    for args in (["config", "check"], ["config", "show"], ["http", str(free_port()), "--no-tui", "--api-port", "0"]):
        done = _run(tmp_path, *args)
        assert done.returncode != 0 and said in done.stderr, (args, done)
        for secret in hidden:
            assert secret not in done.stdout + done.stderr, (args, done)


def test_config_set_under_a_relay_written_as_text_does_not_print_it(tmp_path: Path) -> None:
    user_file = tmp_path / "config" / "devtunnel" / "devtunnel.toml"
    user_file.parent.mkdir(parents=True)
    user_file.write_text(f'relay = "{SECRET}"\n')
    user_file.chmod(0o600)
    done = _run(tmp_path, "config", "set", "relay.url", "ws://127.0.0.1:1")
    assert done.returncode != 0 and "relay: expected a table, got text" in done.stderr, done
    assert SECRET not in done.stdout + done.stderr, done
    assert user_file.read_text() == f'relay = "{SECRET}"\n'


@pytest.mark.parametrize(("args", "said"), [
    # ngrok 2's basic auth, as its docs wrote it: the password was printed back.
    (["http", "8080", "--auth", f"admin:{SECRET}"], "unrecognized arguments: --auth ******** (--auth is ngrok's: "
                                                    "use --basic-auth USER:PASS)"),
    (["http", "8080", f"--auth=admin:{SECRET}"], "unrecognized arguments: --auth=******** (--auth is ngrok's"),
    # A flag of another command, or misspelt, or guessed: argparse's "unrecognized arguments" quoted its value.
    (["relay", "--authtoken", SECRET], "devtunnel relay: unrecognized arguments: --authtoken ********"),
    (["relay", f"--authtoken={SECRET}"], "devtunnel relay: unrecognized arguments: --authtoken=********"),
    (["inspect", "--token", SECRET], "devtunnel inspect: unrecognized arguments: --token ********"),
    (["http", "8080", "--basic_auth", f"admin:{SECRET}"], "devtunnel http: unrecognized arguments: --basic_auth ********"),
    (["http", "8080", "--password", SECRET], "devtunnel http: unrecognized arguments: --password ********"),
    (["http", "8080", "--webhook-secret", SECRET], "devtunnel http: unrecognized arguments: --webhook-secret ********"),
    # What is no secret is still said as typed.
    (["http", "8080", "--oauth", "google"], "unrecognized arguments: --oauth google (--oauth is ngrok's"),
    (["requests", "extra", "words"], "devtunnel requests: unrecognized arguments: extra words"),
])
def test_an_unknown_flag_holding_a_secret_is_refused_without_echoing_it(
    tmp_path: Path, args: list[str], said: str
) -> None:
    done = _run(tmp_path, *args)
    assert said in _refused_in_one_line(done, SECRET)


def test_a_url_to_send_to_with_a_password_is_refused_without_printing_it(tmp_path: Path) -> None:
    # As a relay URL or a target with one is: before, send and export quoted the URL whole.
    from devtunnel.capture.store import Store
    from tests.kit.exchanges import make_exchange

    db = tmp_path / "captures.db"
    store = Store(db)
    store.put(make_exchange("GET", b"/x", [(b"Host", b"h")], id="01JD3X4K9A0000000000000000"))
    store.close()
    for args, said in (
        (["send", "stripe", "invoice.paid", "--unsigned", "--to", f"http://me:{SECRET}@127.0.0.1:9/"],
         "devtunnel send: --to 'http://…@127.0.0.1:9/': user info in the URL is not supported"),
        (["send", "stripe", "invoice.paid", "--unsigned", "--to", f"http://me:{SECRET}@127.0.0.1:99999/"],
         "devtunnel send: --to 'http://…@127.0.0.1:99999/': the port is not a number of 0-65535"),
        (["export", "--db", str(db), "01JD3X4K9A", "--to", f"http://me:{SECRET}@127.0.0.1:9"],
         "devtunnel: --to: 'http://…@127.0.0.1:9' holds user info: give credentials as headers, not in the URL"),
        (["export", "--db", str(db), "01JD3X4K9A", "--to", f"http://me:{SECRET}@127.0.0.1:x"],
         "devtunnel: --to: 'http://…@127.0.0.1:x' is not a valid URL"),
    ):
        done = _run(tmp_path, *args)
        assert done.returncode != 0 and said in done.stderr, (args, done)
        assert SECRET not in done.stdout + done.stderr, (args, done)


@pytest.mark.parametrize(("args", "said"), [
    (["relay", "--listen", "127.0.0.1:0", "--public-url", f"https://me:{SECRET}@tunnel.example.com"],
     "--public-url 'https://…@tunnel.example.com': its host tunnel.example.com is not the relay's domain"),
    (["relay", "--listen", "127.0.0.1:0", "--public-url", f"ftp://me:{SECRET}@tunnel.example.com"],
     "--public-url 'ftp://…@tunnel.example.com': expected http(s)://HOST"),
    (["http", "8080", "--no-tui", "--via", f"ssh:me:{SECRET}@127.0.0.1:22"],
     "--via 'ssh:…@127.0.0.1:22': expected ssh:USER@HOST or ssh:USER@HOST:PORT"),
    (["http", "8080", "--no-tui", "--run", "true", "--health", f"http://me:{SECRET}@127.0.0.1:8080/healthz"],
     "health: expected a path on the target such as /healthz, got 'http://…@127.0.0.1:8080/healthz'"),
])
def test_other_urls_with_a_password_are_refused_without_printing_it(tmp_path: Path, args: list[str], said: str) -> None:
    done = _run(tmp_path, *args)
    assert done.returncode != 0 and said in done.stderr, done
    assert SECRET not in done.stdout + done.stderr, done
