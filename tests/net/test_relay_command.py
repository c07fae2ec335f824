"""``devtunnel relay`` as a subprocess, and the small parsers it relies on."""

from __future__ import annotations

import os
import random
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from devtunnel.cli import build_parser
from devtunnel.commands.config import resolve_relay
from devtunnel.commands.relay import is_loopback, parse_listen, settings_from_args
from devtunnel.errors import ConfigError
from devtunnel.values.names import random_name, validate_name
from devtunnel.relay.settings import RelaySettings
from devtunnel.values.sizes import format_size, parse_size
from tests.helpers import free_port
from tests.kit.procs import DEVTUNNEL, Proc, procs  # noqa: F401 (a fixture)



@pytest.fixture
def relay_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., RelaySettings]:
    """The relay's settings from flags, in a folder where only the test's devtunnel.toml (if it
    writes one) sets anything."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    monkeypatch.delenv("DEVTUNNEL_CONFIG", raising=False)

    def settings(*flags: str) -> RelaySettings:
        return settings_from_args(resolve_relay(build_parser().parse_args(["relay", *flags])))

    return settings


def refusal_of_file(folder: Path, toml: str) -> str:
    """What ``devtunnel relay`` says, in one line and with exit 2, of ``toml`` as the
    devtunnel.toml of ``folder``."""
    (folder / "devtunnel.toml").write_text(toml)
    result = subprocess.run([*DEVTUNNEL, "relay"], capture_output=True, text=True, timeout=30, cwd=folder,
                            env={**os.environ, "XDG_CONFIG_HOME": str(folder)})
    assert result.returncode == 2, result
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


def run_relay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEVTUNNEL, "relay", *args], capture_output=True, text=True, timeout=30)


def test_relay_prints_listening_line_serves_and_exits_0_on_sigint(tmp_path: Path, procs: list[Proc]) -> None:
    port = free_port()
    tokens = tmp_path / "tokens"
    tokens.write_text("# agents of the payments team\n\nfirst-token\n  second-token  \n")
    proc = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens), "--domain", "t.test"])
    procs.append(proc)
    line = proc.line(lambda l: True)  # the first line, without its end
    assert line == f"Relay listening on http://127.0.0.1:{port} (tunnels at http://NAME.t.test:{port})"
    r = httpx.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": "t.test"})
    assert (r.status_code, r.text) == (200, "ok\n")
    assert proc.stop(signal.SIGINT) == 0


@pytest.mark.parametrize("where", ["file", "flag"])
def test_the_listening_line_shows_a_domain_or_public_url_from_a_settings_file(
        tmp_path: Path, procs: list[Proc], where: str) -> None:
    """A cloned project's devtunnel.toml names the domain (a domain holding ESC ... BEL is now
    refused, see below; a valid one is lowercased), and so does --public-url (its host is checked
    as the domain is: ``test_a_public_url_host_that_is_no_host_name_is_refused``)."""
    port = free_port()
    args = [*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}"]
    env = {k: v for k, v in os.environ.items() if k != "DEVTUNNEL_CONFIG"}
    if where == "file":
        (tmp_path / "devtunnel.toml").write_text('[relay_server]\ndomain = "T.Example."\n')
        shown = f"http://NAME.t.example:{port}"
    else:
        args += ["--public-url", "https://Tunnel.Example:8443/", "--domain", "tunnel.example"]
        shown = "https://NAME.tunnel.example:8443"
    proc = Proc(args, env, cwd=tmp_path)
    procs.append(proc)
    line = proc.line(lambda l: True)
    assert line == f"Relay listening on http://127.0.0.1:{port} (tunnels at {shown})", line
    assert proc.stop(signal.SIGINT) == 0


@pytest.mark.parametrize(
    ("value", "says"),
    [('"t\\u001b]0;pwned\\u0007.test"', "relay_server.domain: 't\\x1b]0;pwned\\x07.test' is not a host name"),
     ('"a/b"', "relay_server.domain: 'a/b' is not a host name: only letters a-z, digits, '-' and '.' are allowed"),
     ('"tunnel..example.com"', "relay_server.domain: 'tunnel..example.com' is not a host name: it has an empty label"),
     ('""', "relay_server.domain: the domain is empty"),
     ("5", "relay_server.domain: expected a host name such as tunnel.example.com, got an integer")],
    ids=["escape", "slash", "empty-label", "empty", "integer"],
)
def test_a_domain_in_a_settings_file_is_checked_as_the_flag_is(tmp_path: Path, value: str, says: str) -> None:
    """``[relay_server] domain`` took any string: a relay served ``NAME.a/b``, or printed a domain
    holding ESC ... BEL. It goes through the rule of ``--domain`` now, with the file and key named."""
    (tmp_path / "devtunnel.toml").write_text(f"[relay_server]\ndomain = {value}\n")
    env = {k: v for k, v in os.environ.items() if k != "DEVTUNNEL_CONFIG"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    done = subprocess.run([*DEVTUNNEL, "relay", "--listen", "127.0.0.1:0"], capture_output=True, text=True,
                          timeout=30, cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert f"{tmp_path / 'devtunnel.toml'}:2: {says}" in line, line
    assert "\x1b" not in line and "\x07" not in line and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("url", "says"),
    [("https://x\x1b\x07\u202e.example", "'x\\x1b\\x07\\u202e.example' is not a host name"),
     ("https://x%1b.example", "'x%1b.example' is not a host name"),
     ("http://a b.example", "'a b.example' is not a host name"),
     ("https://tunnel..example", "'tunnel..example' is not a host name: it has an empty label"),
     # A tunnel's URL is NAME.HOST: NAME.127.0.0.1 and NAME.::1 are no addresses at all.
     ("http://127.0.0.1:8000", "127.0.0.1 is an IP address, and a tunnel's URL is NAME.HOST"),
     ("https://[::1]:8443", "::1 is an IP address, and a tunnel's URL is NAME.HOST")],
    ids=["escape", "percent", "space", "empty-label", "ipv4", "ipv6"],
)
def test_a_public_url_host_that_is_no_host_name_is_refused(url: str, says: str) -> None:
    """--public-url's host went to every agent in its tunnel's URL (WELCOME) whatever it held:
    only its printed line was escaped. A host that is no host name (an IP address included: no
    tunnel URL can be made of it) is refused in one line, exit 2, and the relay does not start."""
    result = run_relay("--listen", "127.0.0.1:0", "--public-url", url)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert f"--public-url: {says}" in line, line
    assert "\x1b" not in line and "\x07" not in line and "Traceback" not in result.stderr


@pytest.mark.parametrize(("url", "domain"), [("https://tunnel.example.com", "tunnel.example.com"),
                                           ("http://tunnels.localhost:8000", "tunnels.localhost"),
                                           ("https://T.Example.:8443", "t.example")])
def test_a_public_url_with_a_host_name_is_taken(url: str, domain: str) -> None:
    flags = ["relay", "--listen", "127.0.0.1:0", "--public-url", url, "--domain", domain]
    settings = settings_from_args(resolve_relay(build_parser().parse_args(flags)))
    assert settings.public_url == url


def test_a_public_url_on_another_host_than_the_domain_is_refused(tmp_path: Path) -> None:
    """``--public-url https://tunnel.example.com`` without ``--domain`` (or with another one)
    started: the relay routed ``NAME.localhost`` while every agent printed, and handed out,
    ``https://NAME.tunnel.example.com``, which answered 404 (the proxies of docs/relay.md pass
    the client's Host on). Refused now in one line, exit 2, naming the --domain to give; from a
    settings file's domain too."""
    result = run_relay("--listen", "127.0.0.1:0", "--public-url", "https://tunnel.example.com")
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert ("--public-url 'https://tunnel.example.com': its host tunnel.example.com is not the relay's domain "
            "localhost (--domain)") in line, line
    assert "give --domain tunnel.example.com" in line, line
    (tmp_path / "devtunnel.toml").write_text('[relay_server]\ndomain = "other.example"\n')
    env = {k: v for k, v in os.environ.items() if k != "DEVTUNNEL_CONFIG"}
    env["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    done = subprocess.run([*DEVTUNNEL, "relay", "--listen", "127.0.0.1:0", "--public-url", "https://tunnel.example.com"],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path, env=env)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "is not the relay's domain other.example" in done.stderr and "Traceback" not in done.stderr


def test_relay_exits_0_on_sigterm(procs: list[Proc]) -> None:
    port = free_port()
    proc = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}"])
    procs.append(proc)
    assert proc.line(lambda l: True).startswith("Relay listening on")
    assert proc.stop(signal.SIGTERM) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--listen", "0.0.0.0:8000"], "without a token"),
        (["--listen", "nonsense"], "expected HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "expected HOST:PORT"),
        (["--max-body", "ten megs"], "is not a size"),
        (["--head-timeout", "0"], "--head-timeout"),
        (["--body-timeout", "0"], "--body-timeout"),
        (["--body-timeout", "inf"], "--body-timeout"),
        (["--client-share", "0"], "--client-share"),
        (["--client-share", "1.5"], "--client-share"),
        (["--tunnels-per-token", "-1"], "--tunnels-per-token: expected a whole number of 0 or more, not '-1'"),
        (["--tunnels-per-token", "many"], "--tunnels-per-token: expected a whole number of 0 or more, not 'many'"),
        (["--tunnels-per-token", "2.5"], "--tunnels-per-token: expected a whole number of 0 or more, not '2.5'"),
        (["--connections-per-token", "-1"], "--connections-per-token: expected a whole number of 0 or more, not '-1'"),
        (["--connections-per-token", "lots"], "--connections-per-token: expected a whole number of 0 or more, not 'lots'"),
        (["--connections-per-token", "1e3"], "--connections-per-token: expected a whole number of 0 or more, not '1e3'"),
        (["--drain-timeout", "-1"], "--drain-timeout: expected a duration such as 30s, 500ms or 2m (0 to 24h), got '-1'"),
        (["--drain-timeout", "soon"], "--drain-timeout: expected a duration such as 30s, 500ms or 2m, got 'soon'"),
        (["--drain-timeout", "inf"], "--drain-timeout: expected a duration such as 30s, 500ms or 2m (0 to 24h), got 'inf'"),
        (["--drain-timeout", "nan"], "--drain-timeout: expected a duration such as 30s, 500ms or 2m (0 to 24h), got 'nan'"),
        (["--drain-timeout", "25h"], "--drain-timeout: expected a duration such as 30s, 500ms or 2m (0 to 24h), got '25h'"),
        (["--drain-timeout", ""], "--drain-timeout: expected a duration such as 30s, 500ms or 2m, got ''"),
        (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"], "no such file"),
        (["--tokens-file", "/nonexistent/tokens"], "cannot read it"),
        (["--token", ""], "--token: a token cannot be empty"),
        (["--token", "two words"], "--token: a token cannot hold spaces or control characters: its character 4 of 9 is a space"
                                  " (the token is not shown: it is a secret)"),
        (["--token", "pasted\n"], "--token: a token cannot hold spaces or control characters: its character 7 of 7 is a line feed"),
        (["--public-url", "tunnel.example.com"], "expected http(s)://HOST"),
    ],
)
def test_bad_flag_values_give_one_line_error_and_exit_2(args: list[str], message: str) -> None:
    result = run_relay(*args)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert message in lines[0]


