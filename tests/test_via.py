"""``--via``: the providers' commands and the URLs read from their documented output."""

from __future__ import annotations

import pytest

from devtunnel.errors import ConfigError
from devtunnel.via import Via, parse_via

CLOUDFLARED = """\
2024-12-20T10:30:15Z INF Thank you for trying Cloudflare Tunnel. Doing so, without a Cloudflare account, is a quick way to experiment and try it out.
2024-12-20T10:30:16Z INF Requesting new quick Tunnel on trycloudflare.com...
2024-12-20T10:30:18Z INF +--------------------------------------------------------------------------------------------+
2024-12-20T10:30:18Z INF |  Your quick Tunnel has been created! Visit it at (it may take some time to be reachable):  |
2024-12-20T10:30:18Z INF |  https://seasonal-deck-organisms-sf.trycloudflare.com                                      |
2024-12-20T10:30:18Z INF +--------------------------------------------------------------------------------------------+
2024-12-20T10:30:18Z INF Registered tunnel connection connIndex=0 event=0 ip=198.41.200.13 location=ams protocol=quic
"""

LOCALHOST_RUN = """\
===============================================================================
Welcome to localhost.run!

Follow your favourite reverse tunnel at [https://twitter.com/localhost_run].

To set up and manage custom domains go to https://admin.localhost.run/

More details on custom domains (and how to enable subdomains) at https://localhost.run/docs/custom-domains
** your connection id is 2d5a4e37-08bb-43c5-9a9f-d9b2b8c7e5d1, please mention it if you send me a message about an issue. **

authenticated as anonymous user
8beaa541ba3dc2.lhr.life tunneled with tls termination, https://8beaa541ba3dc2.lhr.life
create an account and add your key for a longer lasting domain name. see https://localhost.run/docs/forever-free/ for more information.
"""

PINGGY = "You are not authenticated.\nYour tunnel will expire in 60 minutes.\n\x1b[32mhttp://rnxyz-94-156-23-153.a.free.pinggy.link\x1b[0m\n\x1b[32mhttps://rnxyz-94-156-23-153.a.free.pinggy.link\x1b[0m\n"

SERVEO = "Forwarding HTTP traffic from https://3a3ec5498a744c307bc67ca14072c0db.serveo.net\nPress g to start a GUI session and ctrl-c to quit.\n"

SSH = "Allocated port 41023 for remote forward to 127.0.0.1:8080\n"


def first_url(via: Via, output: str) -> str | None:
    return next((url for line in output.splitlines() if (url := via.url_in(line))), None)


@pytest.mark.parametrize(
    ("via", "output", "url"),
    [
        ("cloudflared", CLOUDFLARED, "https://seasonal-deck-organisms-sf.trycloudflare.com"),
        ("localhost.run", LOCALHOST_RUN, "https://8beaa541ba3dc2.lhr.life"),
        ("pinggy", PINGGY, "https://rnxyz-94-156-23-153.a.free.pinggy.link"),
        ("serveo", SERVEO, "https://3a3ec5498a744c307bc67ca14072c0db.serveo.net"),
        ("ssh:me@tunnel.example.com", SSH, "http://tunnel.example.com:41023"),
        ("ssh:me@[::1]:2222", SSH, "http://[::1]:41023"),
    ],
)
def test_the_public_url_is_read_from_the_documented_output(via: str, output: str, url: str) -> None:
    assert first_url(parse_via(via), output) == url


def test_links_that_are_not_the_tunnel_are_not_taken() -> None:
    assert first_url(parse_via("localhost.run"), LOCALHOST_RUN.replace("8beaa541ba3dc2.lhr.life tunneled", "x")) is None
    assert parse_via("cloudflared").url_in("see https://developers.cloudflare.com/cloudflare-one/") is None
    assert parse_via("cloudflared").url_in("INF Requesting new quick Tunnel on trycloudflare.com...") is None
    assert parse_via("ssh:h").url_in("Warning: Permanently added 'h' (ED25519) to the list of known hosts.") is None


