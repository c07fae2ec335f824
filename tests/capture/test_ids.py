"""Exchange ids: ULIDs that sort by creation time and never repeat."""

from __future__ import annotations

import os
import random
import subprocess
import sys

import pytest

from devtunnel.values import exchange_ids
from devtunnel.capture.model import new_id

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _decode(ulid: str) -> int:
    value = 0
    for ch in ulid:
        value = value * 32 + _CROCKFORD.index(ch)
    return value


def test_the_time_part_is_the_ulid_spec_example_and_ids_round_trip() -> None:
    # The ULID specification's example: 1469918176385 ms is written 01ARYZ6S41. In a fresh
    # process: ids are monotonic per process, so one made after others cannot go back in time.
    code = "from devtunnel.capture.model import new_id\nprint(new_id(1469918176.385))"
    ulid = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True).stdout.strip()
    assert len(ulid) == 26 and set(ulid) <= set(_CROCKFORD)
    assert ulid[:10] == "01ARYZ6S41"
    assert _decode(ulid) >> 80 == 1469918176385


class _FixedBits(random.Random):
    """Hands out the given numbers (a ``random.Random``: compiled, ``new_id`` takes nothing else)."""

    def __init__(self, values: list[int]) -> None:
        super().__init__()
        self.values = values

    def getrandbits(self, k: int) -> int:
        return self.values.pop(0) & ((1 << k) - 1)


@pytest.mark.parametrize("bits", [0, 1, (1 << 79) - 1, 0x5A5A_5A5A_5A5A_5A5A_5A5A >> 1, 0x1234_5678_9ABC_DEF0_1357])
def test_every_bit_of_the_time_and_the_random_part_is_written(monkeypatch: pytest.MonkeyPatch, bits: int) -> None:
    monkeypatch.setattr(exchange_ids, "_last_id", (0, 0))
    monkeypatch.setattr(exchange_ids, "_rng", _FixedBits([bits, (1 << 65) - 1]))
    ms = 0xFFFF_FFFF_FFFE  # the largest 48-bit time but one: every time digit is used
    first = new_id(ms / 1000 + 0.0001)
    assert _decode(first) == ms << 80 | bits
    second = new_id(ms / 1000 + 0.0001)  # the same millisecond: the step above the 65 low bits
    rand = ((bits >> 65) + 1) << 65 | ((1 << 65) - 1)
    assert _decode(second) == ms << 80 | rand


def test_ids_are_unique_and_monotonic_within_a_millisecond_and_across_a_clock_step_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exchange_ids, "_last_id", (0, 0))  # restored after: later ids go back to the real clock
    ids = [new_id(2_000_000_000.0) for _ in range(1000)] + [new_id(1_999_999_999.0)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert {ulid[:10] for ulid in ids} == {ids[0][:10]}  # all in one millisecond
    # Each steps the first 3 characters of the random part: short ids of 13 characters stay unique.
    assert [_decode(b) >> 65 for b in ids[1:]] == [(_decode(a) >> 65) + 1 for a in ids[:-1]]


def test_more_ids_than_one_millisecond_holds_go_on_in_the_next_one_still_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exchange_ids, "_last_id", (0, 0))
    ids = [new_id(2_000_000_000.0) for _ in range(40_000)]  # at least 2**14 fit in one millisecond
    assert len(set(ids)) == len(ids) and ids == sorted(ids)
    assert len({ulid[:13] for ulid in ids}) == len(ids)
    assert 2 <= len({ulid[:10] for ulid in ids}) <= 3


def test_a_forked_child_draws_other_random_parts_than_its_parent() -> None:
    code = (
        "import os\n"
        "from devtunnel.capture.model import new_id\n"
        "new_id()\n"
        "r, w = os.pipe()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.write(w, new_id(3e9).encode()); os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "print(os.read(r, 26).decode(), new_id(3e9))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ), check=True).stdout.split()
    child, parent = out
    assert child[:10] == parent[:10]  # the same millisecond
    assert child[10:] != parent[10:]
