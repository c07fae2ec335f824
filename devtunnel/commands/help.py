"""``devtunnel help [COMMAND | TOPIC]``: a command's help, or a reference that ships with the package.

``devtunnel help filters`` prints the filter language from the filter classes themselves
(``FILTER_HELP``), so it is true for the installed version and needs no docs folder.
"""

from __future__ import annotations

import argparse
import shutil
import textwrap

from devtunnel.commands.output import err
from devtunnel.exit_codes import EXIT_OK, EXIT_USAGE
from devtunnel.values.terminal import quoted

__all__ = ["run", "filters_reference", "TOPICS"]

_FILTERS_INTRO = """\
The filter language picks exchanges out of the capture store: the inspector's filter bar
(/), devtunnel requests|export|replay --filter EXPR, and the agent API's filter= parameter.

examples:
  method:POST path:/webhooks status:>=400
  header:stripe-signature -status:2xx dur:>500ms
  ~m POST & ~u /hooks & !~c 200

The empty filter matches everything. Writing terms side by side means "and"; "not" binds
tightest, then "and", then "or". A filter that starts with - must be joined to its flag on
the command line: --filter=-status:2xx (or write: not status:2xx).
"""


def filters_reference(width: int | None = None) -> str:
    """The filter language reference: an introduction and one entry per filter, from ``FILTER_HELP``."""
    from devtunnel.capture.filters import FILTER_HELP

    if width is None:
        width = min(100, shutil.get_terminal_size((100, 24)).columns)
    syntax_width = min(34, max(len(syntax) for syntax, _ in FILTER_HELP))
    lines = [_FILTERS_INTRO, "filters:"]
    for syntax, text in FILTER_HELP:
        lead = f"  {syntax:<{syntax_width}}  "
        if len(syntax) > syntax_width:  # a long syntax gets its own line
            lines.append(f"  {syntax}")
            lead = " " * (syntax_width + 4)
        wrapped = textwrap.wrap(text, max(30, width - len(lead)), break_on_hyphens=False) or [""]
        lines.append(lead + wrapped[0])
        lines += [" " * len(lead) + more for more in wrapped[1:]]
    return "\n".join(lines) + "\n"


TOPICS = {"filters": filters_reference}
"""Topic name -> function returning its text."""


def run(args: argparse.Namespace) -> int:
    """Print the help asked for; an unknown name is bad usage."""
    parser: argparse.ArgumentParser = args.parser
    topic = args.topic
    if topic is None:
        parser.print_help()
        return EXIT_OK
    if topic in TOPICS:
        print(TOPICS[topic](), end="")
        return EXIT_OK
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    if topic in commands:
        commands[topic].print_help()
        return EXIT_OK
    names = ", ".join([*TOPICS, *(c for c in commands if c != "help")])
    err(f"no help on {quoted(topic)}: ask for one of {names}")
    return EXIT_USAGE
