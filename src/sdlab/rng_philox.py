"""A1111's "NV" noise: standard normals that imitate torch's CUDA ``randn`` on NVIDIA GPUs, on any device.

Philox-4x32 with 10 rounds over the counter ``(offset, 0, i, 0)`` for element i of a draw and the key
``(seed mod 2^32, seed >> 32)``; one normal per counter from its first two output words by the sine half of
Box-Muller, evaluated in float64 and rounded to float32 (A1111 ``modules/rng_philox.py``'s constants
included). Vectorised with numpy uint64 arithmetic: no per-element Python loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sdlab.errors import InvalidRequestError

_MASK32 = 0xFFFFFFFF
_M0, _M1 = 0xD2511F53, 0xCD9E8D57  # round multipliers
_W0, _W1 = 0x9E3779B9, 0xBB67AE85  # key increments (Weyl sequence)
_ROUNDS = 10
# float32 approximations of 2^-32 and 2^-32 * 2pi, used as doubles (what A1111's numpy code does).
_U_SCALE = float(np.float32(2.3283064e-10))
_V_SCALE = float(np.float32(2.3283064e-10 * 6.2831855))
MAX_SEED = 2**64 - 1
MAX_ELEMENTS = 2**32


def check_seed(seed: int) -> int:
    """``seed`` as an int in [0, 2^64 - 1]; raises InvalidRequestError otherwise."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) <= MAX_SEED:
        raise InvalidRequestError(f"a noise seed must be an integer in [0, 2^64 - 1], got {seed!r}")
    return int(seed)


def philox_4x32(counter: tuple[np.ndarray, ...], key: tuple[int, int]) -> tuple[np.ndarray, ...]:
    """Philox-4x32-10 of uint64 arrays holding 32-bit counter words ``(c0, c1, c2, c3)``; returns 4 words."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    shift, mask = np.uint64(32), np.uint64(_MASK32)
    for round_index in range(_ROUNDS):
        p0 = c0 * np.uint64(_M0)  # < 2^64: exact in uint64
        p1 = c2 * np.uint64(_M1)
        c0, c1 = (p1 >> shift) ^ c1 ^ np.uint64(k0), p1 & mask
        c2, c3 = (p0 >> shift) ^ c3 ^ np.uint64(k1), p0 & mask
        if round_index < _ROUNDS - 1:
            k0, k1 = (k0 + _W0) & _MASK32, (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


def box_muller_sin(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """One standard normal per pair of uint32 words: ``sqrt(-2 ln u) * sin(v)`` in float64, as float32."""
    u = x.astype(np.float64) * _U_SCALE + _U_SCALE / 2
    v = y.astype(np.float64) * _V_SCALE + _V_SCALE / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


def philox_randn(seed: int, offset: int, n: int) -> np.ndarray:
    """``n`` float32 normals of draw number ``offset`` (0-based) of a generator seeded with ``seed``."""
    seed = check_seed(seed)
    if not 0 <= n <= MAX_ELEMENTS:
        raise InvalidRequestError(f"one NV noise draw holds at most 2^32 numbers, asked for {n}")
    zeros = np.zeros(n, dtype=np.uint64)
    counter = (zeros + np.uint64(offset & _MASK32), zeros, np.arange(n, dtype=np.uint64), zeros)
    c0, c1, _, _ = philox_4x32(counter, (seed & _MASK32, seed >> 32))
    return box_muller_sin(c0, c1)


class PhiloxGenerator:
    """A1111's NV generator: each :meth:`randn` call is one draw (the offset then advances by 1).

    The noise depends only on the seed, the call number and the flat element index, never on the shape.
    Results are created on the CPU and moved to ``device``.
    """

    def __init__(self, seed: int, device: torch.device | str = "cpu") -> None:
        self.seed = check_seed(seed)
        self.offset = 0
        self.device = torch.device(device)

    def randn(self, shape: Sequence[int]) -> Tensor:
        """Standard normal float32 tensor of ``shape``."""
        shape = tuple(int(s) for s in shape)
        values = philox_randn(self.seed, self.offset, int(np.prod(shape, dtype=np.int64)))
        self.offset += 1
        return torch.from_numpy(values.reshape(shape)).to(self.device)
