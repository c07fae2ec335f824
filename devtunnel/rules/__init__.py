"""Rules at the edge: what the relay does with a request before it crosses a tunnel.

Pure: ``model`` turns ``[[tunnels.NAME.rules]]`` tables (or a rules file) into typed rules,
``engine`` decides, for one request, which rule answers it or how it goes on, and ``share`` bounds
what one tunnel's match regexes take of the relay's time. The relay runs the engine
(``relay/rules.py``); the agent only parses, sends and records. docs/policy.md.
"""

from devtunnel.rules.engine import Answer, Decision, Engine, RequestView, decide
from devtunnel.rules.model import (
    ACTIONS,
    PATH_READING,
    WIRE_VERSION,
    Rule,
    RulesError,
    clear_secrets,
    judges_client_address,
    judges_path,
    load_rules_file,
    note_rule_secrets,
    parse_rules,
    renumbered,
    rules_flag,
    rules_from_wire,
    rules_to_tables,
    rules_to_wire,
    shorthand_rules,
)
from devtunnel.rules.ngrok import header_edits_table, ngrok_header_rules, ngrok_protection_rules

__all__ = [
    "ACTIONS",
    "PATH_READING",
    "WIRE_VERSION",
    "Answer",
    "Decision",
    "Engine",
    "RequestView",
    "Rule",
    "RulesError",
    "clear_secrets",
    "decide",
    "judges_client_address",
    "judges_path",
    "header_edits_table",
    "load_rules_file",
    "ngrok_header_rules",
    "ngrok_protection_rules",
    "note_rule_secrets",
    "parse_rules",
    "renumbered",
    "rules_flag",
    "rules_from_wire",
    "rules_to_tables",
    "rules_to_wire",
    "shorthand_rules",
]
