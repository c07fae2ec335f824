"""The agent socket's frame masks: random, 4 bytes each, fresh in a forked child."""

from __future__ import annotations

import os

import websockets.frames

from devtunnel.agent.socket import _MaskBytes


def test_websockets_takes_its_masks_from_the_pool() -> None:
    assert isinstance(websockets.frames.secrets, _MaskBytes)
    frame = websockets.frames.Frame(websockets.frames.Opcode.BINARY, b"payload")
    wire = frame.serialize(mask=True, extensions=[])
    mask, masked = wire[2:6], wire[6:]
    assert bytes(b ^ mask[i % 4] for i, b in enumerate(masked)) == b"payload"


def test_masks_are_four_bytes_and_do_not_repeat_across_refills() -> None:
    pool = _MaskBytes()
    masks = [pool.token_bytes(4) for _ in range(5000)]  # almost five refills of 4 KiB
    assert {len(m) for m in masks} == {4}
    assert len(set(masks)) > 4990  # 2**32 values: a repeat or two is chance, a cycle is a bug
    assert len(pool.token_bytes(10000)) == 10000  # a request larger than the pool


def test_a_forked_child_does_not_reuse_the_parents_bytes() -> None:
    pool = _MaskBytes()
    pool.token_bytes(4)  # the pool is filled now, and a child would copy it
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: send its next 64 bytes and leave at once
        os.write(write, pool.token_bytes(64))
        os._exit(0)
    os.close(write)
    try:
        child = b""
        while len(child) < 64:
            chunk = os.read(read, 64 - len(child))
            assert chunk, "the child exited without writing"
            child += chunk
    finally:
        os.close(read)
        os.waitpid(pid, 0)
    assert child != pool.token_bytes(64)
