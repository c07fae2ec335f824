"""Rules from the command line and devtunnel.toml, through the CLI as a subprocess."""

from __future__ import annotations

import json
import subprocess
import tomllib
from pathlib import Path

import pytest

from devtunnel.exit_codes import EXIT_USAGE
from tests.helpers import free_port
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, env, procs, start  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)



def run(env: dict[str, str], *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=60,
                          stdin=subprocess.DEVNULL)


def test_a_bad_rules_file_stops_the_agent_with_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    rules = tmp_path / "edge.toml"
    rules.write_text('[[rules]]\naction = "deny"\n\n[[rules]]\naction = "respond"\nmatch = "path:/a stauts:500"\n')
    done = run(env, "http", "9", "--no-tui", "--api-port", "0", "--rules", str(rules))
    assert done.returncode == EXIT_USAGE
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"devtunnel: {rules}: rule 2: match: column 9: unknown field 'stauts'")
    assert "Traceback" not in done.stderr and not done.stdout


def test_a_rule_matching_what_only_the_agent_knows_is_refused_not_left_to_never_match(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """``provider:stripe`` or ``-sig:valid`` in a rule: the relay has no webhook secrets nor
    records, so the drill would never fire (or, negated, deny everything); it is refused."""
    rules = tmp_path / "edge.toml"
    rules.write_text('[[rules]]\nmatch = "provider:stripe"\naction = "respond"\nstatus = 500\ncount = 3\n')
    done = run(env, "http", "9", "--no-tui", "--api-port", "0", "--rules", str(rules))
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip().splitlines() == [
        f"devtunnel: {rules}: rule 1: match: provider: is known only to the agent (its tunnel's records and webhook"
        " secrets); the relay deciding a rule never sees it (the rule would never match, or negated match every request)"
    ]


def test_a_bad_rule_in_devtunnel_toml_names_its_line(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "devtunnel.toml").write_text(
        '[tunnels.pay]\ntarget = 9\n\n[[tunnels.pay.rules]]\naction = "deny"\n\n'
        '[[tunnels.pay.rules]]\naction = "rate-limit"\nrate = "lots"\n'
    )
    done = run(env, "http", "pay", "--no-tui", "--api-port", "0", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip() == (
        f"devtunnel: {tmp_path / 'devtunnel.toml'}:7: tunnels.pay.rules: rule 2: rate: "
        "expected a rate like \"20/s\", \"600/m\" or \"1000/h\", not 'lots'"
    )


def test_two_password_rules_no_request_could_pass_stop_the_agent_with_one_line(tmp_path: Path, env: dict[str, str]) -> None:
    """``--basic-auth`` beside a ``basic-auth`` rule of devtunnel.toml with other users: every
    request to /admin needed two passwords in one Authorization header, and got 401 forever."""
    (tmp_path / "devtunnel.toml").write_text(
        '[tunnels.pay]\ntarget = 9\n\n[[tunnels.pay.rules]]\nmatch = "path:/admin"\naction = "basic-auth"\n'
        'users = ["bob:hunter2"]\n')
    (tmp_path / "devtunnel.toml").chmod(0o600)  # a password in clear: readable by others, a note would come first
    done = run(env, "http", "pay", "--no-tui", "--api-port", "0", "--basic-auth", "alice:s3cret", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip() == (
        "devtunnel: rule 2: users: no user in common with rule 1, and rule 1 asks every request for a password: one"
        " Authorization header passes only one of them, so those requests would always get 401; give both rules the"
        " same users, or keep one")
    assert "s3cret" not in done.stderr and "hunter2" not in done.stderr and not done.stdout
    # The relay's own rules file is held to the same.
    rules = tmp_path / "relay.toml"
    rules.write_text('[[rules]]\naction = "basic-auth"\nusers = ["ops:x"]\n\n'
                     '[[rules]]\naction = "basic-auth"\nusers = ["dev:y"]\nmatch = "path:/"\n')
    done = run(env, "relay", "--listen", "127.0.0.1:0", "--rules", str(rules))
    assert done.returncode == EXIT_USAGE
    assert done.stderr.startswith(f"devtunnel relay: error: {rules}: rule 2: users: no user in common with rule 1")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--rate-limit", "fast"], "devtunnel: --rate-limit: expected a rate like"),
        (["--allow-ip", "10.0.0.0/99"], "devtunnel: --allow-ip: '10.0.0.0/99' is not an IP address or CIDR"),
        (["--deny-ip", "10.0.0.1,nope"], "devtunnel: --deny-ip: 'nope' is not an IP address or CIDR"),
        (["--cidr-allow", "10.0.0.0/8,300.1.1.1"], "devtunnel: --allow-ip: '300.1.1.1' is not an IP address or CIDR"),
        (["--basic-auth", "admin"], "devtunnel: --basic-auth: each user is"),
        # two passwords for one user would both open the tunnel
        (["--basic-auth", "admin:old", "--basic-auth", "admin:new"],
         "devtunnel: --basic-auth: user 'admin' is given twice; keep one password per user"),
        (["--rules", "/nonexistent/edge.toml"], "devtunnel: /nonexistent/edge.toml: cannot read the rules file"),
        # ``--rules "$RULES"`` with RULES unset: said, not a tunnel started without its rules
        (["--rules", ""], "devtunnel: --rules must name a rules file, not empty text"),
    ],
)
def test_bad_shorthands_exit_2(env: dict[str, str], flags: list[str], message: str) -> None:
    done = run(env, "http", "9", "--no-tui", "--api-port", "0", *flags)
    assert done.returncode == EXIT_USAGE and done.stderr.startswith(message), done.stderr


def test_relay_refuses_a_forward_in_its_own_rules_and_a_bad_trusted_proxy(tmp_path: Path, env: dict[str, str]) -> None:
    rules = tmp_path / "relay.toml"
    rules.write_text('[[rules]]\naction = "forward"\ntarget = 8001\n')
    done = run(env, "relay", "--listen", "127.0.0.1:0", "--rules", str(rules))
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip() == (
        f"devtunnel relay: error: {rules}: rule 1: action: a relay's own rules cannot forward: only an agent knows its local targets"
    )
    done = run(env, "relay", "--listen", "127.0.0.1:0", "--trusted-proxy", "proxy")
    assert done.returncode == EXIT_USAGE and "--trusted-proxy 'proxy'" in done.stderr
    done = run(env, "relay", "--listen", "127.0.0.1:0", "--rules", "")
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip() == "devtunnel relay: error: --rules must name a rules file, not empty text"


def test_shorthands_guard_the_tunnel_and_requests_show_the_rule(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]  # noqa: F811
) -> None:
    port, state = local
    db = tmp_path / "captures.db"
    agent = start(procs, env, "http", str(port), "--no-tui", "--api-port", "0", "--db", str(db), "--port", str(free_port()),
                  "--allow-ip", "127.0.0.0/8", "--basic-auth", "admin:s3cret", "--rate-limit", "100/s")
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    url = f"http://127.0.0.1:{match.group(3)}/echo"
    curl = ["curl", "-sS", "--max-time", "20", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}"]
    assert subprocess.run([*curl, url], capture_output=True, text=True, timeout=30).stdout == "401"
    assert subprocess.run([*curl, "-u", "admin:s3cret", url], capture_output=True, text=True, timeout=30).stdout == "200"
    assert state.seen_targets == [b"/echo"]
    agent.line(lambda l: "401" in l)  # the agent logs the refused request too
    listed = json.loads(run(env, "requests", "--db", str(db), "--json", "--filter", "rule:basic-auth").stdout)
    assert [r["rule"] for r in listed] == [{"index": 2, "action": "basic-auth"}]
    table = run(env, "requests", "--db", str(db)).stdout
    assert "⊘ /echo" in table  # the refused request is marked in the table
    everything = json.loads(run(env, "requests", "--db", str(db), "--json").stdout)
    assert sorted(str(r["rule"]) for r in everything) == sorted(["None", str({"index": 2, "action": "basic-auth"})])


