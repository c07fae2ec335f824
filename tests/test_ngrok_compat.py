"""ngrok habits that work: ``add-authtoken``, ``--authtoken``, ``--token-file`` and ``config import-ngrok``."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import stat
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from devtunnel.errors import ConfigError
from devtunnel.ngrok_config import default_ngrok_paths, read_ngrok_config
from tests.helpers import free_port, wait_for
from tests.kit.procs import DEVTUNNEL, FORWARDING, Proc, procs  # noqa: F401 (fixtures)
from tests.net.tunnel_fixtures import LocalState
from tests.net.tunnel_fixtures import local  # noqa: F401 (a fixture)


# The shapes of ngrok's documentation: a v2 file and its v3 migration, with endpoints.
V2 = """\
version: "2"
authtoken: 4nq9771bPxe8ctg7LKr_2ClH7Y15Zqe4bWLWF9p
api_key: 24yRd5U3DestCQapJrrVHLOqiAC_7RviwRqpd3wc9dKLujQZN
region: us
web_addr: localhost:4040
tunnels:
  httpbin:
    proto: http
    addr: 8000
    subdomain: alan-httpbin
  demo:
    proto: http
    addr: localhost:9090
    host_header: rewrite
    inspect: false
    schemes: [https]
  admin:
    proto: http
    addr: https://localhost:8443
    basic_auth: ["admin:s3cret"]
    ip_restriction:
      allow_cidrs: [10.0.0.0/8, "2001:db8::/32"]
      deny_cidrs: [10.1.0.0/16]
  sso:
    proto: http
    addr: 9092
    oauth: {provider: google}
  ssh-access:
    proto: tcp
    addr: 22
  site:
    proto: http
    addr: file:///var/www
"""

V3 = """\
version: 3
agent:
  authtoken: 4nq9771bPxe8ctg7LKr_2ClH7Y15Zqe4bWLWF9p
  connect_url: connect.example.com:443
endpoints:
  - name: Basic Hooks
    url: https://basic.ngrok.app
    upstream:
      url: 8080
    metadata: team=payments
  - name: api
    upstream:
      url: http://127.0.0.1:3000
      protocol: http1
    pooling_enabled: false
    compression: true
  - name: guarded
    upstream:
      url: 8081
    traffic_policy:
      on_http_request:
        - actions:
            - type: basic-auth
              config:
                credentials: ["user:password"]
  - name: db
    url: tcp://1.tcp.ngrok.io:12345
    upstream:
      url: 5432
