"""Rules as data: every action parses, every mistake is one clear line."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from devtunnel.rules import (
    Engine,
    RequestView,
    RulesError,
    decide,
    load_rules_file,
    parse_rules,
    rules_from_wire,
    renumbered,
    rules_to_wire,
)


def view(path: str = "/", ip: str = "127.0.0.1", headers: list[tuple[bytes, bytes]] | None = None) -> RequestView:
    return RequestView(method="GET", target=path.encode(), headers=headers or [], ip=ip)


BAD = [
    ({"action": "block"}, "rule 1: action: expected one of basic-auth, deny"),
    ({"match": "path:/a"}, "rule 1: action: missing: every rule has one of basic-auth, deny"),
    ({"action": "deny", "match": "pth:/x"}, "rule 1: match: column 1: unknown field 'pth'"),
    ({"action": "deny", "match": "path:/x status:500"}, "rule 1: match: status: is known only once a response exists"),
    ({"action": "deny", "match": "~c 500"}, "rule 1: match: ~c is known only once a response exists"),
    ({"action": "deny", "match": "~bs secret"}, "rule 1: match: ~bs is known only once a response exists"),
    ({"action": "deny", "match": "-sig:valid"}, "rule 1: match: sig: is known only to the agent"),
    ({"action": "respond", "match": "provider:stripe"}, "rule 1: match: provider: is known only to the agent"),
    ({"action": "deny", "match": "path:/a or tunnel:pay"}, "rule 1: match: tunnel: is known only to the agent"),
    ({"action": "deny", "match": "method:GET ip:10.0.0.0/33"}, "rule 1: match: column 15: ip expects addresses"),
    ({"action": "deny", "colour": "red"}, "rule 1: colour: not a key of a deny rule"),
    ({"action": "basic-auth"}, "rule 1: users: a basic-auth rule needs at least one user"),
    ({"action": "basic-auth", "users": ["nopassword"]}, "rule 1: users: each user is"),
    ({"action": "basic-auth", "users": ["a:x", "b:y", "a:z"]}, "rule 1: users: user 'a' is given twice"),
    ({"action": "basic-auth", "users": ["a:sha256:abc"]}, "rule 1: users: user 'a': a sha256 hash is 64 hex digits"),
    ({"action": "basic-auth", "users": ["a:$2b$12$abc"]}, "rule 1: users: user 'a': not a bcrypt hash"),
    ({"action": "basic-auth", "users": ["a:b"], "realm": 'x"y'}, "rule 1: realm: must be printable text"),
    ({"action": "allow-ip", "ips": []}, "rule 1: ips: must be a list of addresses"),
    ({"action": "allow-ip", "ips": ["10.0.0.0/8", "ten"]}, "rule 1: ips: 'ten' is not an IP address or CIDR"),
    ({"action": "rate-limit", "rate": "20 per second"}, "rule 1: rate: expected a rate like \"20/s\""),
    ({"action": "rate-limit", "rate": "0/s"}, "rule 1: rate: expected a rate"),
    ({"action": "rate-limit", "rate": "5/s", "burst": 0}, "rule 1: burst: must be a whole number"),
    ({"action": "forward"}, "rule 1: target: must be a port or a URL"),
    ({"action": "respond", "status": 99}, "rule 1: status: must be an HTTP status from 200 to 599"),
    ({"action": "respond", "count": 0}, "rule 1: count: must be a whole number, at least 1"),
    ({"action": "respond", "status": 204, "body": "hi"}, "rule 1: body: a 204 answer has no body"),
    ({"action": "deny", "headers": {"Upgrade": "h2c"}}, "rule 1: headers: Upgrade says how the message is framed"),
    ({"action": "respond", "delay": "soon"}, "rule 1: delay: expected a duration"),
    ({"action": "respond", "drop": "yes"}, "rule 1: drop: must be true or false"),
    ({"action": "respond", "headers": {"X-A": "one\r\nX-B: two"}}, "rule 1: headers: the value of X-A must be one line"),
    ({"action": "headers", "request": {"add": {}}}, "rule 1: request: takes request.set"),
    ({"action": "headers", "response": {"remove": ["bad name"]}}, "rule 1: response.remove: must be a list of header names"),
    ({"action": "headers", "response": {"set": {"Content-Length": "5"}}},
     "rule 1: response.set: Content-Length says how the message is framed"),
    ({"action": "headers", "request": {"set": {"X-A": "1", "transfer-encoding": "chunked"}}},
     "rule 1: request.set: transfer-encoding says how the message is framed"),
    ({"action": "headers", "request": {"remove": ["Connection"]}}, "rule 1: request.remove: Connection says how"),
    ("deny", "rule 1: must be a table with an action"),
]


@pytest.mark.parametrize(("table", "message"), BAD, ids=[m.split(": ", 2)[1] + str(i) for i, (_, m) in enumerate(BAD)])
def test_each_mistake_is_one_line_naming_file_rule_and_key(table, message):
    with pytest.raises(RulesError) as caught:
        parse_rules([table], "rules.toml")
    text = str(caught.value)
    assert text.startswith("rules.toml: " + message), text
    assert "\n" not in text


def test_the_rule_number_counts_from_one_in_file_order(tmp_path: Path):
    path = tmp_path / "edge.toml"
    path.write_text('[[rules]]\naction = "deny"\n\n[[rules]]\naction = "respond"\nmatch = "path:/a & (method:GET"\n')
    with pytest.raises(RulesError) as caught:
        load_rules_file(path)
    assert str(caught.value).startswith(f"{path}: rule 2: match: column ")


def test_rules_file_problems(tmp_path: Path):
    with pytest.raises(RulesError, match="cannot read the rules file"):
        load_rules_file(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[rules]\n")
    with pytest.raises(RulesError, match="not a valid TOML file"):
        load_rules_file(bad)
    other = tmp_path / "other.toml"
    other.write_text('[tunnel]\nx = 1\n')
    with pytest.raises(RulesError, match="unknown key 'tunnel'; a rules file holds"):
        load_rules_file(other)
    relay = tmp_path / "relay.toml"
    relay.write_text('[[rules]]\naction = "forward"\ntarget = 8001\n')
    with pytest.raises(RulesError, match="rule 1: action: a relay's own rules cannot forward"):
        load_rules_file(relay, relay=True)


def test_users_file_relative_to_the_rules_file(tmp_path: Path):
    (tmp_path / "users").write_text("# team\nadmin:s3cret\n")
    path = tmp_path / "edge.toml"
    path.write_text('[[rules]]\naction = "basic-auth"\nusers_file = "users"\n')
    (rule,) = load_rules_file(path)
    assert [c.user for c in rule.users] == ["admin"]


def test_wire_form_round_trips_without_local_targets():
    rules = parse_rules(
        [
            {"action": "basic-auth", "users": ["a:b"], "match": "path:/admin"},
            {"action": "allow-ip", "ips": ["10.0.0.0/8", "::1"]},
            {"action": "rate-limit", "rate": "20/s"},
            {"action": "forward", "target": "8001", "match": "path:/api"},
            {"action": "respond", "status": 500, "count": 3, "delay": "250ms"},
            {"action": "headers", "response": {"set": {"X-A": "1"}, "remove": ["Server"]}},
        ],
        "t",
    )
    wire = rules_to_wire(rules)
    assert "target" not in wire[3]
    back = rules_from_wire(wire)
    assert [(r.action, r.match) for r in back] == [(r.action, r.match) for r in rules]
    assert back[4].delay == 0.25 and back[4].count == 3 and back[2].burst == 20


def test_order_first_answer_wins_and_edits_add_up():
    digest = hashlib.sha256(b"pw").hexdigest()
    engine = Engine(parse_rules([
        {"action": "headers", "request": {"set": {"X-Env": "dev"}}},
        {"action": "basic-auth", "users": [f"u:sha256:{digest}"], "match": "path:/admin"},
        {"action": "respond", "status": 418, "match": "path:/tea"},
        {"action": "deny"},
    ], "t"))
    d = decide([engine], view("/tea"), 0)
    assert d.answer is not None and d.answer.status == 418 and d.rule == ("tunnel", 3, "respond")
    assert d.request_set == [(b"X-Env", b"dev")]
    d = decide([engine], view("/admin"), 0)
    assert d.answer is not None and d.answer.status == 401
    ok = [(b"Authorization", b"Basic dTpwdw==")]  # u:pw
    d = decide([engine], view("/admin", headers=ok), 0)
    assert d.answer is not None and d.rule == ("tunnel", 4, "deny")
    assert b"authorization" in d.request_remove


def test_rate_limit_refills_and_says_how_long_to_wait():
    engine = Engine(parse_rules([{"action": "rate-limit", "rate": "2/s"}], "t"))
    answers = [decide([engine], view(), 100.0).answer for _ in range(3)]
    assert [a is None for a in answers] == [True, True, False]
    assert dict(answers[2].headers)[b"retry-after"] == b"1"
    assert decide([engine], view(), 100.5).answer is None  # a token came back
    # IPv6 clients count by their /64.
    assert decide([engine], view(ip="2001:db8::1"), 0).answer is None
    assert decide([engine], view(ip="2001:db8::2"), 0).answer is None
    assert decide([engine], view(ip="2001:db8::3"), 0).answer is not None


def test_buckets_stay_bounded():
    engine = Engine(parse_rules([{"action": "rate-limit", "rate": "1/h"}], "t"), max_buckets=100)
    for n in range(5000):
        decide([engine], view(ip=f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"), 0)
    assert engine.buckets(1) == 100


def test_basic_auth_takes_clear_sha256_and_bcrypt_passwords_and_refuses_the_wrong_one():
    bcrypt = pytest.importorskip("bcrypt")  # in the test extras: the skip is for a bare install only
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    users = ["plain:s3cret", f"hashed:sha256:{hashlib.sha256(b's3cret').hexdigest()}", f"crypt:{hashed}"]
    engine = Engine(parse_rules([{"action": "basic-auth", "users": users}], "t"))
    for user in ("plain", "hashed", "crypt"):
        good = [(b"Authorization", b"Basic " + base64.b64encode(f"{user}:s3cret".encode()))]
        bad = [(b"Authorization", b"Basic " + base64.b64encode(f"{user}:wrong".encode()))]
        assert decide([engine], view("/", headers=good), 0).answer is None, user
        refused = decide([engine], view("/", headers=bad), 0).answer
        assert refused is not None and refused.status == 401, user


def _auth(match: str, *users: str) -> dict[str, object]:
    return {"action": "basic-auth", "users": list(users)} | ({"match": match} if match else {})


@pytest.mark.parametrize(
    ("tables", "refused"),
    [
        # one asks every request, the other /admin: /admin can pass only one of them
        ([_auth("", "alice:a"), _auth("path:/admin", "bob:b")], "rule 2: users: no user in common with rule 1, "
         "and rule 1 asks every request for a password"),
        ([_auth("path:/admin", "bob:b"), _auth("", "alice:a")], "rule 2: users: no user in common with rule 1, "
         "and rule 2 asks every request for a password"),
        ([_auth("path:/admin", "bob:b"), _auth(" path:/admin", "carol:c")], "both ask the requests of 'path:/admin'"),
        # the same name with another password is no user in common
        ([_auth("", "alice:a"), _auth("", "alice:other")], "no user in common with rule 1"),
        # a user who passes both (in clear, or in clear against its hash), or matches that differ: kept
        ([_auth("", "alice:a", "bob:b"), _auth("path:/admin", "bob:b")], None),
        ([_auth("", "bob:b"), _auth("path:/admin", "bob:sha256:" + hashlib.sha256(b"b").hexdigest())], None),
        ([_auth("path:/admin", "alice:a"), _auth("path:/billing", "bob:b")], None),
        # two hashes of different kinds cannot be told apart: not refused
        ([_auth("", "bob:sha256:" + hashlib.sha256(b"b").hexdigest()), _auth("", "bob:$2b$04$arXfXhkljTeY9jOZv4juA.jn.emkDPQ/CGKyKMLh4w10fQyUAgl2u")],
         None),
        # other actions between them change nothing
        ([_auth("", "alice:a"), {"action": "deny", "match": "path:/x"}, _auth("", "bob:b")], "rule 3: users"),
    ],
)
def test_two_password_rules_no_request_could_pass_are_refused_naming_both(tables, refused, tmp_path: Path):
    rules = parse_rules(tables, "edge.toml")
    if refused is None:
        assert renumbered(rules) == rules
        return
    with pytest.raises(RulesError) as caught:
        renumbered(rules)
    assert refused in str(caught.value) and "always get 401" in str(caught.value)
    # the same in one rules file: named by the file
    import tomli_w

    path = tmp_path / "edge.toml"
    path.write_text(tomli_w.dumps({"rules": tables}))
    with pytest.raises(RulesError) as caught:
        load_rules_file(path)
    assert str(caught.value).startswith(f"{path}: rule ") and refused in str(caught.value)


def test_listed_rules_hide_passwords_and_the_values_of_added_headers_and_a_private_file_keeps_them(tmp_path: Path):
    # The value of a header a rule adds (``--request-header-add "Authorization: Bearer ..."``) was
    # listed in clear (``config show``, ``GET /api/tunnels/NAME/rules``), beside masked passwords.
    import tomli_w

    from devtunnel.rules import rules_to_tables, shorthand_rules

    token = "Bearer sk_live_0123456789abcdef"
    rules = renumbered(shorthand_rules(["alice:s3cret"], header_edits=(
        [f"Authorization: {token}"], ["Cookie"], ["X-Frame-Options: DENY"], ["Server"])))
    listed = rules_to_tables(rules)
    assert listed == [
        {"action": "basic-auth", "users": ["alice:********"], "realm": "devtunnel", "forward_auth": False},
        {"action": "headers", "request": {"set": {"Authorization": "********"}, "remove": ["cookie"]},
         "response": {"set": {"X-Frame-Options": "********"}, "remove": ["server"]}},
    ]
    assert token not in repr(rules) and "s3cret" not in repr(rules)
    # What the relay is sent, and the private rules file, keep every value: the rule still works.
    assert rules_to_wire(rules)[1]["request"] == {"set": {"Authorization": token}, "remove": ["cookie"]}
    path = tmp_path / "rules.toml"
    path.write_text(tomli_w.dumps({"rules": rules_to_tables(rules, mask=False)}))
    again = load_rules_file(path)
    assert again[1].request_set == (("Authorization", token),) and again[0].users[0].accepts(b"s3cret")


@pytest.mark.parametrize("table, refused", [
    ({"action": "headers", "request": {"set": {"Authorization": "********"}}},
     "the value of Authorization is ********, what a listing shows in place of the value: give the value"),
    ({"action": "headers", "response": {"set": {"X-Key": "********"}}}, "the value of X-Key is ********"),
    ({"action": "basic-auth", "users": ["alice:********"]},
     "user 'alice': ******** is what a listing shows in place of the password: give the password"),
])
def test_a_listed_rule_written_back_with_its_hidden_values_is_refused(table, refused, tmp_path: Path):
    # A script that GETs the rules and POSTs one back (or config show pasted into devtunnel.toml)
    # would have the service sent eight stars for its token, or a password of eight stars.
    import tomli_w

    path = tmp_path / "rules.toml"
    path.write_text(tomli_w.dumps({"rules": [table]}))
    with pytest.raises(RulesError) as caught:
        load_rules_file(path)
    assert refused in str(caught.value)