def test_a_tokens_file_line_no_agent_could_send_is_refused_by_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# team\nfirst-token\nsecond token\n")
    result = run_relay("--tokens-file", str(tokens))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "line 3: a token cannot hold spaces or control characters: its character 7 of 12 is a space" in lines[0]
    assert "second" not in result.stderr


def test_a_tokens_file_other_users_can_read_is_said_in_a_note_and_used(tmp_path: Path, procs: list[Proc]) -> None:
    """Not refused (a container's secret mount is 0444), but said: on a shared server anyone
    who can read the file can open tunnels on the relay."""
    tokens = tmp_path / "tokens"
    tokens.write_text("first-token\n")
    for mode, noted in ((0o644, True), (0o600, False)):
        tokens.chmod(mode)
        port = free_port()
        proc = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}", "--tokens-file", str(tokens)])
        procs.append(proc)
        assert proc.line(lambda l: True).startswith("Relay listening on ")
        assert proc.stop(signal.SIGINT) == 0
        for thread in proc._threads:
            thread.join(10)  # every line of stderr read
        note = (f"devtunnel relay: note: --tokens-file {tokens} can be read by other users (mode 644), and its tokens"
                f" open tunnels on this relay: chmod 600 {tokens} where other users log in")
        assert (note in proc.err) is noted, proc.err
        assert "first-token" not in "\n".join(proc.err)