"""


def test_a_v2_file_gives_its_http_tunnels_and_says_what_it_left_out() -> None:
    result = read_ngrok_config(V2)
    assert result.version == "2"
    assert [(t.name, t.target, t.host_header) for t in result.tunnels] == [
        ("httpbin", "8000", None), ("demo", "9090", "rewrite"), ("admin", "https://localhost:8443", None)]
    admin = result.tunnels[2]
    assert admin.rules == (
        {"match": "ip:10.1.0.0/16", "action": "deny"},
        {"action": "allow-ip", "ips": ["10.0.0.0/8", "2001:db8::/32"]},
        {"action": "basic-auth", "users": ["admin:sha256:" + hashlib.sha256(b"s3cret").hexdigest()]},
    )
    skipped = dict(result.skipped)
    assert "OAuth" in skipped["sso"] and "expose" in skipped["sso"]
    assert "tcp tunnels are not supported" in skipped["ssh-access"]
    assert "serving files" in skipped["site"]
    notes = "\n".join(result.notes)
    assert "authtoken" in notes and "api_key" in notes
    assert "httpbin: public address 'alan-httpbin' left out" in notes
    assert "demo: schemes left out" in notes and "inspect" not in notes  # carried: record = false
    assert [t.record for t in result.tunnels] == [True, False, True]
    assert "4nq9771bPxe8ctg7LKr_2ClH7Y15Zqe4bWLWF9p" not in notes  # never echo a secret
    assert "admin: IP restrictions and basic auth carried over as rules at the relay" in notes
    assert "s3cret" not in notes and "s3cret" not in repr(result.tunnels)


def test_a_v3_file_gives_its_http_endpoints_with_cleaned_names() -> None:
    result = read_ngrok_config(V3)
    assert result.version == "3"
    assert [(t.name, t.target, t.source) for t in result.tunnels] == [
        ("basic-hooks", "8080", "Basic Hooks"), ("api", "http://127.0.0.1:3000", "api")]
    skipped = dict(result.skipped)
    assert "a traffic policy" in skipped["guarded"]
    assert "tcp tunnels" in skipped["db"]
    notes = "\n".join(result.notes)
    assert "Basic Hooks: named 'basic-hooks'" in notes
    assert "Basic Hooks: metadata left out" in notes
    assert "api: compression left out" in notes and "pooling_enabled" not in notes  # false: devtunnel's default
    assert not any(t.pool for t in result.tunnels)
    assert "authtoken" in notes


def test_an_endpoint_without_a_name_is_named_by_its_url_as_the_agent_api_names_it() -> None:
    # It was "endpoint-1" here and "shop" for POST /api/endpoints with the same definition.
    result = read_ngrok_config("version: 3\nendpoints:\n  - url: https://shop.ngrok.app\n    upstream: {url: 8080}\n"
                               "  - upstream: {url: 8081}\n")
    assert [t.name for t in result.tunnels] == ["shop", "endpoint-2"]


def test_an_endpoint_takes_precedence_over_a_tunnel_of_the_same_name_as_in_ngrok(home: Home) -> None:
    # The tunnel was imported and the endpoint, which ngrok starts, skipped as "already taken by 'web'".
    (home.root / "project" / "ngrok.yml").write_text(
        "version: 3\ntunnels:\n  web: {proto: http, addr: 5000}\n  legacy: {proto: http, addr: 5001}\n"
        "endpoints:\n  - name: web\n    upstream: {url: 8080}\n")
    done = home.cli("config", "import-ngrok", "ngrok.yml")
    assert done.returncode == 0, done.stderr
    assert "skipped web: the endpoint of the same name is imported instead" in done.stdout
    saved = tomllib.loads(home.user_file.read_text())["tunnels"]
    assert saved == {"web": {"target": "8080"}, "legacy": {"target": "5001"}}


def test_names_that_clean_to_the_same_label_keep_the_first() -> None:
    result = read_ngrok_config("tunnels:\n  Web App: {addr: 1}\n  web_app: {addr: 2}\n  '!!!': {addr: 3}\n")
    assert [t.name for t in result.tunnels] == ["web-app"]
    assert dict(result.skipped)["web_app"] == "its name becomes 'web-app', already taken by 'Web App'"
    assert "no letters or digits" in dict(result.skipped)["!!!"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tunnels: [\n", "not valid YAML (line 2, column 1)"),
        ("- a\n- b\n", "expected a mapping of settings, got list"),
        ("version: 4\n", "version '4' is not an ngrok configuration version"),
        ("tunnels: [a, b]\n", "tunnels: expected a mapping"),
        ("version: 3\nendpoints: {a: 1}\n", "endpoints: expected a list"),
        ("tunnels:\n  web: {addr: 1}\n  web: {addr: 2}\n", "(line 3, column 3): 'web' is given twice"),
        ("tunnels:\n  web: {addr: 1, addr: 2}\n", "(line 2, column 18): 'addr' is given twice"),
    ],
)
def test_a_broken_file_is_one_clear_error(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        read_ngrok_config(text, "/x/ngrok.yml")
    assert str(info.value).startswith("/x/ngrok.yml: ") and message in str(info.value)


def test_protections_that_do_not_fit_a_rule_keep_the_tunnel_out() -> None:
    result = read_ngrok_config("tunnels:\n  a: {addr: 1, basic_auth: [nocolon]}\n"
                               "  b: {addr: 2, ip_restriction: {allow_cidrs: [not-a-cidr]}}\n")
    assert result.tunnels == []
    skipped = dict(result.skipped)
    assert "basic_auth is not \"user:password\"" in skipped["a"] and "not an IP address or CIDR" in skipped["b"]


def test_header_edits_are_imported_as_a_headers_rule_and_a_bad_one_keeps_the_tunnel_out() -> None:
    # They were left out ("header rules are not supported yet") and the tunnel imported without them.
    result = read_ngrok_config(
        "tunnels:\n"
        "  edited:\n    addr: 8080\n    request_header: {add: ['X-Env: dev'], remove: [User-Agent]}\n"
        "    response_header: {add: ['X-Frame-Options:DENY'], remove: [Server]}\n"
        "  framing:\n    addr: 8081\n    response_header: {add: ['Content-Length: 3']}\n"
        "  shapeless:\n    addr: 8082\n    request_header: [X-Env]\n")
    assert [t.name for t in result.tunnels] == ["edited"]
    assert result.tunnels[0].rules == ({"action": "headers",
                                        "request": {"set": {"X-Env": "dev"}, "remove": ["User-Agent"]},
                                        "response": {"set": {"X-Frame-Options": "DENY"}, "remove": ["Server"]}},)
    assert "edited: header edits carried over as rules at the relay" in result.notes
    assert not any("left out" in note for note in result.notes), result.notes
    skipped = dict(result.skipped)
    assert "Content-Length says how the message is framed" in skipped["framing"]
    assert "request_header is not a mapping of add / remove lists" in skipped["shapeless"]
    assert all("without its header edits" in why for why in skipped.values())


def test_an_imported_tunnel_keeps_its_basic_auth_at_a_real_relay(
    home: Home, procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    (home.root / "project" / "ngrok.yml").write_text(
        f"tunnels:\n  guarded:\n    addr: {local[0]}\n    basic_auth: [\"admin:s3cret\"]\n")
    assert home.cli("config", "import-ngrok", "ngrok.yml", "--project").returncode == 0
    # Proc runs in this folder: point at the project file the import wrote.
    agent = Proc([*DEVTUNNEL, "http", "guarded", "--no-tui", "--api-port", "0", "--no-record"],
                 {**home.env, "DEVTUNNEL_CONFIG": str(home.root / "project" / "devtunnel.toml")})
    procs.append(agent)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    public, port = match.group(1), match.group(3)
    host = public.split("://", 1)[1]
    refused = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": host}, trust_env=False)
    assert refused.status_code == 401 and "Basic" in refused.headers.get("www-authenticate", "")
    allowed = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": host}, auth=("admin", "s3cret"),
                        trust_env=False)
    assert allowed.status_code == 200
    assert agent.stop() == 0


@pytest.mark.parametrize(("body", "what"), [
    ("verify_webhook: {provider: github, secret: s}", "webhook verification"),
    ("policy: {inbound: []}", "a traffic policy"),
    ("user_agent_filter: {deny: ['(curl)']}", "a user agent filter"),
    ("ip_restriction: {deny_cidrs: 5}", "ip_restriction lists are not lists of CIDRs"),  # was a TypeError
])
def test_ngrok_yml_protection_keys_keep_the_tunnel_out(body: str, what: str) -> None:
    result = read_ngrok_config(f"tunnels:\n  guarded:\n    addr: 8080\n    {body}\n")
    assert result.tunnels == []
    reason = dict(result.skipped)["guarded"]
    assert what in reason and "expose the service" in reason


def test_every_protection_the_agent_api_refuses_is_kept_out_by_the_import_or_carried_as_a_rule() -> None:
    from devtunnel import ngrok_config
    from devtunnel.api.plumbing import REFUSED_OPTIONS

    carried = ngrok_config._TAKEN  # basic_auth, auth, ip_restriction and header edits become rules at the relay
    # a circuit breaker changes the traffic but guards no one: the import says it left it out
    changes = {"circuit_breaker"}
    assert set(REFUSED_OPTIONS) - carried - changes <= set(ngrok_config.PROTECTIONS)


def test_a_v3_agent_section_that_is_no_mapping_is_said_not_passed_over() -> None:
    # "nothing to import" alone: the agent's settings vanished without a word.
    result = read_ngrok_config("version: 3\nagent: [authtoken]\n")
    assert result.notes == ["agent left out: not a mapping of the agent's settings"]


def test_bad_tunnels_are_skipped_with_their_reason() -> None:
    result = read_ngrok_config("tunnels:\n  a: {addr: 'not a port'}\n  b: {proto: http}\n  c: 7\n  d: {addr: 70000}\n")
    skipped = dict(result.skipped)
    assert set(skipped) == {"a", "b", "c", "d"} and result.tunnels == []
    assert "no addr" in skipped["b"] and "not a mapping" in skipped["c"]


def test_every_key_the_import_knows_is_one_the_agent_api_takes_for_ngrok_s() -> None:
    from devtunnel import ngrok_config
    from devtunnel.values.ngrok_keys import NGROK_KEYS

    known = ngrok_config._TAKEN | set(ngrok_config._IGNORED) | set(ngrok_config.PROTECTIONS)
    assert known <= NGROK_KEYS, sorted(known - NGROK_KEYS)


def test_default_paths_follow_ngrok_per_system() -> None:
    env = {"HOME": "/home/u", "LOCALAPPDATA": "C:/Users/u/AppData/Local"}
    assert default_ngrok_paths(env, "linux")[0] == Path("/home/u/.config/ngrok/ngrok.yml")
    assert default_ngrok_paths({**env, "XDG_CONFIG_HOME": "/cfg"}, "linux")[0] == Path("/cfg/ngrok/ngrok.yml")
    assert default_ngrok_paths(env, "darwin")[0] == Path("/home/u/Library/Application Support/ngrok/ngrok.yml")
    assert default_ngrok_paths(env, "win32")[0] == Path("C:/Users/u/AppData/Local/ngrok/ngrok.yml")
    assert default_ngrok_paths(env, "linux")[-1] == Path("/home/u/.ngrok2/ngrok.yml")


# The commands, as subprocesses ----------------------------------------------------------------


@dataclass
class Home:
    root: Path
    env: dict[str, str]

    @property
    def user_file(self) -> Path:
        return self.root / "config" / "devtunnel" / "devtunnel.toml"

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DEVTUNNEL, *args], capture_output=True, text=True, timeout=30, input=stdin,
                              env=self.env, cwd=self.root / "project")


@pytest.fixture
def home(tmp_path: Path) -> Home:
    (tmp_path / "project").mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVTUNNEL_", "XDG_"))}
    env.update(HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    return Home(tmp_path, env)


def test_import_ngrok_reads_the_default_location_and_writes_the_user_file(home: Home) -> None:
    ngrok_yml = home.root / "config" / "ngrok" / "ngrok.yml"
    ngrok_yml.parent.mkdir(parents=True)
    ngrok_yml.write_text(V2)
    done = home.cli("config", "import-ngrok")
    assert done.returncode == 0, done.stderr
    assert f"read {ngrok_yml} (ngrok config version 2)" in done.stdout
    assert "imported demo: target 9090, host_header rewrite, not recorded" in done.stdout
    assert "skipped sso: it has OAuth" in done.stdout
    saved = tomllib.loads(home.user_file.read_text())["tunnels"]
    assert saved["httpbin"] == {"target": "8000"} and saved["demo"] == {"target": "9090", "host_header": "rewrite",
                                                                            "record": False}
    assert [r["action"] for r in saved["admin"]["rules"]] == ["deny", "allow-ip", "basic-auth"]
    assert "s3cret" not in home.user_file.read_text()
    assert stat.S_IMODE(home.user_file.stat().st_mode) == 0o600
    shown = home.cli("config", "show")
    assert shown.returncode == 0 and "[tunnels.demo]" in shown.stdout


def test_import_ngrok_never_replaces_a_tunnel_without_force(home: Home) -> None:
    project = home.root / "project"
    (project / "devtunnel.toml").write_text('[tunnels.demo]\ntarget = "1234"\n')
    (project / "ngrok.yml").write_text(V2)
    done = home.cli("config", "import-ngrok", "ngrok.yml", "--project")
    assert done.returncode == 0, done.stderr
    assert "kept demo: " in done.stdout and "--force" in done.stdout
    doc = tomllib.loads((project / "devtunnel.toml").read_text())
    assert doc["tunnels"]["demo"] == {"target": "1234"} and doc["tunnels"]["httpbin"] == {"target": "8000"}
    forced = home.cli("config", "import-ngrok", "ngrok.yml", "--project", "--force")
    assert forced.returncode == 0
    assert tomllib.loads((project / "devtunnel.toml").read_text())["tunnels"]["demo"]["target"] == "9090"


def test_import_ngrok_dry_run_prints_the_tables_and_writes_nothing(home: Home) -> None:
    (home.root / "project" / "ngrok.yml").write_text(V3)
    done = home.cli("config", "import-ngrok", "ngrok.yml", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert '[tunnels.basic-hooks]\ntarget = "8080"' in done.stdout
    assert "would import api: target http://127.0.0.1:3000" in done.stdout
    assert not home.user_file.exists()


AGENT_V3 = """\
version: 3
agent:
  authtoken: 4nq9771bPxe8ctg7LKr_2ClH7Y15Zqe4bWLWF9p
  web_addr: 127.0.0.1:4050
  region: eu
  log_level: debug
