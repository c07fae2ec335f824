"""The events with an ``__init__`` of their own behave as the dataclass-made one would."""

from __future__ import annotations

import dataclasses
import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devtunnel.protocol.events import DataReceived, RequestReceived, ResponseReceived, WindowUpdated

OWN_INIT = [RequestReceived, ResponseReceived, DataReceived, WindowUpdated]


def _reference(cls: type) -> type:
    """The same fields in a frozen slotted dataclass that makes its own ``__init__``."""
    fields = [(f.name, f.type, dataclasses.field(default=f.default)) if f.default is not dataclasses.MISSING
              else (f.name, f.type) for f in dataclasses.fields(cls)]
    return dataclasses.make_dataclass(cls.__name__, fields, frozen=True, slots=True)


@pytest.mark.parametrize("cls", OWN_INIT)
def test_signature_is_the_dataclass_one(cls: type) -> None:
    assert inspect.signature(cls.__init__).parameters == inspect.signature(_reference(cls).__init__).parameters


values = st.one_of(st.integers(), st.binary(max_size=8), st.booleans(), st.text(max_size=4))


@pytest.mark.parametrize("cls", OWN_INIT)
@given(data=st.data())
def test_fields_set_as_given_and_frozen(cls: type, data: st.DataObject) -> None:
    fields = dataclasses.fields(cls)
    required = [f for f in fields if f.default is dataclasses.MISSING]
    args = [data.draw(values) for _ in required]
    extra = data.draw(st.lists(values, max_size=len(fields) - len(required)))
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