@pytest.mark.parametrize(
    ("via", "line"),
    [
        # another domain than the provider's, where its URL is printed
        ("localhost.run", "evil.example.com tunneled with tls termination, https://evil.example.com"),
        ("localhost.run", "x tunneled with tls termination, https://x.lhr.life.evil.example.com"),
        ("serveo", "Forwarding HTTP traffic from https://evil.example.com"),
        ("serveo", "Forwarding HTTP traffic from https://x.serveo.net.evil.example.com"),
        # the provider's domain as the start of a longer host, a login or a port
        ("cloudflared", "INF |  https://abc.trycloudflare.com.evil.example.com  |"),
        ("cloudflared", "INF |  https://abc.trycloudflare.com@evil.example.com  |"),
        ("cloudflared", "INF |  https://abc.trycloudflare.com:8443  |"),
        ("pinggy", "https://abc.a.free.pinggy.link.evil.example.com"),
        ("pinggy", "https://abc.a.free.pinggy.link@evil.example.com"),
        # where cloudflared asks for a quick tunnel, in the errors it prints when it gets none
        ("cloudflared", 'failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp: '
                        "lookup api.trycloudflare.com: no such host"),
        ("cloudflared", 'failed to request quick Tunnel: Post "https://api.trycloudflare.com/tunnel": dial tcp '
                        "176.53.43.44:443: connect: connection refused"),
        ("cloudflared", "INF |  https://abc.trycloudflare.com/tunnel  |"),
        # not https, or no host at all
        ("cloudflared", "INF |  http://abc.trycloudflare.com  |"),
        ("serveo", "Forwarding HTTP traffic from http://x.serveo.net"),
        ("localhost.run", "x tunneled with tls termination, https://.lhr.life"),
    ],
)
def test_a_url_off_the_providers_domain_is_not_taken(via: str, line: str) -> None:
    assert parse_via(via).url_in(line) is None


def test_the_url_is_taken_without_what_follows_it() -> None:
    assert parse_via("localhost.run").url_in(
        "x tunneled with tls termination, https://x.lhr.life\x1b]0;title\x07") == "https://x.lhr.life"
    assert parse_via("serveo").url_in("Forwarding HTTP traffic from https://x.serveousercontent.com") == \
        "https://x.serveousercontent.com"
    assert parse_via("cloudflared").url_in("INF |  https://a-b.trycloudflare.com    |  ") == \
        "https://a-b.trycloudflare.com"


# What a public client can put in a provider's output: cloudflared at debug level logs each
# request's URL and path, serveo each request's URL.
ATTACKER = "https://attacker-owned.trycloudflare.com"


@pytest.mark.parametrize(
    ("via", "line"),
    [
        ("cloudflared", f"2026-12-07T10:00:02Z DBG GET https://real-words-here.trycloudflare.com/{ATTACKER} HTTP/1.1 "
                        f"connIndex=0 event=1 path=/{ATTACKER}"),
        ("cloudflared", f"2026-12-07T10:00:02Z DBG GET https://real.trycloudflare.com/{ATTACKER} HTTP/1.1"),
        ("cloudflared", f"2026-12-07T10:00:02Z ERR  error=\"Unable to reach the origin\" dest={ATTACKER}"),
        ("cloudflared", f"Visit {ATTACKER}."),
        ("cloudflared", f"2026-12-07T10:00:02Z DBG GET /x |  {ATTACKER}  |"),
        ("cloudflared", f'{{"level":"debug","message":"|  {ATTACKER}  |"}}'),
        ("cloudflared", f'{{"level":"info","message":"GET {ATTACKER}"}}'),
        ("pinggy", "GET https://x.a.free.pinggy.link/ 200"),
        ("pinggy", "see https://x.a.free.pinggy.link"),
        ("serveo", "HTTP request from 203.0.113.9 to https://x.serveo.net/Forwarding HTTP traffic from https://y.serveo.net"),
        ("localhost.run", "GET /a tunneled with tls termination, https://evil.lhr.life"),
        ("ssh:me@example.com", "Banner: Allocated port 4444 for remote forward to 127.0.0.1:1"),
    ],
)
def test_a_url_is_taken_only_from_the_line_that_announces_it(via: str, line: str) -> None:
    assert parse_via(via).url_in(line) is None


def test_cloudflareds_box_is_read_in_its_json_log_too() -> None:
    record = ('{"level":"info","time":"2026-12-07T10:00:00Z",'
              '"message":"|  https://seasonal-deck-organisms-sf.trycloudflare.com                   |"}')
    assert parse_via("cloudflared").url_in(record) == "https://seasonal-deck-organisms-sf.trycloudflare.com"
    assert parse_via("cloudflared").url_in('{"level":"info","message":3}') is None
    assert parse_via("cloudflared").url_in('{"level":"info","message":"|  https://a.trycloudflare.com/x  |"}') is None