def test_relay_rules_from_a_file_apply_to_every_tunnel(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]  # noqa: F811
) -> None:
    port, state = local
    rules = tmp_path / "relay.toml"
    rules.write_text('[[rules]]\nmatch = "path:/private"\naction = "deny"\n')
    relay_port = free_port()
    relay = start(procs, env, "relay", "--listen", f"127.0.0.1:{relay_port}", "--token", "t", "--rules", str(rules),
                  "--trusted-proxy", "127.0.0.1")
    relay.line(lambda l: l.startswith("Relay listening"))
    agent = start(procs, env, "http", str(port), "--relay", f"ws://127.0.0.1:{relay_port}", "--token", "t",
                  "--name", "web", "--no-tui", "--api-port", "0", "--db", str(tmp_path / "captures.db"))
    agent.line(lambda l: l.startswith("Forwarding"))
    curl = ["curl", "-sS", "--max-time", "20", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}",
            "--resolve", f"web.localhost:{relay_port}:127.0.0.1"]
    url = f"http://web.localhost:{relay_port}"
    assert subprocess.run([*curl, url + "/private"], capture_output=True, text=True, timeout=30).stdout == "403"
    assert subprocess.run([*curl, url + "/echo"], capture_output=True, text=True, timeout=30).stdout == "200"
    assert state.seen_targets == [b"/echo"]
    line = agent.line(lambda l: "/private" in l)
    assert "403" in line