def test_port_already_in_use_gives_one_line_error_and_exit_2() -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_relay("--listen", f"127.0.0.1:{port}")
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "size"),
    [("0", 0), ("17", 17), ("512k", 512 << 10), ("10mb", 10 << 20), ("10MB", 10 << 20), ("1.5 GiB", 3 << 29), ("2kib", 2048)],
)
def test_sizes_parse_with_binary_units(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "mb", "-1", "10 zb", "1e3"])
def test_bad_sizes_are_refused_with_a_clear_error(text: str) -> None:
    with pytest.raises(ConfigError, match="is not a size"):
        parse_size(text)


def test_sizes_format_briefly() -> None:
    assert [format_size(n) for n in (17, 64 << 10, 10 << 20, 3 << 29)] == ["17 B", "64 KiB", "10 MiB", "1.5 GiB"]


def test_random_names_are_readable_dns_labels() -> None:
    rng = random.Random(7)
    names = {random_name(rng) for _ in range(200)}
    assert len(names) > 190
    for name in names:
        assert validate_name(name) == name
        adjective, animal, number = name.split("-")
        assert adjective.isalpha() and animal.isalpha() and len(number) == 4


@pytest.mark.parametrize(
    ("name", "why"),
    [("", "empty"), ("a" * 64, "64 characters"), ("-edge", "starts or ends"), ("under_score", "only letters")],
)
def test_invalid_names_say_why(name: str, why: str) -> None:
    with pytest.raises(ConfigError, match="not a valid DNS label") as info:
        validate_name(name)
    assert why in str(info.value)


