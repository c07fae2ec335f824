"""The events with an ``__init__`` of their own behave as the dataclass-made one would."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtunnel import native
from devtunnel.protocol.events import DataReceived, RequestReceived, ResponseReceived, WindowUpdated

OWN_INIT = [RequestReceived, ResponseReceived, DataReceived, WindowUpdated]


def _reference(cls: type) -> type:
    """The same fields in a frozen slotted dataclass that makes its own ``__init__``."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default)) if f.default is not dataclasses.MISSING
              else (f.name, f.type) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


@pytest.mark.parametrize("cls", OWN_INIT)
def test_signature_is_the_dataclass_one(cls: type) -> None:
    """The parameters of the class's call: names, kinds, defaults, and annotations where the class
    gives them. Compiled with mypyc (devtunnel/native.py), ``__init__`` is a slot wrapper whose
    own signature is ``(self, /, *args, **kwargs)``; the class's signature comes from the text
    signature mypyc writes, which has the parameters without their annotations (the pure run
    holds the annotations)."""
    own, reference = inspect.signature(cls).parameters, inspect.signature(_reference(cls)).parameters
    assert [(p.name, p.kind, p.default) for p in own.values()] == [
        (p.name, p.kind, p.default) for p in reference.values()
    ]
    annotated = {name: p.annotation for name, p in own.items() if p.annotation is not inspect.Parameter.empty}
    if not annotated:
        assert "devtunnel.protocol.events" in native.compiled_modules()
    else:
        assert annotated == {name: p.annotation for name, p in reference.items()}


FIELDS = st.lists(st.tuples(st.binary(max_size=4), st.binary(max_size=4)), max_size=3).map(tuple)
FIELD_VALUES = {
    "int": st.integers(),
    "bytes": st.binary(max_size=8),
    "bool": st.booleans(),
    "str": st.text(max_size=4),
    "Fields": FIELDS,
    "tuple": FIELDS,
}
"""A value of each field's type: compiled, ``__init__`` refuses others (TypeError). Pure, a
field's type is its annotation's text; compiled, the class (``Fields`` is ``tuple`` then)."""


def values(field: dataclasses.Field[object]) -> st.SearchStrategy[object]:
    kind = field.type
    return FIELD_VALUES[kind if isinstance(kind, str) else kind.__name__]  # type: ignore[union-attr]


@pytest.mark.parametrize("cls", OWN_INIT)
@settings(deadline=None)  # nothing here is timed; on the shared machine one example can take 200 ms
@given(data=st.data())
def test_fields_set_as_given_and_frozen(cls: type, data: st.DataObject) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    args = [data.draw(values(f)) for f in required]
    optional = fields[len(required):]
    extra = [data.draw(values(f)) for f in optional[:data.draw(st.integers(0, len(optional)))]]
    made, reference = cls(*args, *extra), _reference(cls)(*args, *extra)
    assert dataclasses.astuple(made) == dataclasses.astuple(reference)  # type: ignore[call-overload]
    assert made == cls(*args, *extra)
    assert hash(made) == hash(cls(*args, *extra))
    assert dataclasses.replace(made) == made
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.stream_id = 1  # type: ignore[attr-defined]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del made.stream_id  # type: ignore[attr-defined]
    keywords = {f.name: getattr(made, f.name) for f in fields}
    assert cls(**keywords) == made