def test_the_inspectors_agent_gets_the_rules_in_a_private_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import argparse
    import stat

    from devtunnel.commands.inspect import http_agent_argv
    from devtunnel.rules import load_rules_file, parse_rules, renumbered

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    rules = renumbered(parse_rules([
        {"action": "basic-auth", "users": ["admin:s3cret"]},
        {"match": "path:/api", "action": "forward", "target": "8001"},
        {"match": "path:/hook", "action": "respond", "status": 500, "count": 3, "delay": "250ms"},
    ], "t"))
    args = argparse.Namespace(target="8000", api_port=4999, db=str(tmp_path / "c.db"), name="shop", host_header="preserve",
                              body_cap="10mb", body_budget="64mb", relay=None, token=None, port=0, no_record=False,
                              insecure=False,
                              rules=rules, settings=None)
    argv = http_agent_argv(args)()
    assert "s3cret" not in " ".join(argv)
    path = Path(argv[argv.index("--rules") + 1])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = load_rules_file(path)
    assert [(r.action, r.match, r.target, r.count, r.delay) for r in again] == [
        (r.action, r.match, r.target, r.count, r.delay) for r in rules
    ]
    assert again[0].users[0].accepts(b"s3cret")


def test_relay_server_rules_file_in_devtunnel_toml_is_read(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "relay.toml").write_text('[[rules]]\naction = "forward"\ntarget = 1\n')
    (tmp_path / "devtunnel.toml").write_text('[relay_server]\nrules_file = "relay.toml"\n')
    done = run(env, "relay", "--listen", "127.0.0.1:0", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE
    assert f"{tmp_path / 'relay.toml'}: rule 1: action: a relay's own rules cannot forward" in done.stderr


def test_deny_ip_and_ngroks_cidr_flags_guard_the_tunnel_at_the_relay(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]  # noqa: F811
) -> None:
    port, state = local
    curl = ["curl", "-sS", "--max-time", "20", "--noproxy", "*", "-o", "/dev/null", "-w", "%{http_code}"]

    def status_from(client: str, *flags: str) -> str:
        agent = start(procs, env, "http", str(port), "--no-tui", "--api-port", "0", "--no-record", "--name", "guarded",
                      "--port", str(free_port()), *flags)
        match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
        assert match is not None
        url = f"http://127.0.0.1:{match.group(3)}/echo"
        status = subprocess.run([*curl, "--interface", client, url], capture_output=True, text=True, timeout=30).stdout
        assert agent.stop() == 0
        return status

    # ngrok's --cidr-deny with two networks joined by a comma; the client 127.0.0.2 is in the second.
    assert status_from("127.0.0.2", "--cidr-deny", "10.0.0.0/8,127.0.0.2/32") == "403"
    assert status_from("127.0.0.3", "--deny-ip", "127.0.0.2") == "200"
    # A deny comes before an allow: allowed as a network, the one address refused.
    assert status_from("127.0.0.2", "--cidr-allow", "127.0.0.0/8", "--deny-ip", "127.0.0.2") == "403"
    assert status_from("127.0.0.4", "--cidr-allow", "127.0.0.0/8", "--deny-ip", "127.0.0.2") == "200"
    assert status_from("127.0.0.4", "--allow-ip", "10.0.0.0/8,127.0.0.5") == "403"
    assert state.seen_targets == [b"/echo", b"/echo"]