endpoints:
  - name: shared
    upstream: {url: 8080}
    pooling_enabled: true
  - name: grpc
    upstream: {url: 9000, protocol: http2}
  - name: h2c
    upstream: {url: 9001}
    app_protocol: http2
  - name: private
    url: https://billing.internal
    upstream: {url: 7000}
  - name: bound
    bindings: [kubernetes]
    upstream: {url: 7001}
  - name: public
    bindings: [public]
    upstream: {url: 7002}
"""


def test_import_ngrok_carries_pooling_and_says_what_becomes_of_every_other_setting(home: Home) -> None:
    # Before: pooling_enabled was dropped (pools exist), an http2 upstream was imported as http1
    # without a word, an internal endpoint (url *.internal, bindings) became a public tunnel, and
    # web_addr, region and log_level vanished unmentioned.
    (home.root / "project" / "ngrok.yml").write_text(AGENT_V3)
    done = home.cli("config", "import-ngrok", "ngrok.yml")
    assert done.returncode == 0, done.stderr
    assert "imported shared: target 8080, pool" in done.stdout
    assert "skipped grpc: upstream protocol 'http2' is not supported (only http1)" in done.stdout
    assert "skipped h2c: app_protocol 'http2' is not supported (only http1)" in done.stdout
    assert "skipped private: it is bound to 'internal', not the public internet" in done.stdout
    assert "skipped bound: it is bound to 'kubernetes'" in done.stdout
    assert "imported public: target 7002" in done.stdout
    assert ("note: web_addr '127.0.0.1:4050' not imported: devtunnel's agent API is on 127.0.0.1:4040; "
            "to move it: devtunnel config set agent.api_port 4050") in done.stdout
    assert "note: log_level, region left out: settings of ngrok's agent with no devtunnel equivalent" in done.stdout
    saved = tomllib.loads(home.user_file.read_text())["tunnels"]
    assert saved == {"shared": {"target": "8080", "pool": True}, "public": {"target": "7002"}}


EDGES_AND_AGENT_TLS = """\
version: 3
endpoints:
  - name: mine
    url: https://mine.ngrok.app
    upstream: {url: 8443}
    agent_tls_termination:
      server_certificate: /etc/ssl/mine.pem
      server_private_key: /etc/ssl/mine.key
  - name: clients
    upstream: {url: 8444}
    agent_tls_termination:
      server_certificate: /etc/ssl/mine.pem
      mutual_tls_certificate_authorities: [/etc/ssl/ca.pem]
