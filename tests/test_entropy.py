"""Random tokens, and the pool the compiled twin draws them (and the codec's mask keys) from."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from types import ModuleType

import pytest

from proxy.limits import ENTROPY_POOL_BYTES
from tests.conftest import load_twin


@pytest.fixture(params=["cython", "python"])
def entropy(request: pytest.FixtureRequest) -> ModuleType:
    return load_twin("_entropy", "_pyentropy", request.param)


def _in_child(draw: Callable[[], bytes]) -> bytes:
    """What ``draw`` returns in a forked child."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, draw())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as pipe:
        return pipe.read()


@pytest.mark.parametrize("size", [11, 16, 45])
def test_tokens_are_base64_of_that_many_fresh_bytes(entropy: ModuleType, size: int) -> None:
    count = 3 * ENTROPY_POOL_BYTES // size  # across several refills of the compiled pool
    tokens = {entropy.token(size) for _ in range(count)}
    assert len(tokens) == count
    assert all(len(base64.b64decode(token, validate=True)) == size for token in tokens)


def test_a_token_longer_than_45_bytes_is_refused(entropy: ModuleType) -> None:
    with pytest.raises(ValueError, match="45"):
        entropy.token(46)


def test_a_forked_child_does_not_repeat_its_parent_s_tokens(entropy: ModuleType) -> None:
    entropy.token(16)  # the parent's pool is filled
    child = _in_child(lambda: "".join(entropy.token(16) for _ in range(4)).encode())
    parent = "".join(entropy.token(16) for _ in range(4)).encode()
    assert len(child) == len(parent) == 96 and child != parent


def test_a_forked_child_masks_with_other_keys_than_its_parent() -> None:
    """The compiled codec draws its mask keys from the same pool."""
    codec = load_twin("_codec", "_pycodec", "cython")
    encoder = codec.FrameEncoder(client_side=True)
    encoder.message(0x1, b"x")  # the parent's pool is filled

    def keys() -> bytes:
        return b"".join(encoder.message(0x1, b"x")[2:6] for _ in range(8))

    child = _in_child(keys)
    assert len(child) == 32 and child != keys()