@pytest.mark.parametrize("name", ["xn--pple-43d", "XN--stripe-hooks-ab1", "ab--cd", "12--3"])
def test_reserved_labels_are_refused_as_names_a_browser_may_show_as_other_letters(name: str) -> None:
    with pytest.raises(ConfigError, match=r"is reserved: '--' as its 3rd and 4th characters .*punycode"):
        validate_name(name)


@pytest.mark.parametrize("name", ["a--b", "abc--d", "stripe--hooks", "x-n--b"])
def test_a_double_hyphen_elsewhere_is_a_name(name: str) -> None:
    assert validate_name(name) == name


def test_names_are_lowercased() -> None:
    assert validate_name("Payments-API") == "payments-api"


def test_relay_listening_line_shows_https_with_tls(tmp_path: Path, procs: list[Proc]) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("t.test", "*.t.test")
    chain, key = tmp_path / "chain.pem", tmp_path / "key.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(chain))
    cert.private_key_pem.write_to_path(str(key))
    port = free_port()
    proc = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}", "--domain", "t.test", "--tls-cert", str(chain),
                 "--tls-key", str(key)])
    procs.append(proc)
    line = proc.line(lambda l: True)  # the first line, without its end
    assert line == f"Relay listening on https://127.0.0.1:{port} (tunnels at https://NAME.t.test:{port})"
    assert proc.stop(signal.SIGINT) == 0


def test_unusable_tls_files_give_one_line_error_and_exit_2(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("not a certificate\n")
    key.write_text("not a key\n")
    result = run_relay("--listen", f"127.0.0.1:{free_port()}", "--tls-cert", str(cert), "--tls-key", str(key))
    assert result.returncode == 2
    assert "cannot use the TLS certificate" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0.0.0.0:443", ("0.0.0.0", 443)), ("[::1]:8000", ("::1", 8000)), ("8000", ("127.0.0.1", 8000)),
     (":8000", ("0.0.0.0", 8000)), ("localhost:0", ("localhost", 0))],
)
def test_listen_addresses_parse(text: str, expected: tuple[str, int]) -> None:
    assert parse_listen(text) == expected


def test_only_loopback_addresses_may_go_without_a_token() -> None:
    assert [is_loopback(h) for h in ("127.0.0.1", "::1", "localhost", "0.0.0.0", "::", "example.com")] == [
        True, True, True, False, False, False]



def test_body_timeout_and_client_share_flags_reach_the_relay_settings(
    tmp_path: Path, relay_settings: Callable[..., RelaySettings]
) -> None:
    settings = relay_settings
    given = settings("--body-timeout", "0.5", "--client-share", "0.5")
    assert (given.body_timeout, given.client_share) == (0.5, 0.5)
    defaults = settings()
    assert (defaults.body_timeout, defaults.client_share) == (30.0, 0.25)


def test_relay_server_section_sets_body_timeout_and_client_share_unless_flags_do(
    tmp_path: Path, relay_settings: Callable[..., RelaySettings]
) -> None:
    settings = relay_settings
    (tmp_path / "devtunnel.toml").write_text("[relay_server]\nbody_timeout = 5\nclient_share = 0.5\n")
    from_file = settings()
    assert (from_file.body_timeout, from_file.client_share) == (5.0, 0.5)
    from_flags = settings("--body-timeout", "7", "--client-share", "1")
    assert (from_flags.body_timeout, from_flags.client_share) == (7.0, 1.0)


def test_a_client_share_out_of_range_in_the_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert "relay_server.client_share: expected a fraction more than 0 and at most 1, got 2" in refusal_of_file(tmp_path, "[relay_server]\nclient_share = 2\n")


