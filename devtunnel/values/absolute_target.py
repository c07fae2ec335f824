"""A request target in absolute-form read as a server must: its authority is the request's Host.

``GET http://evil.example/api HTTP/1.1`` with ``Host: localhost`` names ``evil.example``
(RFC 9112 3.2.2: a server ignores the Host field then, and uses the target's authority). The
embedded relay and the agent API read such a request the one way, here: the authority takes the
place of every Host field, and the target becomes origin-form, so each judges the Host it
allows (the relay's 421, the API's 403) on the name the client meant, not on the field it added.
"""

from __future__ import annotations

from devtunnel.values.request_head import absolute_form

__all__ = ["authority_as_host"]

Field = tuple[bytes, bytes]


def authority_as_host(
    target: bytes, method: bytes, *, lowered: list[Field], raw: list[Field] | None = None
) -> bytes | str | None:
    """Read ``target`` in absolute-form (``http://host:port/path?q``): its authority becomes the
    value of every Host field (or one is added), and its origin-form target (``/path?q``) is
    returned.

    Args:
        target: the request target as received.
        method: the request method (an ``OPTIONS`` with neither path nor query reads as ``*``).
        lowered: the header fields, names lowercased (an ASGI scope's), changed in place.
        raw: the same fields with their names as received, in the same order, changed in place
            too when given.

    Returns:
        The origin-form target; a sentence saying why a target in absolute-form cannot be read
        (user info, no host, a byte no host holds: ``request_head.absolute_form``); None for a
        target that is not in absolute-form, and then the fields are left as they are.
    """
    read = absolute_form(target, method)
    if read is None or isinstance(read, str):
        return read
    authority, origin = read
    found = False
    for i, (name, _) in enumerate(lowered):
        if name == b"host":
            found = True
            lowered[i] = (name, authority)
            if raw is not None:
                raw[i] = (raw[i][0], authority)
    if not found:
        lowered.append((b"host", authority))
        if raw is not None:
            raw.append((b"Host", authority))
    return origin