tunnels:
  edge-web:
    labels: [edge=edghts_2IC6pW]
    addr: 8080
"""


def test_import_ngrok_says_per_tunnel_what_agent_tls_and_edge_labels_become(home: Home) -> None:
    # A labeled tunnel (reached through an ngrok edge, with the edge's OAuth or IP rules) was
    # imported as a public tunnel with no protection; agent_tls_termination's client
    # certificates were dropped as "no equivalent", and so was its own certificate.
    (home.root / "project" / "ngrok.yml").write_text(EDGES_AND_AGENT_TLS)
    done = home.cli("config", "import-ngrok", "ngrok.yml")
    assert done.returncode == 0, done.stderr
    assert "imported mine: target 8443" in done.stdout
    assert ("note: mine: agent_tls_termination left out (the relay terminates TLS with its own certificate: the "
            "server_certificate is not used, and the relay, not only this machine, reads the traffic)") in done.stdout
    assert ("skipped clients: it has mutual TLS, which devtunnel cannot enforce yet: importing it would expose the "
            "service without it") in done.stdout
    assert ("skipped edge-web: it is a labeled tunnel ('edge=edghts_2IC6pW'), reached only through an ngrok edge "
            "whose protections are set at ngrok, not in its definition, and every devtunnel tunnel is public on its "
            "relay: importing it would expose the service without them") in done.stdout
    assert tomllib.loads(home.user_file.read_text())["tunnels"] == {"mine": {"target": "8443"}}


@pytest.mark.parametrize(("web_addr", "note"), [
    ("localhost:4040", None),
    ("false", "web_addr false: to turn devtunnel's agent API off too (for http): devtunnel config set agent.api_port 0 "
              "(devtunnel start takes it from the file)"),
    ("0.0.0.0:4040", "web_addr '0.0.0.0:4040' not imported: devtunnel's agent API listens on 127.0.0.1 only"),
    (":4041", "web_addr ':4041' not imported: devtunnel's agent API listens on 127.0.0.1 only"),
    ("'[::1]:4041'", "web_addr '[::1]:4041' not imported: devtunnel's agent API is on 127.0.0.1:4040; to move it: "
                   "devtunnel config set agent.api_port 4041 (devtunnel start takes it from the file)"),
    ("[a, b]", "web_addr a list left out: not HOST:PORT"),
])
def test_web_addr_is_said_unless_it_is_devtunnel_s_own(web_addr: str, note: str | None) -> None:
    notes = read_ngrok_config(f"web_addr: {web_addr}\ntunnels:\n  web: {{addr: 80}}\n").notes
    assert [n for n in notes if n.startswith("web_addr")] == ([note] if note else [])


def test_an_https_target_says_how_to_accept_a_self_signed_certificate(home: Home) -> None:
    # A local https service's self-signed certificate made the imported tunnel answer 502 at its
    # first request, and verify_upstream_tls: false was dropped with "set agent.insecure" only.
    (home.root / "project" / "ngrok.yml").write_text(
        "tunnels:\n  admin: {addr: 'https://localhost:8443'}\n"
        "  lax: {addr: 'https://localhost:8444', verify_upstream_tls: false}\n"
        "  strict: {addr: 'https://localhost:8445', verify_upstream_tls: true}\n  plain: {addr: 8080}\n")
    done = home.cli("config", "import-ngrok", "ngrok.yml", "--dry-run")
    assert done.returncode == 0, done.stderr
    notes = [line for line in done.stdout.splitlines() if "certificate" in line]
    assert notes == [
        "note: admin: devtunnel verifies the certificate of https://localhost:8443: for a self-signed one, "
        "devtunnel config set agent.insecure true (every tunnel) or devtunnel http --insecure",
        "note: lax: verify_upstream_tls false left out: devtunnel verifies the certificate of https://localhost:8444: "
        "for a self-signed one, devtunnel config set agent.insecure true (every tunnel) or devtunnel http --insecure",
    ]


def test_port_443_without_a_scheme_is_imported_as_https_as_ngrok_forwards_it(home: Home) -> None:
    # ngrok speaks https to 443 (and localhost:443); the import made it http://127.0.0.1:443.
    (home.root / "project" / "ngrok.yml").write_text(
        "version: 3\nendpoints:\n  - name: api\n    upstream: {url: 443}\n"
        "  - name: box\n    upstream: {url: 'box.lan:443'}\n  - name: plain\n    upstream: {url: 'http://localhost:443'}\n")
    done = home.cli("config", "import-ngrok", "ngrok.yml", "--dry-run")
    assert done.returncode == 0, done.stderr
    imported = [line for line in done.stdout.splitlines() if line.startswith("would import")]
    assert imported == ["would import api: target https://localhost:443", "would import box: target https://box.lan:443",
                        "would import plain: target http://localhost:443"]
    assert "note: api: devtunnel verifies the certificate of https://localhost:443" in done.stdout


def test_keys_in_the_wrong_place_for_the_file_s_version_are_said_not_dropped_unseen(home: Home) -> None:
    # A v3 file with v2's top-level agent settings (authtoken, region), or a v2 file with v3's
    # agent: section, lost them without a word; the secret itself is never printed.
    (home.root / "project" / "v3.yml").write_text(
        "version: 3\nauthtoken: 2abcSECRET\nregion: eu\nendpoints:\n  - name: api\n    upstream: {url: 8080}\n")
    (home.root / "project" / "v2.yml").write_text("version: 2\nagent:\n  authtoken: 2abcSECRET\n"
                                                  "tunnels:\n  api: {addr: 8080}\n")
    v3 = home.cli("config", "import-ngrok", "v3.yml", "--dry-run")
    v2 = home.cli("config", "import-ngrok", "v2.yml", "--dry-run")
    assert v3.returncode == v2.returncode == 0, v3.stderr + v2.stderr
    assert ("note: authtoken, region left out: not keys of a version 3 file's top level (the agent's settings go "
            "under agent:)") in v3.stdout.splitlines()
    assert "note: agent left out: a section of version 3 files, and this one is version 2" in v2.stdout.splitlines()
    assert "SECRET" not in v3.stdout + v3.stderr + v2.stdout + v2.stderr


def test_a_target_with_a_password_is_skipped_without_printing_the_password(home: Home) -> None:
    # The skip reason quoted the addr as written: ngrok.yml's password went to the terminal.
    (home.root / "project" / "ngrok.yml").write_text(
        "tunnels:\n  a: {addr: 'http://me:S3CRET@localhost:8080'}\n  b: {addr: 'me:S3CRET@localhost:8081'}\n"
        "version: 3\nendpoints:\n  - name: c\n    upstream: {url: 'https://S3CRET@localhost:8443/api'}\n")
    done = home.cli("config", "import-ngrok", "ngrok.yml", "--dry-run")
    assert done.returncode == 0, done.stderr  # nothing to import
    assert "S3CRET" not in done.stdout + done.stderr
    assert ("skipped a: invalid target 'http://…@localhost:8080': credentials in the target URL are not "
            "supported") in done.stdout.splitlines()
    assert "skipped b: invalid target '…@localhost:8081': credentials in the target are not supported" in done.stdout
    assert "skipped c: invalid target 'https://…@localhost:8443/api'" in done.stdout


def test_import_ngrok_errors_exit_2_with_one_line(home: Home) -> None:
    missing = home.cli("config", "import-ngrok")
    assert missing.returncode == 2
    assert missing.stderr.startswith("devtunnel config: no ngrok.yml found at ") and missing.stderr.count("\n") == 1
    (home.root / "project" / "bad.yml").write_text("tunnels: [\n")
    bad = home.cli("config", "import-ngrok", "bad.yml")
    assert (bad.returncode, bad.stderr.count("\n")) == (2, 1) and "not valid YAML" in bad.stderr
    assert "Traceback" not in bad.stderr + missing.stderr
    assert not home.user_file.exists()


def test_import_ngrok_says_a_tab_is_a_tab(home: Home) -> None:
    # ngrok.yml edited by hand with a tab: PyYAML's "found character '\t'" came out escaped
    # twice ('\\t'), which reads as neither a tab nor a hint.
    (home.root / "project" / "ngrok.yml").write_text('version: "2"\ntunnels:\n\tweb:\n    addr: 8080\n')
    done = home.cli("config", "import-ngrok", "ngrok.yml")
    assert (done.returncode, done.stderr) == (
        2, "devtunnel config: ngrok.yml: not valid YAML (line 3, column 1): a tab, where YAML indents with spaces only\n")


def test_import_ngrok_takes_the_file_as_ngrok_s_commands_name_it(home: Home) -> None:
    # `ngrok config upgrade --config FILE` habit: "unrecognized arguments: --config", argparse
    # having taken FILE for PATH.
    (home.root / "project" / "ngrok.yml").write_text('version: "2"\ntunnels:\n  web: {proto: http, addr: 8080}\n')
    done = home.cli("config", "import-ngrok", "--config", "ngrok.yml")
    assert done.returncode == 0, done.stderr
    assert "imported web: target 8080" in done.stdout
    done = home.cli("config", "import-ngrok", "ngrok.yml", "--config", "other.yml")
    assert (done.returncode, done.stderr) == (
        2, "devtunnel config: give the ngrok.yml as PATH or --config FILE, not both (ngrok.yml, other.yml)\n")


def test_import_ngrok_refuses_a_tunnel_named_twice_rather_than_losing_one(home: Home) -> None:
    (home.root / "project" / "ngrok.yml").write_text(
        'version: "2"\ntunnels:\n  web:\n    proto: http\n    addr: 8080\n  web:\n    proto: http\n    addr: 9090\n'
    )
    done = home.cli("config", "import-ngrok", "ngrok.yml")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "ngrok.yml: not valid YAML (line 6, column 3): 'web' is given twice" in done.stderr
    assert not home.user_file.exists()


@pytest.mark.parametrize(("toml", "says"), [
    ('authtoken = "2abcS3CRET"\n', ":1: authtoken: unknown setting; authtoken is ngrok's: here it is relay.token "
                                   "(devtunnel config add-authtoken TOKEN)"),
    ("[agent]\nweb_addr = 4041\n", ":2: agent.web_addr: unknown setting; web_addr is ngrok's: here it is agent.api_port"),
    ("[tunnels.web]\naddr = 8080\n", ":2: tunnels.web.addr: unknown setting; addr is ngrok's: here it is target"),
    ('[tunnels.web]\ntarget = 8080\nproto = "http"\n', ":3: tunnels.web.proto: unknown setting; proto is ngrok's: "
                                                       "only http tunnels exist here: leave it out"),
    ("[tunnels.web]\ntarget = 8080\ninspect = false\n", "inspect is ngrok's: here it is record"),
])
def test_ngrok_yml_s_names_in_devtunnel_toml_say_devtunnel_s(home: Home, toml: str, says: str) -> None:
    # An ngrok.yml habit in devtunnel.toml said "known: target, relay, ..." or, for proto, "did
    # you mean tunnels.web.pool?".
    (home.root / "project" / "devtunnel.toml").write_text(toml)
    os.chmod(home.root / "project" / "devtunnel.toml", 0o600)
    done = home.cli("http", "web", "--no-tui")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert says in done.stderr and "S3CRET" not in done.stderr


def test_config_set_of_an_ngrok_name_says_devtunnel_s_and_writes_nothing(home: Home) -> None:
    done = home.cli("config", "set", "tunnels.web.addr", "8080")
    assert (done.returncode, done.stderr) == (
        2, "devtunnel config: tunnels.web.addr: unknown setting; addr is ngrok's: here it is target\n")
    assert not home.user_file.exists()


def test_config_add_authtoken_is_add_token(home: Home) -> None:
    done = home.cli("config", "add-authtoken", "-", stdin="tok-from-hands\n")
    assert done.returncode == 0, done.stderr
    assert tomllib.loads(home.user_file.read_text()) == {"relay": {"token": "tok-from-hands"}}


def test_config_add_authtoken_says_when_no_relay_would_use_the_token(home: Home) -> None:
    # An ngrok user saves ngrok's token and thinks tunnels now use it: with no relay set, it goes
    # nowhere, and add-authtoken said only that it was saved.
    done = home.cli("config", "add-authtoken", "2abcNGROKTOKEN")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"Authtoken saved to configuration file: {home.user_file} (relay.token, mode 0600)\n"
    assert done.stderr == ("devtunnel config: note: the token saved is not used: no relay is set (--relay URL, "
                           "DEVTUNNEL_RELAY or relay.url), and the embedded relay on 127.0.0.1 asks for none\n")
    assert home.cli("config", "set", "relay.url", "wss://tunnel.example.com").returncode == 0
    done = home.cli("config", "add-token", "relay-token")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"saved relay.token in {home.user_file} (mode 0600)\n", "")


@pytest.mark.parametrize("token", ["tok en", "ab\ncd", "ab\x1bcd"])
def test_a_token_with_spaces_or_control_characters_is_refused_in_one_line(home: Home, token: str) -> None:
    done = home.cli("config", "add-authtoken", token)
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert "relay.token: a token cannot hold spaces or control characters" in done.stderr
    assert "\x1b" not in done.stderr and not home.user_file.exists()


def test_http_takes_the_token_as_authtoken_or_from_a_file_through_a_real_relay(
    home: Home, procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    port = free_port()
    relay = Proc([*DEVTUNNEL, "relay", "--listen", f"127.0.0.1:{port}", "--token", "good"], home.env)
    procs.append(relay)
    relay.line(lambda l: l.startswith("Relay listening"))
    token_file = home.root / "token"
    token_file.write_text("good\n")
    shared = home.root / "shared-token"
    shared.write_text("good\n")
    shared.chmod(0o644)
    token_file.chmod(0o600)
    for name, flags in (("by-flag", ["--authtoken", "good"]), ("by-file", ["--token-file", str(token_file)]),
                        ("shared", ["--token-file", str(shared)])):
        agent = Proc([*DEVTUNNEL, "http", str(local[0]), "--relay", f"ws://127.0.0.1:{port}", *flags, "--name", name,
                      "--no-tui", "--api-port", "0", "--no-record"], home.env)
        procs.append(agent)
        assert FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
        r = httpx.get(f"http://127.0.0.1:{port}/echo", headers={"Host": f"{name}.localhost:{port}"}, trust_env=False)
        assert r.status_code == 200
        assert agent.stop() == 0
        assert not [line for line in agent.err if "not used" in line], agent.err
        # A token file other users can read is used, and said (a container's secret mount is 0444).
        noted = [line for line in agent.err if "can be read by other users" in line]
        assert noted == ([f"devtunnel: note: --token-file {shared} can be read by other users (mode 644), and its"
                          f" token opens tunnels in your name: chmod 600 {shared} where other users log in"]
                         if name == "shared" else []), agent.err
    assert "good" not in " ".join(procs[-1].popen.args)  # type: ignore[arg-type]


def test_ngrok_s_header_flags_edit_the_traffic_at_the_relay(home: Home, procs: list[Proc], local: tuple[int, LocalState]) -> None:
    # `devtunnel http 8080 --request-header-add 'X-Env: dev'` (ngrok's flags) was refused with
    # "use a headers rule (--rules FILE)".
    agent = Proc([*DEVTUNNEL, "http", str(local[0]), "--request-header-add", "X-Env: dev", "--request-header-add",
                  "X-Team:payments", "--request-header-remove", "User-Agent", "--response-header-add",
                  "X-Frame-Options: DENY", "--response-header-remove", "content-type", "--no-tui", "--api-port", "0",
                  "--no-record"], home.env)
    procs.append(agent)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    url = httpx.URL(match.group(1))
    r = httpx.get(url.copy_with(host="127.0.0.1", path="/echo"), headers={"Host": url.netloc.decode()}, trust_env=False)
    assert r.status_code == 200
    assert r.headers["x-frame-options"] == "DENY" and "content-type" not in r.headers
    seen = {name.lower(): value for name, value in json.loads(r.content)["headers"]}
    assert (seen["x-env"], seen["x-team"]) == ("dev", "payments") and "user-agent" not in seen
    assert agent.stop() == 0


@pytest.mark.parametrize(("flags", "message"), [
    (["--request-header-add", "X-Env"], "--request-header-add #1 ('X-Env') is not NAME:VALUE"),
    # Its colon forgotten, a credential was said whole: named by its place and first word only.
    (["--request-header-add", "X-A: 1", "--request-header-add", "Authorization Bearer sk_live_0123456789abcdef"],
     "--request-header-add #2 ('Authorization' and what follows it) is not NAME:VALUE"),
    (["--request-header-add", "sk_live_0123456789abcdef0123"], "--request-header-add #1 (one word of 28 characters)"),
    (["--request-header-add", "X-A: 1", "--request-header-add", "x-a: 2"], "x-a is added twice"),
    (["--response-header-add", "Bad Name: 1"], "--response-header-add: 'Bad Name' is not a valid header name"),
    (["--request-header-remove", "Transfer-Encoding"], "Transfer-Encoding says how the message is framed"),
    (["--response-header-remove", "a b"], "--response-header-remove 'a b' is not a header name"),
])
def test_ngrok_s_header_flags_that_cannot_be_made_exit_2_with_one_line(home: Home, flags: list[str], message: str) -> None:
    done = home.cli("http", "8080", *flags, "--no-tui")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr and "sk_live" not in done.stderr


def test_ngrok_s_file_serving_target_says_how_to_serve_the_folder_here_and_that_works(
    home: Home, procs: list[Proc]
) -> None:
    # `ngrok http file:///DIR` serves the folder; devtunnel said only "the scheme must be http or https".
    folder = home.root / "my site"
    folder.mkdir()
    (folder / "index.html").write_text("hello from the folder")
    done = home.cli("http", f"file://{folder}")
    assert (done.returncode, done.stderr.count("\n")) == (2, 1), done.stderr
    said = done.stderr.split("to serve the folder: ", 1)[1].removesuffix(" (see: devtunnel http --help)\n")
    argv = shlex.split(said.replace("8000", str(free_port())))
    assert argv[:2] == ["devtunnel", "http"]
    agent = Proc([*DEVTUNNEL, *argv[1:], "--no-tui", "--api-port", "0", "--no-record"], home.env)
    procs.append(agent)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    url = httpx.URL(match.group(1))

    def served() -> httpx.Response | None:
        r = httpx.get(url.copy_with(host="127.0.0.1", path="/index.html"), headers={"Host": url.netloc.decode()},
                      trust_env=False)
        return r if r.status_code == 200 else None

    assert wait_for(served, what="the folder served through the tunnel").text == "hello from the folder"
    assert agent.stop() == 0


def test_an_authtoken_with_no_relay_to_go_to_is_said_not_silently_dropped(
    home: Home, procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # `devtunnel http 8080 --authtoken <ngrok's token>` with no relay set: the embedded relay asks
    # for no token, it went nowhere, and nothing said so.
    agent = Proc([*DEVTUNNEL, "http", str(local[0]), "--authtoken", "2abcNGROKTOKEN", "--no-tui", "--api-port", "0",
                  "--no-record"], home.env)
    procs.append(agent)
    assert FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    note = agent.line(lambda l: "not used" in l, lines="err")
    assert note == ("devtunnel: note: the token given (--token, --authtoken or --token-file) is not used: no relay is "
                    "set (--relay URL, DEVTUNNEL_RELAY or relay.url), and the embedded relay on 127.0.0.1 asks for none")
    assert agent.stop() == 0
    assert "2abcNGROKTOKEN" not in "\n".join(agent.out + agent.err)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--token-file", "/nonexistent/token"], "--token-file /nonexistent/token: cannot read it"),
        (["--token-file", "EMPTY"], "the first line is empty"),
        (["--token-file", "EMPTY", "--token", "x"], "give --token or --token-file, not both"),
    ],
)
def test_a_bad_token_file_is_bad_usage(home: Home, flags: list[str], message: str) -> None:
    empty = home.root / "empty"
    empty.write_text("\n")
    done = home.cli("http", "9", "--no-tui", "--api-port", "0", "--no-record",
                    *[str(empty) if f == "EMPTY" else f for f in flags])
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(("args", "says"), [
    (["authtoken", "2abc"], "devtunnel: authtoken is ngrok's: here it is devtunnel config add-authtoken TOKEN"),
    (["add-authtoken", "2abc"], "devtunnel: add-authtoken is ngrok's: here it is devtunnel config add-authtoken TOKEN"),
    (["start", "--none"], "here it is devtunnel agent (the agent and its API on 127.0.0.1:4040, no tunnel)"),
    (["tcp", "22"], "devtunnel: tcp is ngrok's: only http tunnels exist here, no tcp or tls yet"),
    # ngrok's other commands were argparse's "invalid choice" with devtunnel's list of commands.
    (["update"], "devtunnel: update is ngrok's: updates come from the package manager that installed devtunnel"),
    (["service", "install"], "devtunnel: service is ngrok's: no service of its own: run devtunnel up"),
    (["tunnel", "--label", "edge=edghts_1", "8080"], "devtunnel: tunnel is ngrok's: labeled tunnels (ngrok edges) "
                                                     "have no equivalent: devtunnel http PORT --name NAME"),
    (["completion"], "devtunnel: completion is ngrok's: no shell completion yet"),
    # ngrok 3 takes any Host: argparse's "invalid choice: 'localhost:8080'" said nothing of why.
    (["http", "8080", "--host-header=localhost:8080"], "devtunnel http: argument --host-header: 'localhost:8080' is "
                                                       "ngrok's way to send a Host of its own: here --host-header takes "
                                                       "rewrite (the target's Host) or preserve"),
    (["http", "--host-header", "example.com", "8080"], "'example.com' is ngrok's way to send a Host of its own"),
    (["http", "8080", "--traffic-policy-url", "https://example.com/p.yml"], "(--traffic-policy-url is ngrok's: use "
                                                                            "--rules FILE"),
    (["diagnose"], "devtunnel: diagnose is ngrok's: here it is devtunnel config show (the relay and token in use)"),
    (["api", "endpoints", "list"], "devtunnel: api is ngrok's: there is no account API here"),
    (["http", "8080", "--url", "https://payments.ngrok.app"], "(--url is ngrok's: the relay names a tunnel "
                                                               "NAME.DOMAIN: use --name payments)"),
    (["http", "8080", "--domain=hooks.example.com"], "use --name hooks)"),
    (["http", "8080", "--traffic-policy-file", "policy.yml"], "(--traffic-policy-file is ngrok's: use --rules FILE"),
    # The flag before the port: argparse took the URL for the target and said "--url 8080 (... use --name 8080)".
    (["http", "--url", "https://payments.ngrok.app", "8080"], "unrecognized arguments: --url https://payments.ngrok.app "
                                                               "(--url is ngrok's: the relay names a tunnel NAME.DOMAIN: "
                                                               "use --name payments)"),
    (["http", "--region", "eu", "3000"], "unrecognized arguments: --region eu (--region is ngrok's"),
    # ngrok's other flags said what they are here, not "unrecognized arguments" alone.
    (["http", "8080", "--oauth", "google"], "(--oauth is ngrok's: no OAuth at the relay yet: --basic-auth USER:PASS"),
    (["http", "8080", "--oauth-allow-email", "me@example.com"], "(--oauth-allow-email is ngrok's: no OAuth"),
    (["http", "8080", "--verify-webhook=stripe"], "records the verdict, without refusing any at the relay"),
    (["http", "8080", "--upstream-tls-verify-cas", "ca.pem"], "--insecure turns that off"),
    (["http", "8080", "--upstream-protocol", "http2"], "devtunnel speaks HTTP/1.1 to the local service"),
    # ngrok 2's one-dash flags: argparse read -host-header as -h ("ignored explicit argument 'ost-header'").
    (["http", "-host-header=rewrite", "8080"], "devtunnel http: -host-header is ngrok 2's spelling: flags take two "
                                               "dashes here (--host-header)"),
    (["http", "-subdomain=payments", "8080"], "-subdomain is ngrok 2's spelling: the relay names a tunnel NAME.DOMAIN: "
                                              "use --name payments"),
])
def test_ngrok_s_spelling_of_a_command_or_flag_is_refused_with_devtunnel_s(home: Home, args: list[str], says: str) -> None:
    # Before: argparse's list of every command, or "unrecognized arguments" and nothing more.
    done = home.cli(*args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert says in done.stderr
    assert not home.user_file.exists()


@pytest.mark.parametrize("args", [["--verify-webhook-secret", "whsec_s3cret"], ["--oauth-client-secret=s3cret"],
                                  ["--api-key", "s3cret"]])
def test_an_ngrok_flag_holding_a_secret_is_refused_without_echoing_it(home: Home, args: list[str]) -> None:
    done = home.cli("http", "8080", *args)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "********" in done.stderr and "s3cret" not in done.stderr


def test_a_script_reading_ngrok_s_command_line_tunnel_finds_the_one_devtunnel_http_started(
    home: Home, procs: list[Proc], local: tuple[int, LocalState]
) -> None:
    # `curl localhost:4040/api/tunnels/command_line | jq -r .public_url`: ngrok names the tunnel of
    # `ngrok http 8080` command_line; devtunnel's has a random name, and the script got a 404.
    agent = Proc([*DEVTUNNEL, "http", str(local[0]), "--no-tui", "--api-port", str(free_port())], home.env)
    procs.append(agent)
    match = FORWARDING.match(agent.line(lambda l: l.startswith("Forwarding")))
    assert match is not None
    api = agent.line(lambda l: l.startswith("API ")).split(" ", 1)[1]
    for name in ("command_line", "command_line%20(http)"):
        tunnel = httpx.get(f"{api}/api/tunnels/{name}", trust_env=False)
        assert tunnel.status_code == 200, tunnel.text
        assert (tunnel.json()["name"], tunnel.json()["public_url"]) == (match.group(2), match.group(1))
    # With a second tunnel it names neither: a 404, as for any unknown name.
    second = httpx.post(f"{api}/api/tunnels", json={"addr": local[0], "name": "second"}, trust_env=False)
    assert second.status_code == 201, second.text
    assert httpx.get(f"{api}/api/tunnels/command_line", trust_env=False).status_code == 404
    assert agent.stop() == 0