def test_tunnels_per_token_comes_from_the_flag_then_the_file_then_the_default(
    tmp_path: Path, relay_settings: Callable[..., RelaySettings]
) -> None:
    settings = relay_settings
    assert settings().tunnels_per_token == 32
    (tmp_path / "devtunnel.toml").write_text("[relay_server]\ntunnels_per_token = 4\n")
    assert settings().tunnels_per_token == 4
    assert settings("--tunnels-per-token", "0").tunnels_per_token == 0


def test_a_negative_tunnels_per_token_in_the_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert "relay_server.tunnels_per_token: expected an integer of 0 or more, got -1" in refusal_of_file(tmp_path, "[relay_server]\ntunnels_per_token = -1\n")


def test_connections_per_token_comes_from_the_flag_then_the_file_then_the_default(
    tmp_path: Path, relay_settings: Callable[..., RelaySettings]
) -> None:
    settings = relay_settings
    assert settings().connections_per_token == 64
    (tmp_path / "devtunnel.toml").write_text("[relay_server]\nconnections_per_token = 8\n")
    assert settings().connections_per_token == 8
    assert settings("--connections-per-token", "0").connections_per_token == 0


def test_the_pending_limits_come_from_the_flag_then_the_file_then_the_default(
    tmp_path: Path, relay_settings: Callable[..., RelaySettings]
) -> None:
    settings = relay_settings
    assert (settings().pending_per_address, settings().pending_connections) == (256, 0)
    (tmp_path / "devtunnel.toml").write_text("[relay_server]\npending_per_address = 16\nmax_pending = 100\n")
    assert (settings().pending_per_address, settings().pending_connections) == (16, 100)
    flagged = settings("--pending-per-address", "0", "--max-pending", "7")
    assert (flagged.pending_per_address, flagged.pending_connections) == (0, 7)


def test_the_connection_cap_and_body_rate_come_from_the_flag_then_the_file_then_the_default(
    tmp_path: Path, relay_settings: Callable[..., RelaySettings]
) -> None:
    settings = relay_settings
    assert (settings().connections_per_address, settings().body_min_rate) == (None, 500)  # None: from the fd limit
    (tmp_path / "devtunnel.toml").write_text('[relay_server]\nconnections_per_address = 64\nbody_min_rate = "2k"\n')
    assert (settings().connections_per_address, settings().body_min_rate) == (64, 2048)
    flagged = settings("--connections-per-address", "0", "--body-min-rate", "0")
    assert (flagged.connections_per_address, flagged.body_min_rate) == (0, 0)


def test_a_negative_pending_limit_in_the_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    assert "relay_server.max_pending: expected an integer of 0 or more, got -1" in refusal_of_file(
        tmp_path, "[relay_server]\nmax_pending = -1\n")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "relay_server.connections_per_token: expected an integer of 0 or more, got -1"),
        ('"many"', "relay_server.connections_per_token: expected an integer, got 'many'"),
        ("2.5", "relay_server.connections_per_token: expected an integer, got a number"),
    ],
)
def test_a_bad_connections_per_token_in_the_file_is_one_line_and_exit_2(tmp_path: Path, value: str, message: str) -> None:
    assert message in refusal_of_file(tmp_path, f"[relay_server]\nconnections_per_token = {value}\n")


def test_drain_timeout_comes_from_the_flag_then_the_file_then_the_default(
    tmp_path: Path, relay_settings: Callable[..., RelaySettings]
) -> None:
    settings = relay_settings
    assert settings().drain_timeout == 10
    (tmp_path / "devtunnel.toml").write_text('[relay_server]\ndrain_timeout = "1m"\n')
    assert settings().drain_timeout == 60
    (tmp_path / "devtunnel.toml").write_text("[relay_server]\ndrain_timeout = 2.5\n")
    assert settings().drain_timeout == 2.5
    assert settings("--drain-timeout", "0").drain_timeout == 0
    assert settings("--drain-timeout", "30s").drain_timeout == 30
    assert settings("--drain-timeout", "45").drain_timeout == 45


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "relay_server.drain_timeout: expected a duration such as 30s, 500ms or 2m (0 to 24h), got -1"),
        ('"soon"', "relay_server.drain_timeout: expected a duration such as 30s, 500ms or 2m, got 'soon'"),
        ("inf", "relay_server.drain_timeout: expected a duration such as 30s, 500ms or 2m (0 to 24h), got inf"),
        ("true", "relay_server.drain_timeout: expected a duration such as 30s, 500ms or 2m, got a boolean"),
    ],
)
def test_a_bad_drain_timeout_in_the_file_is_one_line_and_exit_2(tmp_path: Path, value: str, message: str) -> None:
    assert message in refusal_of_file(tmp_path, f"[relay_server]\ndrain_timeout = {value}\n")