TOKEN = "Bearer sk_live_0123456789abcdef"


def test_a_header_a_rule_adds_reaches_the_service_and_no_listing_shows_its_value(
    tmp_path: Path, env: dict[str, str], procs: list[Proc], local: tuple[int, LocalState]  # noqa: F811
) -> None:
    # `--request-header-add "Authorization: Bearer ..."` was listed in clear by GET
    # /api/tunnels/NAME/rules, where basic-auth passwords were masked already.
    import httpx

    port, _ = local
    agent = start(procs, env, "http", str(port), "--no-tui", "--api-port", str(free_port()), "--name", "web",
                  "--port", str(free_port()), "--db", str(tmp_path / "captures.db"), "--request-header-add", f"Authorization: {TOKEN}",
                  "--response-header-add", "X-Edge: 1", "--basic-auth", "alice:s3cret")
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    api = agent.line(lambda l: l.startswith("API "))[4:]
    url = httpx.URL(match.group(1))
    answered = httpx.get(url.copy_with(host="127.0.0.1", path="/echo"), auth=("alice", "s3cret"), trust_env=False,
                         headers={"Host": url.netloc.decode()}, timeout=20)
    assert answered.status_code == 200 and answered.headers["x-edge"] == "1"
    seen = {name.lower(): value for name, value in json.loads(answered.content)["headers"]}
    assert seen["authorization"] == TOKEN  # added at the relay, in place of the client's credentials
    with httpx.Client(base_url=api, trust_env=False, timeout=20) as client:
        listed = client.get("/api/tunnels/web/rules").json()["rules"]
        assert [(r["action"], r.get("users"), r.get("request"), r.get("response")) for r in listed] == [
            ("basic-auth", ["alice:********"], None, None),
            ("headers", None, {"set": {"Authorization": "********"}}, {"set": {"X-Edge": "********"}}),
        ]
        added = client.post("/api/tunnels/web/rules?position=last",
                            json={"action": "headers", "request": {"set": {"X-Api-Key": TOKEN}}})
        assert added.status_code == 201 and added.json()["request"] == {"set": {"X-Api-Key": "********"}}, added.text
        # A listed rule posted back as it was listed would send the service eight stars.
        again = client.post("/api/tunnels/web/rules", json={k: v for k, v in listed[1].items()
                                                            if k not in ("index", "description")})
        assert again.status_code == 400 and "is ********, what a listing shows" in again.json()["msg"], again.text
        for path in ("/api/tunnels", "/api/endpoints", "/api/tunnels/web", "/api/tunnels/web/rules"):
            shown = client.get(path)
            assert shown.status_code == 200 and TOKEN not in shown.text and "s3cret" not in shown.text, (path, shown.text)
    assert agent.stop() == 0
    assert not [line for line in agent.out + agent.err if TOKEN in line or "s3cret" in line]


def test_config_show_hides_the_values_of_headers_a_rule_adds_and_a_name_added_twice_is_said_without_them(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "devtunnel.toml").write_text(
        '[tunnels.web]\ntarget = 8000\n\n[[tunnels.web.rules]]\naction = "headers"\n'
        f'request.set = {{ Authorization = "{TOKEN}", X-Env = "dev" }}\n')
    shown = run(env, "config", "show", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    [rule] = tomllib.loads(shown.stdout.split("\n", 1)[1])["tunnels"]["web"]["rules"]
    assert rule == {"action": "headers", "request": {"set": {"Authorization": "********", "X-Env": "********"}}}
    assert TOKEN not in shown.stdout
    # A name added twice was said quoting what was added: the token on stderr.
    done = run(env, "http", "8000", "--no-tui", "--request-header-add", f"Authorization: {TOKEN}",
               "--request-header-add", f"authorization: {TOKEN}", cwd=tmp_path)
    assert done.returncode == EXIT_USAGE and "authorization is added twice" in done.stderr, done.stderr
    assert TOKEN not in done.stderr
