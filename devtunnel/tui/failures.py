"""What the inspector does with a worker that failed unexpectedly.

The inspector's workers catch the errors they expect (``DevtunnelError`` and the like) and say
them where they belong. Anything else used to end in a worker nobody watched: the action did
nothing, silently. ``tell_failure`` says it instead, as an error notification naming the
exception, and the inspector goes on (the app is not taken down for one failed action).
"""

from __future__ import annotations

from textual.app import App
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from devtunnel.tui.render import escape_control

__all__ = ["tell_failure"]


def tell_failure(node: App[object] | Widget, event: Worker.StateChanged) -> None:
    """Notify about ``event``'s worker if it ended with an exception (call from
    ``on_worker_state_changed`` of the node that runs the worker)."""
    if event.state is not WorkerState.ERROR:
        return
    error = event.worker.error
    what = (event.worker.name or event.worker.group).strip("_").replace("_", " ")
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    node.notify(escape_control(f"{text} (in {what})"), title="Unexpected error", severity="error", timeout=10,
                markup=False)