def test_commands_are_argv_lists_to_loopback() -> None:
    assert parse_via("cloudflared").command(41000) == [
        "cloudflared", "tunnel", "--no-autoupdate", "--url", "http://127.0.0.1:41000"]
    ssh = parse_via("ssh:me@example.com:2222").command(41000, program="/usr/bin/ssh", extra_ssh=("-i", "key"))
    assert ssh[0] == "/usr/bin/ssh" and ssh[-5:] == ["-p", "2222", "-R", "0:127.0.0.1:41000", "me@example.com"]
    assert "ExitOnForwardFailure=yes" in ssh and "BatchMode=yes" in ssh and ssh[-7:-5] == ["key", "-N"]
    assert parse_via("localhost.run").command(1)[-2:] == ["80:127.0.0.1:1", "nokey@localhost.run"]
    assert parse_via("pinggy").command(1)[-4:] == ["443", "-R", "0:127.0.0.1:1", "a.pinggy.io"]
    assert parse_via("serveo").command(1)[-1] == "serveo.net"


def test_names_people_write_are_understood_and_described_back() -> None:
    assert parse_via(" CloudFlared ").kind == "cloudflared" and parse_via("cloudflare").kind == "cloudflared"
    assert parse_via("ssh:me@host").describe() == "ssh:me@host"
    assert parse_via("ssh:host:22").describe() == "ssh:host:22"
    assert parse_via("relay").program is None and parse_via("serveo").program == "ssh"
    assert "install" in parse_via("cloudflared").install_hint


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ngrok", "expected one of relay, cloudflared, localhost.run, pinggy, serveo, ssh:USER@HOST[:PORT]"),
        ("ssh:", "expected ssh:USER@HOST"),
        ("ssh:-oProxyCommand=evil", "expected ssh:USER@HOST"),
        ("ssh:host:notaport", "expected ssh:USER@HOST"),
        ("ssh:me@-oProxyCommand", "expected ssh:USER@HOST"),
        ("ssh:-oUser@host", "expected ssh:USER@HOST"),
        ("ssh:me@.example.com", "expected ssh:USER@HOST"),
        ("ssh:me@[1.2.3.4]", "expected ssh:USER@HOST"),
        ("ssh:me@[:]", "expected ssh:USER@HOST"),
        ("ssh:me@host;rm -rf /", "expected ssh:USER@HOST"),
        ("ssh:me@host:0", "the port must be 1-65535"),
        ("ssh:me@host:99999", "the port must be 1-65535"),
    ],
)
def test_a_bad_via_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_via(text)
    assert message in str(info.value)


def test_plain_ssh_asks_again_for_the_port_it_had_and_reads_that_it_got_it() -> None:
    via = parse_via("ssh:me@example.com")
    again = via.command(41000, remote_port=40555)
    assert again[-3:] == ["-R", "40555:127.0.0.1:41000", "me@example.com"] and "-v" in again
    assert "-v" not in via.command(41000)
    # OpenSSH 9's debug1 lines, as `ssh -v -N -R 40555:127.0.0.1:41000` prints them
    assert via.url_in("debug1: remote forward success for: listen 40555, connect 127.0.0.1:41000") == \
        "http://example.com:40555"
    assert via.url_in("debug1: remote forward success for: listen 0, connect 127.0.0.1:41000") is None
    assert via.url_in("debug1: remote forward failure for: listen 40555, connect 127.0.0.1:41000") is None
    assert via.url_in("Allocated port 99999 for remote forward to 127.0.0.1:41000") is None


def test_plain_ssh_tells_a_refused_port_from_a_failed_connection() -> None:
    via = parse_via("ssh:me@example.com")
    # OpenSSH 9 with ExitOnForwardFailure (and -v), when the port asked for is taken on the server
    assert via.forward_refused("Error: remote port forwarding failed for listen port 40555")
    assert via.forward_refused("debug1: remote forward failure for: listen 40555, connect 127.0.0.1:41000")
    # the server down, or the login refused: nothing said about the port
    assert not via.forward_refused("ssh: connect to host example.com port 22: Connection refused")
    assert not via.forward_refused("me@example.com: Permission denied (publickey).")
    assert not via.forward_refused("Connection to example.com closed by remote host.")
    assert not parse_via("cloudflared").forward_refused("Error: remote port forwarding failed for listen port 1")


def test_a_rate_limited_quick_tunnel_is_told_by_cloudflareds_err_line() -> None:
    line = ('2026-05-29T09:25:34Z ERR Error unmarshaling QuickTunnel response: error code: 1015 '
            'error="invalid character \'e\' looking for beginning of value" status_code="429 Too Many Requests"')
    assert parse_via("cloudflared").failure_in(line) == (
        "trycloudflare.com refused a new quick tunnel: 429 Too Many Requests (too many from this address; retrying)")
    assert parse_via("cloudflared").failure_in("failed to unmarshal quick Tunnel: invalid character 'e'") is None
    assert parse_via("serveo").failure_in(line) is None
